"""The `sse` backend (the 2024-11-05 HTTP+SSE transport) against real upstream
processes: our aiohttp server with `--legacy-sse`, the official SDK's SSE server, and a few
deliberately odd loopback servers. End to end: tools, resources, prompts, completion,
progress routed by token, log messages, cancellation, the listener, dropped streams."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from gateway.contracts import (
    JSON,
    BackendError,
    BackendSpec,
    FullBackend,
    UpstreamConfig,
    UpstreamError,
)
from gateway.plugins import Registrar
from gateway.settings import Settings
from gateway_plugins.backend_mcp_sse import gateway_register_backends
from tests.backends.conftest import BASE_TOOLS, UpstreamFactory, backend_for, served
from tests.upstreams.fixtures import Recorder, stat_is
from tests.upstreams.processes import RunningUpstream, free_port

# --- registration --------------------------------------------------------------------------


def test_plugin_registers_the_sse_backend_under_its_transport_name() -> None:
    register: Registrar[BackendSpec] = Registrar("backend")
    gateway_register_backends(register)
    spec = register.select("transport", "sse")
    assert spec.transport == "sse"
    assert spec.description
    backend = spec.factory(UpstreamConfig("u", "sse", "http://127.0.0.1:1/sse"), Settings())
    assert isinstance(backend, FullBackend)


# --- end to end on our server --------------------------------------------------------------


async def test_tools_are_listed_across_pages_and_called(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        tools = await backend.list_tools()
        echo = await backend.call_tool("echo", {"text": "over legacy sse"}, timeout=5)
        failed = await backend.call_tool("fail", {}, timeout=5)
        big = await backend.call_tool("big", {"n": 300_000}, timeout=10)
        with pytest.raises(UpstreamError) as caught:
            await backend.call_tool("missing", {}, timeout=5)
    assert [tool.name for tool in tools] == BASE_TOOLS
    assert tools[0].title == "Echo" and tools[0].input_schema["required"] == ["text"]
    assert echo["structuredContent"] == {"text": "over legacy sse"}
    assert failed["isError"] is True
    assert len(big["content"][0]["text"]) == 300_000
    assert (caught.value.code, caught.value.upstream_message) == (-32602, "Unknown tool: missing")
    counts = await own_upstream_legacy.stats()
    assert (counts["initialize"], counts["initialized_notifications"]) == (1, 1)
    assert (counts["sse_connections"], counts["tools_list"]) == (1, 4)


async def test_the_session_is_initialised_at_protocol_2024_11_05_with_capabilities(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        assert backend.capabilities == {}
        await backend.request("ping", None, 5)
        assert backend.capabilities["resources"] == {"subscribe": True, "listChanged": True}


async def test_concurrent_requests_are_matched_to_their_replies_by_id(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        results = await asyncio.gather(
            *(backend.call_tool("add", {"a": i, "b": 0.5}, timeout=10) for i in range(40))
        )
    assert [r["structuredContent"]["sum"] for r in results] == [i + 0.5 for i in range(40)]
    assert (await own_upstream_legacy.stats())["initialize"] == 1


async def test_resources_templates_and_prompts_are_listed_across_pages(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--legacy-sse", "--page-size", "1")
    async with backend_for("sse", upstream.sse_url) as backend:
        resources = await backend.list_resources()
        templates = await backend.list_resource_templates()
        prompts = await backend.list_prompts()
    assert [r.uri for r in resources] == ["memo://one", "memo://two", "memo://blob"]
    assert [t.uri_template for t in templates] == ["memo://items/{id}"]
    assert [p.name for p in prompts] == ["greeting", "summary"]
    counts = await upstream.stats()
    assert (counts["resources_list"], counts["prompts_list"]) == (3, 2)


async def test_lists_are_empty_without_the_capability(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--legacy-sse", "--tools-only")
    async with backend_for("sse", upstream.sse_url) as backend:
        assert await backend.list_resources() == []
        assert await backend.list_prompts() == []
    assert (await upstream.stats())["resources_list"] == 0


async def test_resources_are_read_prompts_got_and_arguments_completed(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        one = await backend.request("resources/read", {"uri": "memo://one"}, 5)
        blob = await backend.request("resources/read", {"uri": "memo://blob"}, 5)
        item = await backend.request("resources/read", {"uri": "memo://items/7"}, 5)
        prompt = await backend.request(
            "prompts/get", {"name": "greeting", "arguments": {"name": "Grace"}}, 5
        )
        completion = await backend.request(
            "completion/complete",
            {
                "ref": {"type": "ref/resource", "uri": "memo://items/{id}"},
                "argument": {"name": "id", "value": "1"},
            },
            5,
        )
        with pytest.raises(UpstreamError) as unknown:
            await backend.request("prompts/get", {"name": "nope"}, 5)
    assert one["contents"][0]["text"] == "The first memo says hello."
    assert base64.b64decode(blob["contents"][0]["blob"]) == bytes(range(16))
    assert item["contents"][0]["text"] == "Item 7 is here."
    assert prompt["messages"][0]["content"]["text"] == "Please greet Grace warmly."
    assert completion["completion"]["values"] == ["1", "10", "11"]
    assert unknown.value.code == -32602


# --- progress, logging ---------------------------------------------------------------------


async def test_progress_reaches_on_notification_in_order_before_the_result(
    own_upstream_legacy: RunningUpstream,
) -> None:
    events: list[Any] = []

    async def on_notification(method: str, params: JSON) -> None:
        events.append((method, params["progressToken"], params["progress"]))

    params = {
        "name": "progress",
        "arguments": {"steps": 3, "delay": 0.02},
        "_meta": {"progressToken": 7},
    }
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        result = await backend.request("tools/call", params, 5, on_notification)
        events.append(result["structuredContent"])
    assert events == [("notifications/progress", 7, step) for step in (1, 2, 3)] + [{"steps": 3}]


async def test_progress_of_concurrent_requests_with_the_same_caller_token_is_kept_apart(
    own_upstream_legacy: RunningUpstream,
) -> None:
    """Two callers may pick the same token; each request still gets only its own progress,
    under the caller's token."""
    recorders = [Recorder(), Recorder()]

    async def run(backend: FullBackend, steps: int, recorder: Recorder) -> JSON:
        params = {
            "name": "progress",
            "arguments": {"steps": steps, "delay": 0.01},
            "_meta": {"progressToken": "same"},
        }
        return await backend.request("tools/call", params, 10, recorder)

    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        await asyncio.gather(run(backend, 3, recorders[0]), run(backend, 5, recorders[1]))
    for recorder, steps in zip(recorders, (3, 5), strict=True):
        progress = recorder.of("notifications/progress")
        assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
            ("same", step, steps) for step in range(1, steps + 1)
        ]


