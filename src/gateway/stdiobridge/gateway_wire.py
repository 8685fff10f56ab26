"""What the stdio bridge's gateway client speaks: the MCP Streamable HTTP headers it sends,
the errors it raises (`GatewayError` and its kinds), and how it reads a gateway's answer:
a body up to a bound, and what a refusal's body says.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import orjson

from gateway.mcp.versions import META_VERSION
from gateway.mcpclient.wire import one_line

JSON = dict[str, Any]

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
ACCEPT = "application/json, text/event-stream"
GATEWAY_ERROR = -32000
"""The code of the errors the bridge answers for the gateway when it has none of its own."""
ROUTED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The param a 2026-07-28 request repeats in its `Mcp-Name` header."""


class GatewayError(Exception):
    """The gateway could not be reached, refused a message, or answered with nothing usable.
    `code` is a JSON-RPC error code for the client."""

    def __init__(self, message: str, code: int = GATEWAY_ERROR) -> None:
        super().__init__(message)
        self.code = code


class StreamBroken(GatewayError):
    """The connection ended in the middle of the gateway's answer."""


class SessionGone(GatewayError):
    """The gateway answered 404 to a message sent in a session: it no longer knows it."""

    def __init__(self, session_id: str) -> None:
        super().__init__("the gateway no longer knows the session")
        self.session_id = session_id


def header_value(value: str) -> str:
    """A header value as the 2026-07-28 era sends it: plain ASCII, or `=?base64?...?=`."""
    if value.isascii() and value.isprintable():
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def modern_version(message: JSON) -> str | None:
    """The 2026-07-28-era version a message carries in `params._meta`, if it does."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(META_VERSION) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise GatewayError(f"the gateway sent a reply larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def refusal_detail(body: bytes) -> str:
    """What a refusal's body says: the gateway's `{"error": {"message"}}` or a JSON-RPC error."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return one_line(error["message"])
    return one_line(error) if isinstance(error, str) else ""


def refusal_rpc_error(body: bytes) -> JSON | None:
    """A JSON-RPC error response that the gateway sent as its refusal's body."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("error"), dict):
        return None
    code = decoded["error"].get("code")
    return decoded if isinstance(code, int) and "jsonrpc" in decoded else None
