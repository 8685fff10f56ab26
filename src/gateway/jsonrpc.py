"""JSON-RPC 2.0 envelopes: parsing one request and building responses and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RATE_LIMITED = -32029

Id = str | int | None


class RPCError(Exception):
    """An error that becomes a JSON-RPC error object."""

    status: int | None = None
    """The HTTP status to answer with where HTTP carries the error alone; None: the
    transport's usual one."""

    def __init__(self, code: int, message: str, data: Any = None, request_id: Id = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id
        """The id of the request that failed, where it could be read."""

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: dict[str, Any]
    id: Id
    is_notification: bool


@dataclass(frozen=True, slots=True)
class Response:
    """A response a client sends back, to a request the gateway relayed to it."""

    id: Id
    result: Any = None
    error: Any = None
    is_error: bool = False


DEPTH_CEILING = 200
"""The deepest `MAX_JSON_DEPTH` may be: orjson cannot encode values nested past 254, and
a request's params end up inside answers and upstream messages a few levels down."""


def loads(body: bytes, max_depth: int) -> Any:
    """A client's JSON body, decoded; `RPCError` with HTTP status 400 if it is not JSON
    (-32700) or nests arrays and objects deeper than `max_depth` (-32600).

    Only a body with more than `max_depth` brackets can be too deep, so most bodies cost
    two byte counts and no walk."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep(max_depth) from None
        raise _with_status(RPCError(PARSE_ERROR, f"Parse error: {exc}")) from None
    if body.count(b"[") + body.count(b"{") > max_depth and _deeper_than(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _too_deep(max_depth: int) -> RPCError:
    return _with_status(
        RPCError(
            INVALID_REQUEST,
            f"Invalid Request: JSON nested deeper than MAX_JSON_DEPTH ({max_depth})",
        )
    )


def _with_status(error: RPCError, status: int = 400) -> RPCError:
    error.status = status
    return error


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels; iterative, so a deep value
    cannot exhaust the stack."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def parse(body: bytes, max_depth: int) -> Request:
    """Parse one JSON-RPC request; raise `RPCError` (-32700 or -32600) otherwise.

    The id of a request that is invalid beyond its id is kept in `RPCError.request_id`
    so the error response can echo it.
    """
    return parse_value(loads(body, max_depth))


def parse_value(message: Any) -> Request:
    """`parse` for a value already decoded from JSON (one member of a batch, say)."""
    if isinstance(message, list):
        raise RPCError(INVALID_REQUEST, "Invalid Request: batch requests are not supported")
    if not isinstance(message, dict):
        raise RPCError(INVALID_REQUEST, "Invalid Request: expected a JSON object")
    has_id = "id" in message
    request_id = message.get("id")
    if has_id and (isinstance(request_id, bool) or not isinstance(request_id, str | int | None)):
        raise RPCError(INVALID_REQUEST, "Invalid Request: 'id' must be a string, number or null")
    if message.get("jsonrpc") != "2.0":
        raise _invalid(request_id, "'jsonrpc' must be exactly \"2.0\"")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise _invalid(request_id, "'method' must be a non-empty string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _invalid(request_id, "'params' must be an object")
    return Request(method=method, params=params, id=request_id, is_notification=not has_id)


def _invalid(request_id: Id, why: str) -> RPCError:
    return RPCError(INVALID_REQUEST, f"Invalid Request: {why}", request_id=request_id)


def result(request_id: Id, value: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": value})


def error_message(request_id: Id, exc: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_dict()}


def error(request_id: Id, exc: RPCError) -> bytes:
    return orjson.dumps(error_message(request_id, exc))
