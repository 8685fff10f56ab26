"""MCP Streamable HTTP at `/mcp` and `/servers/{server}/mcp`, for the handshake-era
versions (2025-03-26, 2025-06-18, 2025-11-25; 2024-11-05 clients may use it too).

POST carries one message (a batch for sessions that negotiated 2025-03-26); answers are
JSON, or SSE when the client accepts it and the request may stream progress. GET opens the
session's server-to-client stream (with event ids and `Last-Event-ID` resumption). DELETE
ends the session. Sessions live in the cache, so any worker sharing it serves any session.
A request carrying a 2026-07-28 `MCP-Protocol-Version` goes to `modern.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.jsonrpc import RPCError
from gateway.keys import CACHE, REGISTRY, SESSIONS, SETTINGS, UPSTREAMS
from gateway.limits import RateLimited
from gateway.mcp import modern, sse, versions
from gateway.mcp.common import Endpoint, endpoint, owned, rpc_error
from gateway.mcp.hub import HUB, Hub
from gateway.mcp.notifications import Notifier
from gateway.mcp.streams import EventLog, SessionStream
from gateway.rpc import BodyTooLarge, read_body
from gateway.sessions import SessionRecord

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
EVENTS = web.AppKey("events", EventLog)


def accepts(request: web.Request, kind: str) -> bool:
    accept = request.headers.get("Accept", "*/*")
    return kind in accept or "*/*" in accept


def _is_request(message: JSON) -> bool:
    return "method" in message and "id" in message


def _validate(message: Any) -> JSON:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise RPCError(jsonrpc.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
    if "method" in message and "id" in message and message["id"] is None:
        raise RPCError(jsonrpc.INVALID_REQUEST, "Invalid Request: MCP request ids must not be null")
    if "method" in message:
        request = jsonrpc.parse(orjson.dumps(message))
        return {
            "jsonrpc": "2.0",
            "method": request.method,
            "params": request.params,
            **({} if request.is_notification else {"id": request.id}),
        }
    if "id" in message and ("result" in message or "error" in message):
        return message
    raise RPCError(
        jsonrpc.INVALID_REQUEST, "Invalid Request: not a request, notification or response"
    )


async def _session(request: web.Request, ep: Endpoint) -> SessionRecord | web.Response:
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            f"Bad Request: {SESSION_HEADER} header is required; send initialize first",
        )
    try:
        session = await request.app[SESSIONS].get(session_id)
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    if session is None or not owned(session, ep, "streamable-http"):
        return rpc_error(404, jsonrpc.INVALID_REQUEST, "Not Found: unknown or expired session")
    try:
        return await request.app[SESSIONS].touch(session)
    except CacheUnavailable:
        return session


async def post(request: web.Request) -> web.StreamResponse:
    ep = endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    header_version = request.headers.get(VERSION_HEADER)
    if header_version in versions.MODERN_VERSIONS:
        return await modern.post(request, ep)
    if not request.content_type == "application/json":
        return rpc_error(
            415,
            jsonrpc.INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        )
    # Answers are JSON unless the request streams (then SSE, if accepted), so JSON is a must.
    if not accepts(request, "application/json"):
        return rpc_error(
            406,
            jsonrpc.INVALID_REQUEST,
            "Not Acceptable: accept application/json (and text/event-stream for streams)",
        )
    try:
        body = orjson.loads(await read_body(request))
    except BodyTooLarge as exc:
        return rpc_error(413, exc.code, exc.message)
    except orjson.JSONDecodeError as exc:
        return rpc_error(400, jsonrpc.PARSE_ERROR, f"Parse error: {exc}")
    if header_version is not None and header_version not in versions.SUPPORTED_VERSIONS:
        if _modern_body(body):
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
    if _modern_body(body):
        return rpc_error(
            400,
            modern.HEADER_MISMATCH,
            f"{VERSION_HEADER} header is required with a 2026-07-28 request",
        )
    session = await _session(request, ep)
    if isinstance(session, web.Response):
        return session
    if header_version is not None and header_version != session.protocol_version:
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            f"Bad Request: {VERSION_HEADER} {header_version} differs from the "
            f"session's {session.protocol_version}",
        )
    batch = isinstance(body, list)
    if batch and not versions.allows_batches(session.protocol_version):
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            "Invalid Request: batches are not supported in protocol version "
            f"{session.protocol_version}",
        )
    messages = body if batch else [body]
    if not messages:
        return rpc_error(400, jsonrpc.INVALID_REQUEST, "Invalid Request: empty batch")
    try:
        parsed = [_validate(m) for m in messages]
    except RPCError as exc:
        return rpc_error(400, exc.code, exc.message)
    if any(m.get("method") == "initialize" for m in parsed):
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            "Invalid Request: initialize must be sent alone, without a session",
        )
    hub = request.app[HUB]
    for message in parsed:
        if not _is_request(message):
            await _notification(request, session, message, hub)
    requests = [m for m in parsed if _is_request(m)]
    if not requests:
        return web.Response(status=202)
    wants_stream = accepts(request, "text/event-stream") and any(_streams(m) for m in requests)
    if wants_stream and not batch:
        return await _answer_stream(request, ep, session, requests[0], hub)
    answers = [await _answer(ep, session, m, hub, None) for m in requests]
    payload = answers if batch else answers[0]
    return web.Response(
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={SESSION_HEADER: session.id},
    )


def _modern_body(body: Any) -> bool:
    """A 2026-07-28 request: its `_meta` carries the protocol version."""
    params = body.get("params") if isinstance(body, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and versions.META_VERSION in meta


def _streams(message: JSON) -> bool:
    """Requests whose answer may be preceded by progress or log notifications."""
    meta = message.get("params", {}).get("_meta")
    return message["method"] in {"tools/call", "prompts/get", "resources/read"} and (
        isinstance(meta, dict) and "progressToken" in meta
    )


async def _notification(
    request: web.Request, session: SessionRecord, message: JSON, hub: Hub
) -> None:
    method = message.get("method")
    if method == "notifications/initialized" and not session.initialized:
        try:
            await request.app[SESSIONS].update(session, initialized=True)
        except CacheUnavailable:
            pass
    elif method == "notifications/cancelled":
        params = message.get("params") or {}
        if "requestId" in params:
            await hub.cancel(session.id, params["requestId"])


async def _answer(ep: Endpoint, session: SessionRecord, message: JSON, hub: Hub, emit: Any) -> JSON:
    """Run one request as a cancellable task; return its response object."""
    ctx = ep.context(
        session.protocol_version, session=session, emit=emit, log_level=session.log_level
    )
    methods = ep.methods
    request_id = message["id"]

    async def run() -> Any:
        await methods.limits.hit(
            f"caller:{ep.caller_key}", "this caller", methods.settings.rate_limit_per_minute
        )
        if message["method"] == "server/discover":
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, "Method not found: server/discover")
        return await methods.handle(message["method"], message["params"], ctx)

    task = asyncio.ensure_future(run())
    untrack = hub.track(session.id, request_id, task)
    try:
        value = await task
    except asyncio.CancelledError:
        if task.cancelled() and not _current_cancelling():
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": -32800, "message": "Request cancelled"},
            }
        raise
    except RateLimited as exc:
        return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_dict()}
    except RPCError as exc:
        return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_dict()}
    except Exception:
        log.exception("mcp method failed", method=message["method"])
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": jsonrpc.INTERNAL_ERROR, "message": "Internal error"},
        }
    finally:
        untrack()
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


async def _answer_stream(
    request: web.Request, ep: Endpoint, session: SessionRecord, message: JSON, hub: Hub
) -> web.StreamResponse:
    stream = await sse.EventStream.open(request, {SESSION_HEADER: session.id})

    async def emit(note: JSON) -> None:
        await stream.send(sse.message_event(note))

    try:
        response = await _answer(ep, session, message, hub, emit)
        await stream.send(sse.message_event(response))
    except (ConnectionError, RuntimeError):
        pass
    finally:
        await stream.close()
    return stream.response


async def _initialize(request: web.Request, ep: Endpoint, message: JSON) -> web.Response:
    try:
        parsed = _validate(message)
    except RPCError as exc:
        return rpc_error(400, exc.code, exc.message)
    ctx = ep.context(versions.LATEST_HANDSHAKE)
    result = await ep.methods.initialize(parsed["params"], ctx)
    params = parsed["params"]
    try:
        session = await request.app[SESSIONS].create(
            protocol_version=result["protocolVersion"],
            subject=ep.caller.subject,
            server=ep.server,
            client_info=params.get("clientInfo")
            if isinstance(params.get("clientInfo"), dict)
            else {},
            client_capabilities=params.get("capabilities")
            if isinstance(params.get("capabilities"), dict)
            else {},
        )
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    log.info(
        "mcp session opened",
        session=session.id[:8],
        version=session.protocol_version,
        server=ep.server,
    )
    body = jsonrpc.result(parsed["id"], result)
    return web.Response(
        body=body, content_type="application/json", headers={SESSION_HEADER: session.id}
    )


async def get(request: web.Request) -> web.StreamResponse:
    ep = endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    if request.headers.get(VERSION_HEADER) in versions.MODERN_VERSIONS:
        return web.Response(status=405, headers={"Allow": "POST"})
    if not accepts(request, "text/event-stream"):
        return rpc_error(
            406, jsonrpc.INVALID_REQUEST, "Not Acceptable: the GET stream is text/event-stream"
        )
    session = await _session(request, ep)
    if isinstance(session, web.Response):
        return session
    hub = request.app[HUB]
    stream = await sse.EventStream.open(request, {SESSION_HEADER: session.id})
    client = SessionStream(
        stream, session.id, ep.server, request.app[SESSIONS], request.app[EVENTS]
    )
    hub.attach(session.id, client)
    last = request.headers.get("Last-Event-ID")
    if last:
        await client.replay(last)
    try:
        await client.closed.wait()
    finally:
        hub.detach(session.id, client)
        await stream.close()
    return stream.response


async def delete(request: web.Request) -> web.Response:
    ep = endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    if request.headers.get(VERSION_HEADER) in versions.MODERN_VERSIONS:
        return web.Response(status=405, headers={"Allow": "POST"})
    session = await _session(request, ep)
    if isinstance(session, web.Response):
        return session
    try:
        await request.app[SESSIONS].delete(session.id)
    except CacheUnavailable:
        return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Session store unavailable")
    await request.app[HUB].publish({"kind": "session-closed", "session": session.id})
    log.info("mcp session closed", session=session.id[:8])
    return web.Response(status=204)


def install(app: web.Application) -> None:
    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        hub = Hub(app[CACHE], app[SESSIONS])
        await hub.start()
        app[HUB] = hub
        app[EVENTS] = EventLog(
            CacheUse(app[CACHE], settings.cache_type, "events", settings.cache_timeout)
        )
        notifier = Notifier(hub, app[REGISTRY], app[UPSTREAMS])
        yield
        await notifier.close()
        await hub.close()

    async def end_streams(app: web.Application) -> None:
        await app[HUB].close_streams()

    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(end_streams)
    for prefix in ("", "/servers/{server}"):
        app.router.add_post(f"{prefix}/mcp", post)
        app.router.add_get(f"{prefix}/mcp", get)
        app.router.add_delete(f"{prefix}/mcp", delete)
