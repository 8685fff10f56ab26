"""JSON-RPC as an MCP client sends and reads it: envelopes, decoding replies, turning an
error reply into `UpstreamError` and anything unusable into `BackendError`."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import orjson

from gateway import __version__
from gateway.contracts import JSON, BackendError, UpstreamError
from gateway.tracing import with_trace_meta

SUPPORTED_PROTOCOL_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
CLIENT_INFO: JSON = {"name": "aio-mcp-gateway", "version": __version__}


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def request(request_id: int, method: str, params: JSON | None) -> JSON:
    """A request's envelope; inside a client span, `params._meta` carries its trace context."""
    message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
    params = with_trace_meta(params)
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: JSON | None) -> JSON:
    message: JSON = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def response(request_id: Any, result: JSON) -> JSON:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> JSON:
    error: JSON = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def client_capabilities(protocol_version: str) -> JSON:
    """The client capabilities declared in `initialize`: those the gateway can relay to its
    own clients. Elicitation modes came with 2025-11-25; before it, `{}` meant form mode."""
    elicitation: JSON = {"form": {}, "url": {}} if protocol_version >= "2025-11-25" else {}
    return {"roots": {"listChanged": True}, "sampling": {}, "elicitation": elicitation}


RELATED_REQUEST_KEY = "relatedRequestId"


def related_request(params: JSON) -> tuple[Any, JSON]:
    """The request of ours that a server request names in `_meta.relatedRequestId` (None
    if it names none), and its params without that key, which means nothing to a client."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or RELATED_REQUEST_KEY not in meta:
        return None, params
    rest = {key: value for key, value in meta.items() if key != RELATED_REQUEST_KEY}
    params = {key: value for key, value in params.items() if key != "_meta"}
    if rest:
        params["_meta"] = rest
    return meta[RELATED_REQUEST_KEY], params


_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")


def media_type(value: str) -> str:
    """A response's media type as an error may show it: a well-formed one as it is, anything
    else (the upstream's own text, of any length) not at all."""
    if not value:
        return "no content type"
    return value if _MEDIA_TYPE.fullmatch(value) else "an invalid content type"


def phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status, or ''."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def decode_json(upstream: str, raw: bytes, method: str, content_type: str = "") -> Any:
    """The JSON in a reply; `BackendError` naming its `content_type` when that is not JSON's
    and the body is not JSON either. The body itself is never quoted."""
    if not raw.strip():
        raise BackendError(f"upstream {upstream!r} sent an empty reply to {method}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if content_type and content_type != "application/json":
            raise BackendError(
                f"upstream {upstream!r} answered {method} with {media_type(content_type)}, not JSON"
            ) from None
        raise BackendError(
            f"upstream {upstream!r} sent invalid JSON in reply to {method}"
        ) from None


def json_messages(decoded: Any) -> list[JSON]:
    """The JSON-RPC messages in a decoded body; a pre-2025-06-18 server may batch them."""
    messages = decoded if isinstance(decoded, list) else [decoded]
    return [message for message in messages if isinstance(message, dict)]


def is_response(message: JSON) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


def params_of(message: JSON) -> JSON:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def rpc_result(upstream: str, reply: JSON, method: str) -> JSON:
    """The `result` of a JSON-RPC response; its `error` raises `UpstreamError`."""
    error = reply.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            summary = f"upstream {upstream!r} sent a malformed error for {method}"
            raise BackendError(f"{summary}: {one_line(str(error))}", summary)
        raise UpstreamError(upstream, code, str(error.get("message", "")), error.get("data"))
    result = reply.get("result")
    if not isinstance(result, dict):
        raise BackendError(f"upstream {upstream!r} sent a non-object result for {method}")
    return result


def progress_token(params: JSON | None) -> Any:
    meta = params.get("_meta") if params else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def with_progress_token(params: JSON | None, token: Any) -> JSON:
    """A copy of `params` asking for progress under `token`; the caller's dict is untouched."""
    params = dict(params or {})
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), "progressToken": token}
    return params
