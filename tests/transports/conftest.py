"""What the transport tests share: one in-process gateway (`client`) with the `rich` and
`faulty` fixture backends, and the wire helpers for MCP over HTTP and SSE.

Requests are made with aiohttp directly, so every header is the test's own choice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest
from aiohttp import ClientResponse, ClientSession, web

from gateway.app import build_app
from gateway.keys import HUB, REGISTRY
from gateway.plugins import Plugins, build_plugin_manager
from gateway.settings import Settings
from tests.conftest import Client, GatewayFactory
from tests.plugins import faulty, rich
from tests.plugins.rich import RichBackend
from tests.support import waiting

# Shared with tests beyond these; re-exported, as the transport tests import them from here.
from tests.support.mcp_session import ACCEPT_BOTH as ACCEPT_BOTH
from tests.support.mcp_session import LATEST as LATEST
from tests.support.mcp_session import init_message as init_message
from tests.support.mcp_session import open_session as open_session

JSON = dict[str, Any]

# --- wire helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    data: str
    name: str = "message"
    id: str | None = None

    @property
    def message(self) -> JSON:
        loaded: JSON = orjson.loads(self.data)
        return loaded


def parse_events(text: str) -> list[Event]:
    """Every event of a finished SSE body; comments (keep-alives) are skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event = _event(block.split("\n"))
        if event is not None:
            events.append(event)
    return events


def _event(lines: list[str]) -> Event | None:
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if not any(data):
        # As browsers do: an event without data (a 2025-11-25 priming event, which only
        # sets the id to resume from) is not dispatched.
        return None
    return Event(data="\n".join(data), name=fields.get("event", "message"), id=fields.get("id"))


class EventReader:
    """Reads the events of an open SSE response one at a time, each within a deadline."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> Event:
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the event stream ended")
                line = raw.decode().rstrip("\r\n")
                if line:
                    lines.append(line)
                    continue
                event = _event(lines)
                lines = []
                if event is not None:
                    return event

    async def message(self, timeout: float = 5.0) -> JSON:
        return (await self.next(timeout)).message


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0, what: str = "condition"
) -> float:
    """`tests.support.waiting.eventually`, polling more often and for 5 s unless told."""
    return await waiting.eventually(check, timeout, what, every=0.01)


async def streams_attached(client: Client, count: int) -> None:
    """Wait until the gateway holds `count` open client streams (GET, SSE or listen)."""
    hub = client.app[HUB]
    await eventually(lambda: hub.stream_count() >= count, what=f"{count} open stream(s)")


def backend_of(client: Client, upstream: str = "rich") -> RichBackend:
    return cast(RichBackend, client.app[REGISTRY].backends[upstream])


def session_headers(
    session: str, version: str | None = None, accept: str = ACCEPT_BOTH
) -> dict[str, str]:
    headers = {"Accept": accept, "Mcp-Session-Id": session}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    return headers


async def call(
    client: Client,
    session: str,
    method: str,
    params: JSON | None = None,
    *,
    request_id: Any = 1,
    path: str = "/mcp",
    headers: dict[str, str] | None = None,
) -> JSON:
    """One request on a session, answered as JSON; the JSON-RPC response."""
    message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    response = await client.post(
        path,
        json=message,
        headers={**session_headers(session, accept="application/json"), **(headers or {})},
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    body: JSON = await response.json()
    return body


async def open_get_stream(
    client: Client, session: str, path: str = "/mcp", last_event_id: str | None = None
) -> EventReader:
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    return EventReader(response)


@dataclass(frozen=True)
class Served:
    app: web.Application
    http: ClientSession
    base: str


@contextlib.asynccontextmanager
async def served_like_gunicorn(
    settings: Settings, plugins: Iterable[object], headers: dict[str, str]
) -> AsyncIterator[Served]:
    """The gateway behind an `AppRunner` with aiohttp's defaults, as the gunicorn worker
    and `serve` run it. aiohttp's test server differs in one way that matters here: it
    cancels a handler when its client disconnects, and production servers do not."""
    pm = build_plugin_manager(settings.plugins_blocked)
    for plugin in plugins:
        pm.register(plugin, name=getattr(plugin, "__name__", repr(plugin)))
    app = build_app(settings, Plugins(pm))
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with ClientSession(headers=headers) as http:
            yield Served(app, http, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


# --- the gateway -------------------------------------------------------------------------------


@pytest.fixture
async def client(gateway: GatewayFactory, user_headers: dict[str, str]) -> Client:
    """A gateway with the `rich` and `faulty` backends, called as an ordinary user; tools
    may take up to 20 s, so only a test that means to time out does."""
    client = await gateway(plugins=[rich, faulty], tool_timeout=20.0)
    client.session.headers.update(user_headers)
    return client
