"""A 2025-11-25 client that loses a POST's response stream mid-call resumes it with GET +
`Last-Event-ID` on another instance, and receives what it missed, then the rest of the call
and its answer; a 2025-06-18 client that hangs up still cancels the upstream call.

Two instances with two workers each share PostgreSQL and a cache (Redis, or the
database's); behind them is our own upstream, whose `progress` tool reports each step.
Every request goes out on a connection of its own, so it may land on any worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from tests.cluster.deployment import (
    Deployment,
    register,
    two_instances,
    upstream_tool_calls,
    wait_until,
)
from tests.support.gunicorn_process import USER
from tests.support.mcp_session import open_session
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

pytestmark = pytest.mark.timeout(120)

JSON = dict[str, Any]
ACCEPT = "application/json, text/event-stream"
TOOL_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningUpstream]:
    running = start_own()
    yield running
    stop_upstream(running)


@pytest.fixture(scope="module", params=["redis", "database"])
def deployment(
    request: pytest.FixtureRequest,
    postgres_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: RunningUpstream,
) -> Iterator[Deployment]:
    """Two instances of two workers sharing a PostgreSQL schema of their own and the cache,
    with our upstream registered; one deployment per cache serves the whole module."""
    with two_instances(request, postgres_base_url, tmp_path_factory, TOOL_TIMEOUT) as deployment:
        asyncio.run(registered(deployment, upstream))
        yield deployment


async def registered(deployment: Deployment, upstream: RunningUpstream) -> None:
    await register(deployment.a.url, upstream.url)
    await deployment.catalogue_version()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


# --- the client side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str | None
    data: bytes
    retry: str | None = None

    @property
    def message(self) -> JSON:
        loaded: JSON = orjson.loads(self.data)
        return loaded


async def next_event(response: aiohttp.ClientResponse, within: float = 15.0) -> Event | None:
    """The next event of an SSE response, or None when the stream has ended."""
    async with asyncio.timeout(within):
        while True:
            block = await response.content.readuntil(b"\n\n")
            if not block.endswith(b"\n\n"):
                return None  # what is left when the stream ends
            fields: dict[bytes, bytes] = {}
            for line in block.strip(b"\n").split(b"\n"):
                if line and not line.startswith(b":"):
                    name, _, value = line.partition(b":")
                    fields[name] = value.removeprefix(b" ")
            if fields:
                retry = fields.get(b"retry")
                event_id = fields.get(b"id")
                return Event(
                    event_id.decode() if event_id is not None else None,
                    fields.get(b"data", b""),
                    retry.decode() if retry is not None else None,
                )


class Session:
    """A client session of our own making, opened on one instance."""

    def __init__(self, http: aiohttp.ClientSession, session_id: str, version: str) -> None:
        self.http = http
        self.id = session_id
        self.version = version

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base: str, version: str) -> Session:
        headers = {**USER, "MCP-Protocol-Version": version}
        return cls(http, await open_session(http, version, f"{base}/mcp", headers), version)

    @property
    def headers(self) -> dict[str, str]:
        return {
            **USER,
            "Accept": ACCEPT,
            "Mcp-Session-Id": self.id,
            "MCP-Protocol-Version": self.version,
        }

    async def progress(self, base: str, request_id: int, steps: int, delay: float) -> Any:
        """Call `own__progress` asking for progress; the open SSE response."""
        params = {
            "name": "own__progress",
            "arguments": {"steps": steps, "delay": delay},
            "_meta": {"progressToken": f"progress-{request_id}"},
        }
        message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        response = await self.http.post(f"{base}/mcp", json=message, headers=self.headers)
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        return response

    async def resume(self, base: str, last_event_id: str) -> aiohttp.ClientResponse:
        headers = {**self.headers, "Accept": "text/event-stream", "Last-Event-ID": last_event_id}
        response = await self.http.get(f"{base}/mcp", headers=headers)
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        return response


async def cancelled_upstream(upstream: RunningUpstream) -> int:
    """Upstream calls stopped by a `notifications/cancelled`."""
    return int((await upstream.stats())["cancelled"])


def number(event_id: str | None) -> int:
    assert event_id is not None
    return int(event_id.rpartition("-")[2])


# --- the tests --------------------------------------------------------------------------------


async def test_a_stream_cut_mid_call_resumes_on_the_other_instance_with_the_rest_and_the_answer(
    deployment: Deployment, http: aiohttp.ClientSession, upstream: RunningUpstream
) -> None:
    cancelled_before = await cancelled_upstream(upstream)
    session = await Session.open(http, deployment.a.url, "2025-11-25")
    response = await session.progress(deployment.a.url, 31, steps=8, delay=0.4)
    primed = await next_event(response)
    assert primed is not None and primed.data == b"" and primed.retry == "1000"
    received = [await next_event(response) for _ in range(2)]
    response.close()
    seen = [event.message["params"]["progress"] for event in received if event is not None]
    assert seen == [1, 2]
    last = received[-1]
    assert last is not None and last.id is not None
    # Some steps happen while nobody listens; the rest after the resumption.
    await asyncio.sleep(1.0)
    resumed = await session.resume(deployment.b.url, last.id)
    head = await next_event(resumed)
    assert head is not None and head.id == last.id and head.data == b""
    events = []
    while (event := await next_event(resumed)) is not None:
        events.append(event)
    *notes, answer = [event.message for event in events]
    assert [note["params"]["progress"] for note in notes] == [3, 4, 5, 6, 7, 8]
    assert all(note["params"]["progressToken"] == "progress-31" for note in notes)
    assert [number(event.id) for event in events] == list(range(number(last.id) + 1, 10))
    assert answer["id"] == 31
    assert answer["result"]["structuredContent"] == {"steps": 8}
    assert await cancelled_upstream(upstream) == cancelled_before


async def test_a_call_that_ended_while_nobody_listened_is_replayed_in_full_on_any_worker(
    deployment: Deployment, http: aiohttp.ClientSession, upstream: RunningUpstream
) -> None:
    answered_before = await upstream_tool_calls(upstream.base_url)
    session = await Session.open(http, deployment.b.url, "2025-11-25")
    response = await session.progress(deployment.b.url, 32, steps=3, delay=0.2)
    primed = await next_event(response)
    response.close()
    assert primed is not None and primed.id is not None

    async def answered() -> bool:
        return await upstream_tool_calls(upstream.base_url) > answered_before

    await wait_until(answered, within=10.0, what="the upstream answering")
    resumed = await session.resume(deployment.a.url, primed.id)
    events = []
    while (event := await next_event(resumed)) is not None:
        events.append(event)
    assert events[0].data == b"" and events[0].id == primed.id
    messages = [event.message for event in events[1:]]
    assert [m["params"]["progress"] for m in messages[:3]] == [1, 2, 3]
    assert messages[3]["id"] == 32 and messages[3]["result"]["structuredContent"] == {"steps": 3}
    assert len(messages) == 4


async def test_a_2025_06_18_client_that_hangs_up_still_cancels_the_upstream_call(
    deployment: Deployment, http: aiohttp.ClientSession, upstream: RunningUpstream
) -> None:
    before = await cancelled_upstream(upstream)
    session = await Session.open(http, deployment.a.url, "2025-06-18")
    response = await session.progress(deployment.a.url, 33, steps=100, delay=0.2)
    first = await next_event(response)
    assert first is not None and first.id is None
    assert first.message["params"]["progress"] == 1
    response.close()

    async def cancelled() -> bool:
        return await cancelled_upstream(upstream) > before

    await wait_until(cancelled, within=10.0, what="the upstream call cancelled")
