"""What every client transport does with HTTP before and after dispatch: resolve the
endpoint, read a bounded body, and frame JSON-RPC answers as responses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import jsonrpc
from gateway.access import principal
from gateway.jsonrpc import Id, RPCError
from gateway.keys import DISPATCHER, EVENTS, HUB, REGISTRY, ROLES, SETTINGS
from gateway.limits import RateLimited
from gateway.mcp import sse, versions
from gateway.mcp.context import JSON, Context, Endpoint, Refused
from gateway.mcp.dispatch import REQUEST_CANCELLED, Dispatcher, Reply
from gateway.mcp.streams import ResponseRecord, ResponseStream

DETACHED_GRACE = 5.0
"""Seconds past `TOOL_TIMEOUT` a resumable request may run: the upstream's own timeout
answers first; this ends whatever ignores it."""


class BodyTooLarge(RPCError):
    status = 413


def respond(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def rpc_error(
    status: int, code: int, message: str, request_id: Id = None, data: Any = None
) -> web.Response:
    return respond(jsonrpc.error(request_id, RPCError(code, message, data)), status)


def error_response(request_id: Id, exc: RPCError, status: int) -> web.Response:
    """An error answer; a rate-limit refusal says when to retry."""
    response = respond(jsonrpc.error(request_id, exc), status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def accepts(request: web.Request, kind: str, default: str = "*/*") -> bool:
    accept = request.headers.get("Accept", default)
    return kind in accept or "*/*" in accept


async def read_body(request: web.Request) -> bytes:
    """The body, or `BodyTooLarge` (-32600) past `MAX_REQUEST_BYTES`."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        raise BodyTooLarge(
            jsonrpc.INVALID_REQUEST,
            f"Invalid Request: body is larger than MAX_REQUEST_BYTES ({limit} bytes)",
        ) from None


