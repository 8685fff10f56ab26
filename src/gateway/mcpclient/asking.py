"""The answers to the requests an upstream sends its client: from the `AskClient` that
stands for the client in question, or, when there is none, the answer that needs nobody.
Which client that is, is the session's business (`session.py`); this module only turns
what it says, or fails to say, into a JSON-RPC response for the upstream."""

from __future__ import annotations

import asyncio

import structlog

from gateway.contracts import JSON, AskClient, ClientRequestError
from gateway.jsonrpc import INTERNAL_ERROR, METHOD_NOT_FOUND
from gateway.mcpclient.wire import error_response, response

log = structlog.get_logger(__name__)


def unanswered(message: JSON, why: str) -> JSON:
    """The response when no client can be asked: `ping` needs none, the rest is refused."""
    method, request_id = message.get("method"), message.get("id")
    if method == "ping":
        return response(request_id, {})
    refusal = f"no client can be asked for {method} {why}"
    return error_response(request_id, METHOD_NOT_FOUND, refusal)


async def answer(
    upstream: str, ask: AskClient, message: JSON, params: JSON, timeout: float | None
) -> JSON:
    """The response to `message` that `ask` gives, within `timeout` if there is one.

    A `ClientRequestError` becomes that error; anything else that goes wrong becomes
    -32603, so the upstream is never left waiting (cancellation alone leaves it unanswered,
    for then the request it belongs to has ended).
    """
    method, request_id = str(message.get("method")), message.get("id")
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            result = await ask(method, params)
    except ClientRequestError as exc:
        return error_response(request_id, exc.code, exc.message, exc.data)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            why = f"{method}: no answer from the client within {timeout:g}s"
            return error_response(request_id, INTERNAL_ERROR, why)
        log.exception("answering an upstream request failed", upstream=upstream, method=method)
        return error_response(request_id, INTERNAL_ERROR, f"{method}: the client failed")
    if not isinstance(result, dict):
        log.warning("a client answered with no result object", upstream=upstream, method=method)
        return error_response(request_id, INTERNAL_ERROR, f"{method}: the client sent no result")
    return response(request_id, result)
