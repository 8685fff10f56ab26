"""A tool call as an HTTP request, and the response as a `CallToolResult`.

Arguments go where the operation's parameters say: path parameters URL-encoded into the
path (arrays comma-joined, OpenAPI's `simple` style), query parameters in the query string
(arrays repeated or comma-joined as `explode` says, objects as `deepObject` or their
key-value pairs), header parameters as headers, `body` as the JSON request body. A
parameter described by `content` goes as its JSON text.

A JSON response becomes its text plus `structuredContent` (an array or a scalar is put
under `result`, since structured content is an object); an image becomes image content;
other text is text. A status outside 2xx is an `isError` result naming the status and the
start of the body.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from gateway_plugins.openapi.mapping import BODY, Operation, Param

JSON = dict[str, Any]
EXCERPT_CHARS = 500
"""How much of an error response's body its result shows."""


class CallRefused(ValueError):
    """The arguments cannot make a request; the message is the tool's error text."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    """Already encoded."""
    headers: dict[str, str]
    body: bytes | None


def build_request(op: Operation, base_url: str, arguments: Mapping[str, Any]) -> Request:
    missing = [name for name in op.tool.input_schema.get("required", ()) if name not in arguments]
    if missing:
        raise CallRefused(f"missing required argument(s): {', '.join(missing)}")
    path = op.path
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for param in op.params:
        if param.name not in arguments or arguments[param.name] is None:
            continue
        value = arguments[param.name]
        if param.location == "path":
            segment = quote(_simple(param, value), safe="")
            if segment in {"", ".", ".."}:
                # `/users/../admin` is `/admin` to the API or any proxy before it.
                raise CallRefused(f"path argument {param.name!r} must not be empty, '.' or '..'")
            path = path.replace("{" + param.name + "}", segment)
        elif param.location == "query":
            query += _query(param, value)
        else:
            text = _simple(param, value)
            if any(c in text for c in "\r\n\0"):
                raise CallRefused(f"header {param.name!r} must not contain CR, LF or NUL")
            headers[param.name] = text
    body = None
    if op.body_type is not None and BODY in arguments:
        body = orjson.dumps(arguments[BODY])
        headers["Content-Type"] = op.body_type
    url = base_url.rstrip("/") + path
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query, quote_via=quote)
    return Request(op.method.upper(), url, headers, body)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _simple(param: Param, value: Any) -> str:
    if param.as_json:
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return ",".join(_scalar(item) for item in value)
    if isinstance(value, dict):
        if param.explode:
            return ",".join(f"{k}={_scalar(v)}" for k, v in value.items())
        return ",".join(f"{k},{_scalar(v)}" for k, v in value.items())
    return _scalar(value)


def _query(param: Param, value: Any) -> list[tuple[str, str]]:
    if param.as_json:
        return [(param.name, orjson.dumps(value).decode())]
    if isinstance(value, list):
        if param.explode:
            return [(param.name, _scalar(item)) for item in value]
        separator = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(param.style, ",")
        return [(param.name, separator.join(_scalar(item) for item in value))]
    if isinstance(value, dict):
        if param.style == "deepObject":
            return [(f"{param.name}[{k}]", _scalar(v)) for k, v in value.items()]
        if param.explode:
            return [(str(k), _scalar(v)) for k, v in value.items()]
        return [(param.name, ",".join(f"{k},{_scalar(v)}" for k, v in value.items()))]
    return [(param.name, _scalar(value))]


def error_result(text: str) -> JSON:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def result(
    op: Operation, status: int, reason: str, content_type: str, charset: str | None, body: bytes
) -> JSON:
    """The `CallToolResult` of a response: `status`, its media type and its whole body."""
    if not 200 <= status < 300:
        excerpt = _text(body, charset)
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[:EXCERPT_CHARS] + "..."
        said = f": {excerpt}" if excerpt.strip() else ""
        return error_result(f"{op.label} answered HTTP {status} {reason}".rstrip() + said)
    if not body:
        return {"content": [{"type": "text", "text": f"HTTP {status} {reason}".rstrip()}]}
    kind = content_type.lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            structured = data if isinstance(data, dict) else {"result": data}
            return {
                "content": [{"type": "text", "text": _text(body, charset)}],
                "structuredContent": structured,
            }
    if kind.startswith("image/"):
        data64 = base64.b64encode(body).decode("ascii")
        return {"content": [{"type": "image", "data": data64, "mimeType": kind}]}
    if _is_text(kind):
        return {"content": [{"type": "text", "text": _text(body, charset)}]}
    data64 = base64.b64encode(body).decode("ascii")
    blob = {"uri": f"openapi:{op.tool.name}", "mimeType": kind or "application/octet-stream"}
    return {"content": [{"type": "resource", "resource": {**blob, "blob": data64}}]}


def _is_text(kind: str) -> bool:
    return (
        not kind
        or kind.startswith("text/")
        or kind.endswith(("+xml", "/xml", "/yaml", "/x-yaml", "/javascript"))
        or kind == "application/x-www-form-urlencoded"
    )


def _text(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