def _refused(status: int, code: int, message: str) -> RPCError:
    error = RPCError(code, message)
    error.status = status
    return error


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body; an `RPCError` carrying its HTTP status otherwise (413 past
    `MAX_REQUEST_BYTES`, 400 for a parse error or nesting past `MAX_JSON_DEPTH`)."""
    body = await read_body(request)
    return jsonrpc.loads(body, request.app[SETTINGS].max_json_depth)


def require_json(request: web.Request) -> None:
    """`RPCError` (415) unless the body is declared JSON."""
    if request.content_type != "application/json":
        raise _refused(
            415,
            jsonrpc.INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        )


def status_error(exc: RPCError) -> web.Response:
    """An `RPCError` raised with its HTTP status, as the response."""
    return rpc_error(exc.status or 400, exc.code, exc.message)


def endpoint(request: web.Request) -> Endpoint:
    """The endpoint of an MCP request, or `Refused` (token limits, unknown server). Host and
    Origin were checked at the front door (`gateway.hosts`)."""
    caller = principal(request)
    return Endpoint.resolve(
        caller,
        request.remote,
        request.match_info.get("server"),
        request.app[REGISTRY].catalogue,
        request.app[ROLES].grant(caller),
    )


def refusal(exc: Refused) -> web.Response:
    return rpc_error(exc.status, jsonrpc.INVALID_REQUEST, exc.message)


class _LazyStream:
    """An SSE response opened only when something must reach the client before the answer
    (progress, a log message, a request to the client); until then the answer can still
    be plain JSON. With `resumable`, its events carry ids and can be resumed."""

    def __init__(
        self,
        request: web.Request,
        headers: dict[str, str] | None,
        resumable: ResponseStream | None = None,
    ) -> None:
        self.request = request
        self.headers = headers
        self.resumable = resumable
        self.stream: sse.EventStream | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> sse.EventStream:
        async with self._opening:
            if self.stream is None:
                self.stream = await sse.EventStream.open(self.request, self.headers)
                if self.resumable is not None:
                    await self.resumable.start(self.stream)
            return self.stream

    async def emit(self, message: JSON) -> None:
        stream = await self.open()
        if self.resumable is not None:
            await self.resumable.send(message)
        else:
            await stream.send(sse.message_event(message))


def _json_answer(answer: Reply, headers: dict[str, str] | None) -> web.Response:
    return respond(answer.body(), headers=headers)


async def reply(
    request: web.Request,
    ctx: Context,
    message: jsonrpc.Request,
    headers: dict[str, str] | None = None,
    *,
    eager: bool = False,
    as_json: Callable[[Reply, dict[str, str] | None], web.Response] = _json_answer,
) -> web.StreamResponse:
    """Answer one request that may relay messages first: as JSON (framed by `as_json`) if
    nothing was relayed, else on the SSE stream the first relayed message opened. `eager`
    opens the stream at once, for a client that asked for progress.

    On a 2025-11-25 session the stream is resumable, and a client that goes away once it is
    open does not cancel the call (`notifications/cancelled` does): the call runs on, one
    of at most `DETACHED_CALLS_MAX` per worker, for the client to resume on any worker."""
    lazy = _LazyStream(request, headers, _resumable(request, ctx, message))
    ctx.emit = lazy.emit
    try:
        if eager:
            await lazy.open()
        answer = await _answer(request, ctx, message, lazy)
        if lazy.stream is None:
            return as_json(answer, headers)
    except (ConnectionError, RuntimeError):
        # The client went away; the dispatcher has cancelled what it ran.
        if lazy.stream is None:
            raise
    finally:
        if lazy.stream is not None:
            await lazy.stream.close()
    assert lazy.stream is not None
    return lazy.stream.response


def _resumable(
    request: web.Request, ctx: Context, message: jsonrpc.Request
) -> ResponseStream | None:
    session = ctx.session
    if session is None or not versions.resumes_streams(session.protocol_version):
        return None
    deadline = time.time() + request.app[SETTINGS].tool_timeout + DETACHED_GRACE
    record = ResponseRecord(message.id, deadline)
    return ResponseStream(request.app[HUB], request.app[EVENTS], session.id, record)


async def _answer(
    request: web.Request, ctx: Context, message: jsonrpc.Request, lazy: _LazyStream
) -> Reply:
    """The request's answer, also sent on the stream if one was opened."""
    dispatcher = request.app[DISPATCHER]
    if lazy.resumable is None:
        answer = await dispatcher.request(message, ctx)
        if lazy.stream is not None:
            await lazy.emit(answer.message())
        return answer
    call = asyncio.ensure_future(_detachable(dispatcher, message, ctx, lazy))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        # The client went away. Once it holds an event id it may resume the stream, so the
        # call runs on if this worker may keep one more; otherwise it ends here.
        limit = request.app[SETTINGS].detached_calls_max
        if lazy.stream is not None and request.app[HUB].keep_running(call, limit):
            lazy.resumable.detach()
        else:
            call.cancel()
        raise


async def _detachable(
    dispatcher: Dispatcher, message: jsonrpc.Request, ctx: Context, lazy: _LazyStream
) -> Reply:
    """Run a resumable request to its answer and send that, whether or not its client is
    still connected; a stream that has to end early still gets an answer."""
    assert lazy.resumable is not None
    try:
        async with asyncio.timeout(lazy.resumable.record.deadline - time.time()):
            answer = await dispatcher.request(message, ctx)
    except TimeoutError:
        late = RPCError(jsonrpc.INTERNAL_ERROR, "Internal error: the request outlived TOOL_TIMEOUT")
        answer = Reply(message.id, error=late)
    except asyncio.CancelledError:
        if lazy.stream is not None:
            ended = RPCError(REQUEST_CANCELLED, "Request cancelled after its client went away")
            await lazy.emit(Reply(message.id, error=ended).message())
        raise
    if lazy.stream is not None:
        await lazy.emit(answer.message())
    return answer
