"""A bare aiohttp relay: the floor cost of any gateway built on aiohttp and gunicorn.

`bench_relay.py` runs it under gunicorn, with the gateway's worker class:

    RELAY_UPSTREAM=http://127.0.0.1:9000/mcp RELAY_HEADERS='{"Mcp-Session-Id": "..."}' \\
        gunicorn relay_app:create_app --chdir bench --workers 2 \\
        --worker-class aiohttp.GunicornUVLoopWebWorker --bind 127.0.0.1:8000

`POST /` sends the request body, unchanged and unread by Python, to `RELAY_UPSTREAM` with the
headers in `RELAY_HEADERS` (a JSON object: the upstream MCP session's), and answers with the
upstream's status, content type and body. No auth, no parsing, no logging. Each worker keeps
one `ClientSession` whose keep-alive pool is sized like the gateway's own (1024 connections,
256 per host), so a pool limit never queues requests at the concurrency the benchmark uses.
`GET /loop` tells which event loop the worker runs on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
HEADERS = web.AppKey("headers", dict[str, str])

# The gateway's own upstream pool (gateway.mcpclient.http) has the same limits.
POOL_LIMIT = 1024
POOL_LIMIT_PER_HOST = 256
KEEPALIVE_SECONDS = 4.0


async def relay(request: web.Request) -> web.Response:
    app = request.app
    body = await request.read()
    async with app[SESSION].post(app[UPSTREAM], data=body, headers=app[HEADERS]) as upstream:
        answer = await upstream.read()
        return web.Response(
            body=answer,
            status=upstream.status,
            headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
        )


async def loop(request: web.Request) -> web.Response:
    name = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    return web.json_response({"event_loop": name, "worker": os.getpid()})


async def client_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(
        limit=POOL_LIMIT, limit_per_host=POOL_LIMIT_PER_HOST, keepalive_timeout=KEEPALIVE_SECONDS
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        app[SESSION] = session
        yield


async def create_app() -> web.Application:
    app = web.Application()
    app[UPSTREAM] = os.environ["RELAY_UPSTREAM"]
    app[HEADERS] = {
        "Content-Type": "application/json",
        **orjson.loads(os.environ.get("RELAY_HEADERS", "{}")),
    }
    app.cleanup_ctx.append(client_session)
    app.router.add_post("/", relay)
    app.router.add_get("/loop", loop)
    return app
