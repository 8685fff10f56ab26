"""A 2025-11-25 upstream may end a reply's event stream before the answer, once it has given
the stream an event id (SEP-1699); the Streamable HTTP backend then resumes it with a GET
carrying `Last-Event-ID`, after the server's `retry`. Proved against the official SDK's
server (its `close_sse_stream()`), through the gateway with the SDK's client, and against
small servers here that end streams in every way the rule allows and some it does not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.contracts import BackendError
from tests.backends.conftest import backend_for, served
from tests.conftest import GatewayFactory
from tests.support.sdk import sdk_client
from tests.upstreams.fixtures import Recorder
from tests.upstreams.processes import RunningUpstream, start_sdk, stop_upstream

SESSION = "resumable-session"


@pytest.fixture(scope="module")
def resumable_sdk_upstream() -> Iterator[RunningUpstream]:
    """The SDK's server with an event store, whose `interrupted_count` ends its reply's
    stream after the first step."""
    upstream = start_sdk("--resumable")
    yield upstream
    stop_upstream(upstream)


# --- the official SDK's server -----------------------------------------------------------


async def test_a_reply_stream_the_sdk_server_ends_early_is_resumed_to_its_answer(
    resumable_sdk_upstream: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("streamable-http", resumable_sdk_upstream.url, name="sdk") as backend:
        result = await backend.request(
            "tools/call",
            {"name": "interrupted_count", "arguments": {"steps": 4}, "_meta": {"progressToken": 1}},
            10,
            on_notification=recorder,
        )
        # The session carries on as before: a plain call after the resumed one.
        again = await backend.call_tool("greet", {"name": "Ada"}, timeout=10)
    assert result["content"][0]["text"] == "counted to 4 across a resumed stream"
    progress = [p["progress"] for p in recorder.of("notifications/progress")]
    assert progress == [1, 2, 3, 4]  # each step once, in order, across the two streams
    assert again["content"] == [{"type": "text", "text": "Hello, Ada!"}]


async def test_an_sdk_client_gets_the_answer_of_a_resumed_reply_through_the_gateway(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    resumable_sdk_upstream: RunningUpstream,
) -> None:
    client = await gateway(tool_timeout=10.0)
    upstream = {"name": "sdk", "url": resumable_sdk_upstream.url, "transport": "streamable-http"}
    registered = await client.post("/upstreams", json=upstream, headers=admin_headers)
    assert registered.status == 201, await registered.text()
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with sdk_client(str(client.make_url("/mcp")), "legacy", headers=user_headers) as mcp:
        result = await mcp.call_tool(
            "sdk__interrupted_count", {"steps": 3}, progress_callback=on_progress
        )
    assert not result.is_error
    assert result.content[0].text == "counted to 3 across a resumed stream"  # type: ignore[union-attr]
    assert seen == [1, 2, 3]


# --- servers that end streams in other ways ----------------------------------------------


class Scripted:
    """An upstream whose `tools/call` reply stream and resumed streams follow a script:
    `post` is the events of the POST's stream, `gets` those of each GET in turn (an int
    instead is the HTTP status to answer that GET with). Each event is (id, data, retry);
    a data of `None` means the tool's answer. Every GET's headers and time are kept."""

    def __init__(self, post: list[Any], gets: list[Any]) -> None:
        self.post = post
        self.gets = gets
        self.requests: list[tuple[float, dict[str, str]]] = []
        self.call_id: Any = None
        self.post_ended = self.stream_ended = 0.0

    async def handle_post(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}}
            return web.json_response(
                {"jsonrpc": "2.0", "id": message["id"], "result": result},
                headers={"Mcp-Session-Id": SESSION},
            )
        self.call_id = message["id"]
        response = await self.stream(request, self.post)
        self.post_ended = self.stream_ended
        return response

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((time.monotonic(), dict(request.headers)))
        if "Last-Event-ID" not in request.headers:
            return web.Response(status=405)  # no listening stream here
        script = self.gets.pop(0) if self.gets else []
        if isinstance(script, int):
            return web.json_response({"error": "no"}, status=script)
        return await self.stream(request, script)

    async def stream(self, request: web.Request, events: list[Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event_id, data, retry in events:
            if data is None:
                answer = {"content": [{"type": "text", "text": "done"}], "isError": False}
                data = orjson.dumps({"jsonrpc": "2.0", "id": self.call_id, "result": answer})
            lines = [f"id: {event_id}"] if event_id is not None else []
            if retry is not None:
                lines.append(f"retry: {retry}")
            lines.append(f"data: {data.decode() if isinstance(data, bytes) else data}")
            await response.write(("\n".join(lines) + "\n\n").encode())
        # Taken before the end is sent: the client cannot see the end any earlier.
        self.stream_ended = time.monotonic()
        await response.write_eof()
        return response

    @property
    def resumed_from(self) -> list[str]:
        return [
            headers["Last-Event-ID"] for _, headers in self.requests if "Last-Event-ID" in headers
        ]


@pytest.fixture
async def scripted() -> AsyncIterator[Any]:
    started: list[Any] = []

    async def start(post: list[Any], gets: list[Any]) -> tuple[Scripted, str]:
        script = Scripted(post, gets)
        app = web.Application()
        app.router.add_post("/mcp", script.handle_post)
        app.router.add_get("/mcp", script.handle_get)
        context = served(app)
        base = await context.__aenter__()
        started.append(context)
        return script, f"{base}/mcp"

    yield start
    for context in reversed(started):
        await context.__aexit__(None, None, None)


def progress(step: int) -> bytes:
    params = {"progressToken": "t", "progress": step}
    return orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


async def test_a_resumption_names_the_last_event_id_and_waits_the_servers_retry(
    scripted: Any,
) -> None:
    script, url = await scripted(
        post=[("p-1", "", 150), ("p-2", progress(1), None)],
        gets=[[("g-1", "", None), ("g-2", progress(2), None)], [("g-3", None, None)]],
    )
    recorder = Recorder()
    async with backend_for("streamable-http", url, name="scripted", headers={"X-Key": "k"}) as b:
        result = await b.request(
            "tools/call",
            {"name": "x", "arguments": {}, "_meta": {"progressToken": "t"}},
            10,
            on_notification=recorder,
        )
    assert result["content"] == [{"type": "text", "text": "done"}]
    assert [p["progress"] for p in recorder.of("notifications/progress")] == [1, 2]
    # Each resumption starts after the newest event seen, on whichever stream it came.
    assert script.resumed_from == ["p-2", "g-2"]
    first_get, headers = script.requests[0]
    assert first_get - script.post_ended >= 0.14  # the server's retry: 150 ms
    assert headers["Mcp-Session-Id"] == SESSION
    assert headers["MCP-Protocol-Version"] == "2025-11-25"
    assert headers["Accept"] == "text/event-stream"
    assert headers["X-Key"] == "k"
    assert "Content-Type" not in headers and "Content-Length" not in headers


async def test_a_reply_stream_ended_without_an_event_id_fails_the_request_at_once(
    scripted: Any,
) -> None:
    script, url = await scripted(post=[(None, progress(1), None)], gets=[])
    async with backend_for("streamable-http", url, name="scripted") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("x", {}, timeout=10)
    assert str(caught.value) == (
        "upstream 'scripted' ended its event stream without answering tools/call"
    )
    assert script.resumed_from == []


async def test_a_refused_resumption_fails_the_request_naming_the_status(scripted: Any) -> None:
    script, url = await scripted(post=[("p-1", "", 0)], gets=[404])
    async with backend_for("streamable-http", url, name="scripted") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("x", {}, timeout=10)
    assert str(caught.value).startswith(
        "upstream 'scripted' answered HTTP 404 Not Found to GET (resuming tools/call)"
    )
    assert script.resumed_from == ["p-1"]


async def test_resumptions_that_bring_nothing_fail_the_request_after_three(
    scripted: Any,
) -> None:
    # A server asking for no wait at all still gets the least one, not a busy loop.
    script, url = await scripted(post=[("p-1", "", 0)], gets=[[], [], [], [], []])
    started = time.monotonic()
    async with backend_for("streamable-http", url, name="scripted") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("x", {}, timeout=10)
    assert str(caught.value) == (
        "upstream 'scripted' ended its event stream without answering tools/call, "
        "and 3 resumptions of it brought nothing"
    )
    assert script.resumed_from == ["p-1", "p-1", "p-1"]
    # Three waits of at least 50 ms each (a timer may fire a clock tick early).
    assert time.monotonic() - started >= 0.14


async def test_resumptions_go_on_while_each_brings_a_new_event_id(scripted: Any) -> None:
    # A server polled through a long call: every resumed stream only primes and ends.
    polls = [[(f"g-{n}", "", 0)] for n in range(6)]
    script, url = await scripted(post=[("p-1", "", 0)], gets=[*polls, [("g-9", None, None)]])
    async with backend_for("streamable-http", url, name="scripted") as backend:
        result = await backend.call_tool("x", {}, timeout=10)
    assert result["content"] == [{"type": "text", "text": "done"}]
    assert script.resumed_from == ["p-1", *(f"g-{n}" for n in range(6))]


async def test_a_resumed_stream_that_is_not_an_event_stream_fails_the_request(
    scripted: Any,
) -> None:
    script, url = await scripted(post=[("p-1", "", 0)], gets=[200])
    async with backend_for("streamable-http", url, name="scripted") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("x", {}, timeout=10)
    assert str(caught.value) == (
        "upstream 'scripted' answered GET (resuming tools/call) with application/json, "
        "not an event stream"
    )
    assert script.resumed_from == ["p-1"]
