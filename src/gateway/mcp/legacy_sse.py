"""The legacy HTTP+SSE transport (2024-11-05) at `/sse` and `/servers/{server}/sse`.

`GET /sse` opens the session's stream and sends the `endpoint` event; the client POSTs each
message to `/message?session_id=...` and gets 202 at once; answers travel back on the
stream. Any worker may take the POST: the answer reaches the worker holding the stream
through the hub. Errors are sent on the stream too, never as HTTP errors, because SDK
clients drop the connection on a failed POST. The session ends with the stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable
from gateway.jsonrpc import RPCError
from gateway.keys import SESSIONS
from gateway.limits import RateLimited
from gateway.mcp import sse, versions
from gateway.mcp.common import Endpoint, endpoint, owned, rpc_error
from gateway.mcp.hub import HUB, Hub
from gateway.mcp.streams import LegacyStream
from gateway.rpc import BodyTooLarge, read_body
from gateway.sessions import SessionRecord

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
_tasks: set[asyncio.Task[None]] = set()


async def stream(request: web.Request) -> web.StreamResponse:
    ep = endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    sessions = request.app[SESSIONS]
    try:
        session = await sessions.create(
            protocol_version="2024-11-05",
            subject=ep.caller.subject,
            server=ep.server,
            transport="sse",
        )
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    hub = request.app[HUB]
    events = await sse.EventStream.open(request)
    client = LegacyStream(events, session.id, ep.server, sessions)
    prefix = f"/servers/{ep.server}" if ep.server else ""
    await events.send(
        sse.event(f"{prefix}/message?session_id={session.id}".encode(), name="endpoint")
    )
    hub.attach(session.id, client)
    log.info("sse session opened", session=session.id[:8], server=ep.server)
    try:
        await client.closed.wait()
    finally:
        hub.detach(session.id, client)
        await events.close()
        try:
            await sessions.delete(session.id)
        except CacheUnavailable:
            pass
        await hub.publish({"kind": "session-closed", "session": session.id})
        log.info("sse session closed", session=session.id[:8])
    return events.response


async def message(request: web.Request) -> web.Response:
    ep = endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    session_id = request.query.get("session_id") or request.query.get("sessionId")
    if not session_id:
        return web.json_response(
            {"error": {"status": 400, "message": "session_id is required"}}, status=400
        )
    try:
        session = await request.app[SESSIONS].get(session_id)
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    if session is None or not owned(session, ep, "sse"):
        return web.json_response(
            {"error": {"status": 404, "message": "Could not find session"}}, status=404
        )
    try:
        session = await request.app[SESSIONS].touch(session)
    except CacheUnavailable:
        pass
    hub = request.app[HUB]
    try:
        body = await read_body(request)
    except BodyTooLarge as exc:
        await hub.send_to_session(
            session.id, {"jsonrpc": "2.0", "id": None, "error": exc.to_dict()}
        )
        return web.Response(status=202, text="Accepted")
    task = asyncio.create_task(_process(ep, session, body, hub))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return web.Response(status=202, text="Accepted")


async def _process(ep: Endpoint, session: SessionRecord, body: bytes, hub: Hub) -> None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        await hub.send_to_session(
            session.id,
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": jsonrpc.PARSE_ERROR, "message": f"Parse error: {exc}"},
            },
        )
        return
    messages = parsed if isinstance(parsed, list) else [parsed]
    for item in messages:
        answer = await _handle(ep, session, item, hub)
        if answer is not None:
            await hub.send_to_session(session.id, answer)


async def _handle(ep: Endpoint, session: SessionRecord, item: Any, hub: Hub) -> JSON | None:
    try:
        message = jsonrpc.parse(orjson.dumps(item))
    except RPCError as exc:
        if isinstance(item, dict) and "id" in item and ("result" in item or "error" in item):
            return None  # a response to a server request: the gateway sends none
        return {"jsonrpc": "2.0", "id": exc.request_id, "error": exc.to_dict()}
    methods = ep.methods
    if message.is_notification:
        if message.method == "notifications/cancelled" and "requestId" in message.params:
            await hub.cancel(session.id, message.params["requestId"])
        return None
    fresh = await _current(ep, session)
    if message.method == "initialize":
        ctx = ep.context(versions.LATEST_HANDSHAKE, session=fresh)
        result = await methods.initialize(message.params, ctx)
        try:
            await ep.request.app[SESSIONS].update(
                fresh,
                protocol_version=result["protocolVersion"],
                client_info=message.params.get("clientInfo") or {},
            )
        except CacheUnavailable:
            pass
        return {"jsonrpc": "2.0", "id": message.id, "result": result}

    async def emit(note: JSON) -> None:
        await hub.send_to_session(session.id, note)

    ctx = ep.context(fresh.protocol_version, session=fresh, emit=emit, log_level=fresh.log_level)

    async def run() -> Any:
        await methods.limits.hit(
            f"caller:{ep.caller_key}", "this caller", methods.settings.rate_limit_per_minute
        )
        if message.method == "server/discover":
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, "Method not found: server/discover")
        return await methods.handle(message.method, message.params, ctx)

    task = asyncio.ensure_future(run())
    untrack = hub.track(session.id, message.id, task)
    try:
        value = await task
    except asyncio.CancelledError:
        if task.cancelled():
            return None  # cancelled by the client: the spec says send nothing
        raise
    except (RateLimited, RPCError) as exc:
        return {"jsonrpc": "2.0", "id": message.id, "error": exc.to_dict()}
    except Exception:
        log.exception("mcp method failed", method=message.method)
        return {
            "jsonrpc": "2.0",
            "id": message.id,
            "error": {"code": jsonrpc.INTERNAL_ERROR, "message": "Internal error"},
        }
    finally:
        untrack()
    return {"jsonrpc": "2.0", "id": message.id, "result": value}


async def _current(ep: Endpoint, session: SessionRecord) -> SessionRecord:
    """The session as stored now: another worker may have changed it (level, version)."""
    try:
        return await ep.request.app[SESSIONS].get(session.id) or session
    except CacheUnavailable:
        return session


def install(app: web.Application) -> None:
    for prefix in ("", "/servers/{server}"):
        app.router.add_get(f"{prefix}/sse", stream)
        app.router.add_post(f"{prefix}/message", message)
