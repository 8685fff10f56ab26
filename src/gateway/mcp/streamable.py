"""MCP Streamable HTTP at `/mcp` and `/servers/{server}/mcp`, for the handshake-era
versions (2025-03-26, 2025-06-18, 2025-11-25; 2024-11-05 clients may use it too).

POST carries one message (a batch for sessions that negotiated 2025-03-26); answers are
JSON, or SSE when the client accepts it and the request may stream progress. GET opens the
session's server-to-client stream (with event ids and `Last-Event-ID` resumption), or,
with the `Last-Event-ID` of a POST's response stream (2025-11-25), resumes that. Every SSE
stream of a 2025-11-25 session starts with a priming event. DELETE ends the session.
Sessions live in the cache, so any worker sharing it serves any session. A request
carrying a 2026-07-28 `MCP-Protocol-Version` goes to `modern.py`.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable
from gateway.jsonrpc import RPCError
from gateway.keys import DISPATCHER, EVENTS, HUB, SESSIONS, SETTINGS, STREAM_QUOTA
from gateway.mcp import batches, modern, sse, versions
from gateway.mcp.context import Context, Endpoint, Era, Refused
from gateway.mcp.dispatch import Dispatcher, parse_message
from gateway.mcp.framing import (
    accepts,
    endpoint,
    read_json,
    refusal,
    reply,
    require_json,
    respond,
    rpc_error,
    status_error,
)
from gateway.mcp.streams import ResumedResponse, SessionStream, response_event
from gateway.sessions import SessionRecord

JSON = dict[str, Any]
TRANSPORT = "streamable-http"
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
_STORE_DOWN = Refused(503, "Session store unavailable")


def _context(ep: Endpoint, session: SessionRecord | None, version: str) -> Context:
    return Context(
        endpoint=ep,
        view=ep.view,
        era=Era.HANDSHAKE,
        version=session.protocol_version if session else version,
        transport=TRANSPORT,
        session=session,
        log_level=session.log_level if session else None,
    )


async def _session(request: web.Request, ep: Endpoint) -> SessionRecord:
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise Refused(
            400, f"Bad Request: {SESSION_HEADER} header is required; send initialize first"
        )
    try:
        session = await request.app[SESSIONS].find(
            session_id, ep.caller.subject, ep.server, TRANSPORT
        )
    except CacheUnavailable:
        raise _STORE_DOWN from None
    if session is None:
        raise Refused(404, "Not Found: unknown or expired session")
    return session


def _session_error(exc: Refused) -> web.Response:
    code = jsonrpc.INTERNAL_ERROR if exc.status == 503 else jsonrpc.INVALID_REQUEST
    return rpc_error(exc.status, code, exc.message)


async def post(request: web.Request) -> web.StreamResponse:
    try:
        ep = endpoint(request)
    except Refused as exc:
        return refusal(exc)
    header_version = request.headers.get(VERSION_HEADER)
    if header_version in versions.MODERN_VERSIONS:
        return await modern.post(request, ep)
    try:
        require_json(request)
        # Answers are JSON unless the request relays (then SSE, if accepted): JSON is a must.
        if not accepts(request, "application/json"):
            raise RPCError(
                jsonrpc.INVALID_REQUEST,
                "Not Acceptable: accept application/json (and text/event-stream for streams)",
            )
        body = await read_json(request)
    except RPCError as exc:
        return status_error(exc) if exc.status else rpc_error(406, exc.code, exc.message)
    if header_version is not None and header_version not in versions.SUPPORTED_VERSIONS:
        if modern.is_modern_body(body):
            # The one answer SDK auto-mode clients act on: what we support instead.
            return rpc_error(
                400,
                modern.UNSUPPORTED_VERSION,
                "Unsupported protocol version",
                body.get("id"),
                {"supported": list(versions.SUPPORTED_VERSIONS), "requested": header_version},
            )
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            f"Bad Request: unsupported {VERSION_HEADER}: {header_version}",
        )
    if isinstance(body, dict) and body.get("method") == "initialize" and "id" in body:
        return await _initialize(request, ep, body)
    if modern.is_modern_body(body):
        return rpc_error(
            400,
            modern.HEADER_MISMATCH,
            f"{VERSION_HEADER} header is required with a 2026-07-28 request",
        )
    version = header_version or versions.ASSUMED_WITHOUT_HEADER
    if SESSION_HEADER in request.headers or request.app[SETTINGS].mcp_sessions == "required":
        try:
            session: SessionRecord | None = await _session(request, ep)
        except Refused as exc:
            return _session_error(exc)
        assert session is not None
        if header_version is not None and header_version != session.protocol_version:
            return rpc_error(
                400,
                jsonrpc.INVALID_REQUEST,
                f"Bad Request: {VERSION_HEADER} {header_version} differs from the "
                f"session's {session.protocol_version}",
            )
        version = session.protocol_version
    else:
        # MCP_SESSIONS=optional: served without a session, as the header's version (or the
        # version the transport assumes without one); methods that need a session refuse.
        session = None
    return await _messages(request, ep, session, version, body)


async def _messages(
    request: web.Request, ep: Endpoint, session: SessionRecord | None, version: str, body: Any
) -> web.StreamResponse:
    batch = isinstance(body, list)
    if batch and not versions.allows_batches(version):
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            f"Invalid Request: batches are not supported in protocol version {version}",
        )
    items = body if batch else [body]
    if not items:
        return rpc_error(400, jsonrpc.INVALID_REQUEST, "Invalid Request: empty batch")
    settings = request.app[SETTINGS]
    try:
        batches.check_length(items, settings.max_batch)
    except RPCError as exc:
        return status_error(exc)
    try:
        messages = [parse_message(item) for item in items]
    except RPCError as exc:
        return rpc_error(400, exc.code, exc.message)
    parsed = [m for m in messages if isinstance(m, jsonrpc.Request)]
    if any(m.method == "initialize" for m in parsed):
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            "Invalid Request: initialize must be sent alone, without a session",
        )
    dispatcher = request.app[DISPATCHER]
    for answer in messages:
        if isinstance(answer, jsonrpc.Response):
            try:
                await dispatcher.answer(answer, _context(ep, session, version))
            except RPCError as exc:
                return rpc_error(400, exc.code, exc.message, answer.id)
    for message in parsed:
        if message.is_notification:
            await dispatcher.notification(message, _context(ep, session, version))
    requests = [m for m in parsed if not m.is_notification]
    if not requests:
        return web.Response(status=202)
    headers = {SESSION_HEADER: session.id} if session else {}
    if not batch and accepts(request, "text/event-stream") and _relays(dispatcher, requests[0]):
        meta = requests[0].params.get("_meta")
        eager = isinstance(meta, dict) and "progressToken" in meta
        ctx = _context(ep, session, version)
        return await reply(request, ctx, requests[0], headers, eager=eager)
    if not batch:
        single = await dispatcher.request(requests[0], _context(ep, session, version))
        return respond(single.body(), headers=headers)
    budget = batches.AnswerBudget(settings.max_response_bytes)
    replies = []
    for message in requests:
        if budget.spent:
            replies.append(budget.not_run(message.id))
            continue
        replied = (await dispatcher.request(message, _context(ep, session, version))).message()
        budget.spend(replied)
        replies.append(replied)
    return respond(orjson.dumps(replies), headers=headers)


def _relays(dispatcher: Dispatcher, message: jsonrpc.Request) -> bool:
    """Requests that go upstream: progress, log messages and requests to the client may
    come before their answer."""
    spec = dispatcher.table.get(message.method)
    return spec is not None and spec.target is not None


async def _initialize(request: web.Request, ep: Endpoint, body: JSON) -> web.Response:
    try:
        message = parse_message(body)
    except RPCError as exc:
        return rpc_error(400, exc.code, exc.message)
    assert isinstance(message, jsonrpc.Request)
    ctx = _context(ep, None, versions.LATEST_HANDSHAKE)
    reply = await request.app[DISPATCHER].request(message, ctx)
    if reply.error is not None or ctx.session is None:
        status = (reply.error.status if reply.error else None) or 400
        return respond(reply.body(), status)
    return respond(reply.body(), headers={SESSION_HEADER: ctx.session.id})


def _handshake_endpoint(request: web.Request) -> Endpoint | web.Response:
    """The endpoint of a GET or DELETE, which only the handshake era has (2026: 405)."""
    try:
        ep = endpoint(request)
    except Refused as exc:
        return refusal(exc)
    if request.headers.get(VERSION_HEADER) in versions.MODERN_VERSIONS:
        return web.Response(status=405, headers={"Allow": "POST"})
    return ep


async def get(request: web.Request) -> web.StreamResponse:
    ep = _handshake_endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    if not accepts(request, "text/event-stream"):
        return rpc_error(
            406, jsonrpc.INVALID_REQUEST, "Not Acceptable: the GET stream is text/event-stream"
        )
    try:
        session = await _session(request, ep)
    except Refused as exc:
        return _session_error(exc)
    last = request.headers.get("Last-Event-ID")
    resumed = response_event(last) if last else None
    if resumed is not None:
        return await _resume_response(request, session, *resumed)
    hub = request.app[HUB]
    quota = request.app[STREAM_QUOTA]
    try:
        quota.take(session.id, ep.caller_key)
    except RPCError as exc:
        return status_error(exc)
    try:
        stream = await sse.EventStream.open(request, {SESSION_HEADER: session.id})
        client = SessionStream(
            stream, session.id, ep.server, request.app[SESSIONS], request.app[EVENTS]
        )
        hub.attach(session.id, client)
        try:
            await client.start(last, prime=versions.resumes_streams(session.protocol_version))
            await client.closed.wait()
        finally:
            hub.detach(session.id, client)
            await stream.close()
    finally:
        quota.give_back(session.id, ep.caller_key)
    return stream.response


async def _resume_response(
    request: web.Request, session: SessionRecord, epoch: str, last: int
) -> web.StreamResponse:
    """Resume the response stream of a POST: what it missed, then the rest of the call,
    wherever it runs, up to the answer."""
    events = request.app[EVENTS]
    record = await events.response(session.id, epoch)
    if record is None:
        return rpc_error(
            404, jsonrpc.INVALID_REQUEST, "Not Found: no such stream to resume (ended or expired)"
        )
    hub = request.app[HUB]
    stream = await sse.EventStream.open(request, {SESSION_HEADER: session.id})
    follower = ResumedResponse(stream, session.id, epoch, last, events, record)
    hub.follow(session.id, epoch, follower)
    try:
        await follower.run()
    finally:
        hub.unfollow(session.id, epoch, follower)
        await stream.close()
    return stream.response


async def delete(request: web.Request) -> web.Response:
    ep = _handshake_endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    try:
        session = await _session(request, ep)
        await request.app[HUB].end_session(session.id)
    except Refused as exc:
        return _session_error(exc)
    except CacheUnavailable:
        return _session_error(_STORE_DOWN)
    return web.Response(status=204)


routes = [
    route
    for prefix in ("", "/servers/{server}")
    for route in (
        web.post(f"{prefix}/mcp", post),
        web.get(f"{prefix}/mcp", get),
        web.delete(f"{prefix}/mcp", delete),
    )
]
