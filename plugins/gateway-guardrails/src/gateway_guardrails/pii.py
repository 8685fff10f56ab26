"""The `pii` interceptor: redacts personal data and secrets from the arguments a call
sends upstream and from the result it returns (text content, structured content, resource
contents, prompt messages: every string, recursively)."""

from __future__ import annotations

from typing import Any

from gateway.plugin import After, BaseInterceptor, Before, Call, UseArguments, UseResult

from gateway_guardrails.redaction import Redactor

JSON = dict[str, Any]

RESULT_KEYS_KEPT = frozenset({"type", "mimeType", "uri", "blob", "_meta", "resultType"})
"""What identifies content rather than being it: redacting there would break the result."""


class PiiInterceptor(BaseInterceptor):
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    async def before(self, call: Call) -> Before:
        arguments = self.redactor.value(call.arguments)
        return None if arguments is call.arguments else UseArguments(arguments)

    async def after(self, call: Call, result: JSON) -> After:
        redacted = self.redactor.value(result, RESULT_KEYS_KEPT)
        return None if redacted is result else UseResult(redacted)
