"""The legacy HTTP+SSE transport (2024-11-05) at `/sse` and `/servers/{server}/sse`.

`GET /sse` opens the session's stream and sends the `endpoint` event; the client POSTs each
message to `/message?session_id=...` and gets 202 at once; answers travel back on the
stream. Any worker may take the POST: the answer reaches the worker holding the stream
through the hub. Errors are sent on the stream too, never as HTTP errors, because SDK
clients drop the connection on a failed POST. The session ends with the stream.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable
from gateway.jsonrpc import RPCError
from gateway.keys import DISPATCHER, HUB, SESSIONS, SETTINGS, STREAM_QUOTA, TASKS
from gateway.limits import RateLimited
from gateway.logconfig import short_hash
from gateway.mcp import batches, sse
from gateway.mcp.context import Context, Endpoint, Era, Refused
from gateway.mcp.dispatch import Dispatcher, parse_message
from gateway.mcp.framing import (
    endpoint,
    error_response,
    read_body,
    refusal,
    rpc_error,
    status_error,
)
from gateway.mcp.hub import Hub
from gateway.mcp.streams import LegacyStream
from gateway.sessions import SessionRecord, SessionStore, TooManySessions

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
TRANSPORT = "sse"
LEGACY_VERSION = "2024-11-05"


async def stream(request: web.Request) -> web.StreamResponse:
    try:
        ep = endpoint(request)
    except Refused as exc:
        return refusal(exc)
    try:
        await request.app[DISPATCHER].count_caller(ep.caller_key)
    except RateLimited as exc:
        return error_response(None, exc, 429)
    quota = request.app[STREAM_QUOTA]
    try:
        quota.take(None, ep.caller_key)
    except RPCError as exc:
        return status_error(exc)
    try:
        return await _stream(request, ep)
    finally:
        quota.give_back(None, ep.caller_key)


async def _stream(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    try:
        session = await sessions.create(
            protocol_version=LEGACY_VERSION,
            subject=ep.caller.subject,
            owner=ep.caller_key,
            server=ep.server,
            transport=TRANSPORT,
        )
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    except TooManySessions as exc:
        return status_error(exc)
    hub = request.app[HUB]
    events = await sse.EventStream.open(request)
    client = LegacyStream(events, session.id, ep.server, sessions)
    prefix = f"/servers/{ep.server}" if ep.server else ""
    await events.send(
        sse.event(f"{prefix}/message?session_id={session.id}".encode(), name="endpoint")
    )
    hub.attach(session.id, client)
    log.info("sse session opened", session=short_hash(session.id), server=ep.server)
    try:
        await client.closed.wait()
    finally:
        hub.detach(session.id, client)
        await events.close()
        try:
            await hub.end_session(session.id)
        except CacheUnavailable:
            pass
        log.info("sse session closed", session=short_hash(session.id))
    return events.response


def _not_found(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


async def message(request: web.Request) -> web.Response:
    try:
        ep = endpoint(request)
    except Refused as exc:
        return refusal(exc)
    session_id = request.query.get("session_id") or request.query.get("sessionId")
    if not session_id:
        return _not_found(400, "session_id is required")
    try:
        session = await request.app[SESSIONS].find(
            session_id, ep.caller.subject, ep.server, TRANSPORT
        )
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    if session is None:
        return _not_found(404, "Could not find session")
    hub = request.app[HUB]
    settings = request.app[SETTINGS]
    try:
        body = await read_body(request)
        parsed = jsonrpc.loads(body, settings.max_json_depth)
        if isinstance(parsed, list):
            batches.check_length(parsed, settings.max_batch)
    except RPCError as exc:
        # Too large, not JSON or too deep: said on the stream, like every other error.
        await hub.send_to_session(
            session.id, {"jsonrpc": "2.0", "id": None, "error": exc.to_dict()}
        )
        return web.Response(status=202, text="Accepted")
    request.app[TASKS].spawn(
        _process(
            request.app[DISPATCHER],
            request.app[SESSIONS],
            hub,
            ep,
            session,
            parsed,
            settings.max_response_bytes,
        )
    )
    return web.Response(status=202, text="Accepted")


async def _process(
    dispatcher: Dispatcher,
    sessions: SessionStore,
    hub: Hub,
    ep: Endpoint,
    session: SessionRecord,
    parsed: Any,
    response_limit: int,
) -> None:
    if not isinstance(parsed, list):
        answer = await _handle(dispatcher, sessions, hub, ep, session, parsed)
        if answer is not None:
            await hub.send_to_session(session.id, answer)
        return
    budget = batches.AnswerBudget(response_limit)
    for item in parsed:
        if budget.spent and isinstance(item, dict) and "method" in item and "id" in item:
            request_id = item["id"] if isinstance(item["id"], str | int) else None
            answer = budget.not_run(request_id)
        else:
            answer = await _handle(dispatcher, sessions, hub, ep, session, item)
        if answer is not None:
            budget.spend(answer)
            await hub.send_to_session(session.id, answer)


async def _handle(
    dispatcher: Dispatcher,
    sessions: SessionStore,
    hub: Hub,
    ep: Endpoint,
    session: SessionRecord,
    item: Any,
) -> JSON | None:
    try:
        message = parse_message(item)
    except RPCError as exc:
        return jsonrpc.error_message(exc.request_id, exc)
    # The session as stored now: another worker may have changed it since (the handshake
    # runs in the background on whichever worker took it: version, capabilities, level).
    try:
        session = await sessions.get_stored(session.id) or session
    except CacheUnavailable:
        pass

    async def emit(note: JSON) -> None:
        await hub.send_to_session(session.id, note)

    ctx = Context(
        endpoint=ep,
        view=ep.view,
        era=Era.HANDSHAKE,
        version=session.protocol_version,
        transport=TRANSPORT,
        session=session,
        emit=emit,
        log_level=session.log_level,
    )
    if isinstance(message, jsonrpc.Response):
        try:
            await dispatcher.answer(message, ctx)
        except RPCError as exc:
            # An error sent back would read as the answer to a request of the client's own
            # with that id; the refusal is logged instead.
            log.info("client answer refused", session=short_hash(session.id), reason=exc.message)
        return None
    if message.is_notification:
        await dispatcher.notification(message, ctx)
        return None
    reply = await dispatcher.request(message, ctx)
    # A request the client cancelled gets no answer at all.
    return None if reply.cancelled else reply.message()


routes = [
    route
    for prefix in ("", "/servers/{server}")
    for route in (web.get(f"{prefix}/sse", stream), web.post(f"{prefix}/message", message))
]
