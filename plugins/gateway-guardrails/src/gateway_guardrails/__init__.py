"""gateway-guardrails: interceptors that guard every call through aio-mcp-gateway.

- `pii` redacts e-mail addresses, phone numbers, card numbers (Luhn-checked) and API keys
  and tokens from arguments and results; `GUARDRAILS_PII` chooses which kinds.
- `rules` applies per-tool argument rules (denied patterns, a size limit) and result caps
  from `GUARDRAILS_RULES`.

Enable them with `INTERCEPTORS=rules,pii` (or on one virtual server with its
`interceptors`). `rules` runs first (priority 10), so its patterns see the arguments as
the caller sent them and its caps the result as the caller will get it; `pii` (priority
20) runs inside it. Everything comes from `gateway.plugin`, as for any plugin.
"""

from __future__ import annotations

from typing import Any

from gateway.plugin import (
    InterceptorSpec,
    Registrar,
    Settings,
    SettingsError,
    SettingSpec,
    hookimpl,
)

from gateway_guardrails.pii import PiiInterceptor
from gateway_guardrails.redaction import KINDS, Redactor
from gateway_guardrails.rules import Rules, RulesInterceptor, parse_rules

__all__ = [
    "PII_KINDS",
    "RULES",
    "PiiInterceptor",
    "RulesInterceptor",
    "gateway_register_interceptors",
    "gateway_register_settings",
]


def _kinds(name: str, raw: str) -> tuple[str, ...]:
    kinds = tuple(k.strip().lower() for k in raw.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SettingsError(f"{name}={raw!r}: unknown kind(s) {', '.join(unknown)}; use {KINDS}")
    return kinds


PII_KINDS: SettingSpec[tuple[str, ...]] = SettingSpec(
    "GUARDRAILS_PII",
    KINDS,
    _kinds,
    "what the pii interceptor redacts: any of secret,email,card,phone",
)
RULES: SettingSpec[Rules] = SettingSpec(
    "GUARDRAILS_RULES",
    Rules(),
    parse_rules,
    "per-name rules for the rules interceptor: JSON, or a JSON file's path",
)


@hookimpl
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    register.add(PII_KINDS)
    register.add(RULES)


def create_pii(settings: Settings) -> PiiInterceptor:
    kinds: tuple[str, ...] = settings.plugin_value(PII_KINDS)
    return PiiInterceptor(Redactor(kinds))


def create_rules(settings: Settings) -> RulesInterceptor:
    return RulesInterceptor(settings.plugin_value(RULES))


@hookimpl
def gateway_register_interceptors(register: Registrar[InterceptorSpec]) -> None:
    register.add(
        InterceptorSpec(
            name="pii",
            factory=create_pii,
            priority=20,
            description="redacts e-mails, phones, cards and secrets in arguments and results",
        )
    )
    register.add(
        InterceptorSpec(
            name="rules",
            factory=create_rules,
            priority=10,
            description="per-tool denied argument patterns, argument and result size limits",
        )
    )