async def test_on_notification_without_a_caller_token_gets_a_token_of_the_backend(
    own_upstream_legacy: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        params = {"name": "progress", "arguments": {"steps": 2}}
        await backend.request("tools/call", params, 5, recorder)
        assert "_meta" not in params
    tokens = {p["progressToken"] for p in recorder.of("notifications/progress")}
    assert len(recorder.of("notifications/progress")) == 2 and len(tokens) == 1


async def test_a_log_message_naming_no_request_goes_to_the_one_request_in_progress(
    own_upstream_legacy: RunningUpstream,
) -> None:
    listener, on_notification = Recorder(), Recorder()
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        backend.set_listener(listener)
        await backend.request("logging/setLevel", {"level": "notice"}, 5)
        for level in ("debug", "alert"):
            arguments = {"level": level, "message": f"at {level}"}
            params = {"name": "log", "arguments": arguments}
            await backend.request("tools/call", params, 5, on_notification)
    assert on_notification.of("notifications/message") == [
        {"level": "alert", "logger": "own-upstream", "data": "at alert"}
    ]
    assert listener.of("notifications/message") == []


# --- cancellation and failures -------------------------------------------------------------


async def test_cancelling_the_caller_sends_notifications_cancelled_upstream(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        task = asyncio.create_task(backend.call_tool("sleep", {"seconds": 30}, timeout=60))
        await stat_is(own_upstream_legacy, "tools_call", 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stat_is(own_upstream_legacy, "cancelled", 1)
        assert (await backend.call_tool("echo", {"text": "ok"}, timeout=5))["isError"] is False


async def test_timeout_raises_backend_error_and_cancels_upstream(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url, name="slow") as backend:
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"^upstream 'slow' did not answer within 0\.3s"):
            await backend.call_tool("sleep", {"seconds": 30}, timeout=0.3)
        assert time.monotonic() - started < 1.5
        await stat_is(own_upstream_legacy, "cancelled", 1)


async def test_dropped_stream_fails_waiting_requests_and_the_next_one_reconnects(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url, name="flaky") as backend:
        waiting = asyncio.create_task(backend.call_tool("sleep", {"seconds": 30}, timeout=60))
        await stat_is(own_upstream_legacy, "tools_call", 1)
        await own_upstream_legacy.admin("POST", "/admin/drop-streams")
        with pytest.raises(BackendError) as caught:
            await waiting
        assert str(caught.value) == (
            "upstream 'flaky' closed its event stream before answering tools/call"
        )
        result = await backend.call_tool("echo", {"text": "again"}, timeout=5)
    assert result["structuredContent"] == {"text": "again"}
    counts = await own_upstream_legacy.stats()
    assert (counts["sse_connections"], counts["initialize"]) == (2, 2)


async def test_unreachable_upstream_raises_backend_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/sse"
    async with backend_for("sse", url, name="gone") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'gone' could not be reached at .*"):
            await backend.list_tools()


async def test_configured_headers_are_sent_on_the_stream_and_every_post(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--legacy-sse", "--require-header", "X-Api-Key=k1")
    async with backend_for("sse", upstream.sse_url, headers={"X-Api-Key": "k1"}) as backend:
        assert (await backend.call_tool("echo", {"text": "ok"}, timeout=5))["isError"] is False
    async with backend_for("sse", upstream.sse_url, name="locked") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'locked' answered HTTP 401 "):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)


# --- the listener --------------------------------------------------------------------------


async def test_listener_receives_list_changed_and_resource_updates(
    own_upstream_legacy: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        backend.set_listener(recorder)
        await backend.request("resources/subscribe", {"uri": "memo://items/3"}, 5)
        await own_upstream_legacy.admin("POST", "/admin/list-changed?kind=resources")
        await own_upstream_legacy.admin("POST", "/admin/update-resource?uri=memo://items/3")
        await recorder.received("notifications/resources/updated")
    assert recorder.seen == [
        ("notifications/resources/list_changed", {}),
        ("notifications/resources/updated", {"uri": "memo://items/3"}),
    ]


async def test_with_a_listener_a_dropped_stream_is_reopened_in_the_background(
    own_upstream_legacy: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        backend.set_listener(recorder)
        await backend.list_tools()
        await own_upstream_legacy.admin("POST", "/admin/drop-streams")
        # No request is made: the backend reconnects and initialises by itself.
        await stat_is(own_upstream_legacy, "sse_connections", 2)
        await stat_is(own_upstream_legacy, "initialize", 2)
        await stat_is(own_upstream_legacy, "sessions", 1)
        await own_upstream_legacy.admin("POST", "/admin/list-changed?kind=tools")
        await recorder.received("notifications/tools/list_changed")
    await stat_is(own_upstream_legacy, "sessions", 0)


# --- odd servers ---------------------------------------------------------------------------


@asynccontextmanager
async def legacy_stub(
    endpoint: str, sse_path: str = "/sse", post_path: str = "/messages"
) -> AsyncIterator[tuple[str, list[JSON]]]:
    """A minimal HTTP+SSE server in this process that sends `endpoint` as its endpoint
    event and answers `initialize` and `ping`; yields its SSE URL and the messages posted."""
    posted: list[JSON] = []
    streams: list[asyncio.Queue[bytes]] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        streams.append(queue)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"event: endpoint\ndata: {endpoint}\n\n".encode())
        while True:
            await response.write(await queue.get())

    async def post(request: web.Request) -> web.Response:
        message = await request.json()
        posted.append(message)
        if "id" in message:
            result: JSON = {}
            if message["method"] == "initialize":
                result = {"protocolVersion": "2024-11-05", "capabilities": {}}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            streams[-1].put_nowait(f"event: message\ndata: {json.dumps(reply)}\n\n".encode())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_get(sse_path, stream)
    app.router.add_post(post_path, post)
    async with served(app) as base_url:
        yield f"{base_url}{sse_path}", posted


async def test_relative_endpoint_is_resolved_against_the_stream_url() -> None:
    async with (
        legacy_stub("post-here?s=1", sse_path="/base/sse", post_path="/base/post-here") as (
            url,
            posted,
        ),
        backend_for("sse", url) as backend,
    ):
        assert await backend.request("ping", None, 5) == {}
    assert [message["method"] for message in posted] == [
        "initialize",
        "notifications/initialized",
        "ping",
    ]
    # The newest version is offered; this stub's answer, 2024-11-05, is taken (the ping
    # went out in that session).
    assert posted[0]["params"]["protocolVersion"] == "2025-11-25"


async def test_endpoint_on_another_origin_is_refused() -> None:
    other = f"http://127.0.0.1:{free_port()}/messages"
    async with legacy_stub(other) as (url, posted), backend_for("sse", url, name="sly") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.request("ping", None, 5)
    assert str(caught.value) == f"upstream 'sly' named an endpoint on another origin: {other}"
    assert posted == []


async def test_stream_url_answering_404_raises_backend_error_with_the_status() -> None:
    async with legacy_stub("/messages") as (url, _):
        async with backend_for("sse", url.replace("/sse", "/nope"), name="lost") as backend:
            with pytest.raises(BackendError, match=r"^upstream 'lost' answered HTTP 404 "):
                await backend.list_tools()


# --- the official SDK's SSE server ---------------------------------------------------------


async def test_sdk_sse_server_serves_tools_resources_prompts_and_progress(
    sdk_upstream_legacy: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("sse", sdk_upstream_legacy.sse_url, name="sdk") as backend:
        tools = {tool.name for tool in await backend.list_tools()}
        greeting = await backend.call_tool("greet", {"name": "Ada"}, timeout=10)
        resources = await backend.list_resources()
        templates = await backend.list_resource_templates()
        prompts = await backend.list_prompts()
        item = await backend.request("resources/read", {"uri": "memo://sdk/items/9"}, 10)
        haiku = await backend.request(
            "prompts/get", {"name": "haiku", "arguments": {"topic": "snow"}}, 10
        )
        counted = await backend.request(
            "tools/call", {"name": "count", "arguments": {"steps": 3}}, 10, recorder
        )
    assert tools == {"greet", "multiply", "count"}
    assert greeting["content"] == [{"type": "text", "text": "Hello, Ada!"}]
    assert [r.uri for r in resources] == ["memo://sdk/readme"]
    assert [t.uri_template for t in templates] == ["memo://sdk/items/{item_id}"]
    assert [p.name for p in prompts] == ["haiku"]
    assert item["contents"][0]["text"] == "SDK item 9"
    assert haiku["messages"][0]["content"]["text"] == "Write a haiku about snow."
    assert [p["progress"] for p in recorder.of("notifications/progress")] == [1, 2, 3]
    assert counted["content"][0]["text"] == "counted to 3"


async def test_failing_on_notification_fails_only_its_request_and_cancels_it_upstream(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async def on_notification(method: str, params: JSON) -> None:
        raise RuntimeError("client gone")

    params = {"name": "progress", "arguments": {"steps": 50, "delay": 0.05}}
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        other = asyncio.create_task(backend.call_tool("sleep", {"seconds": 0.5}, timeout=10))
        with pytest.raises(RuntimeError, match="client gone"):
            await backend.request("tools/call", params, 10, on_notification)
        await stat_is(own_upstream_legacy, "cancelled", 1)
        assert (await other)["content"][0]["text"] == "slept 0.5s"


async def test_notify_posts_a_notification_on_the_session(
    own_upstream_legacy: RunningUpstream,
) -> None:
    async with backend_for("sse", own_upstream_legacy.sse_url) as backend:
        await backend.notify("notifications/cancelled", {"requestId": 999, "reason": "test"})
    counts = await own_upstream_legacy.stats()
    assert (counts["cancel_notifications"], counts["cancelled"]) == (1, 0)
