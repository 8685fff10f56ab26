"""The `streamable-http` backend against real upstream processes: our aiohttp server in JSON and
SSE modes, the official SDK's server, and a few deliberately broken loopback servers.
Covers the whole `FullBackend`: catalogues, any request with its progress and log
notifications, cancellation, and the listening stream for the upstream's own notifications."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.cli import main
from gateway.contracts import (
    JSON,
    Backend,
    BackendError,
    BackendSpec,
    FullBackend,
    UpstreamConfig,
    UpstreamError,
)
from gateway.plugins import Registrar
from gateway.settings import Settings
from gateway_plugins.backend_mcp_http import gateway_register_backends
from tests.backends.conftest import (
    BASE_TOOLS,
    Handler,
    UpstreamFactory,
    backend_for,
    serving_mcp,
)
from tests.upstreams.fixtures import Recorder, eventually, stat_is
from tests.upstreams.processes import RunningUpstream, free_port

# --- registration --------------------------------------------------------------------------


def test_plugin_registers_the_streamable_http_backend_under_its_transport_name() -> None:
    register: Registrar[BackendSpec] = Registrar("backend")
    gateway_register_backends(register)
    spec = register.select("transport", "streamable-http")
    assert spec.transport == "streamable-http"
    assert spec.description
    backend = spec.factory(
        UpstreamConfig("u", "streamable-http", "http://127.0.0.1:1/mcp"), Settings()
    )
    assert isinstance(backend, Backend)
    assert isinstance(backend, FullBackend)


def test_check_lists_the_built_in_backends_by_the_transports_upstreams_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check"]) == 0
    listed = capsys.readouterr().out.strip().rpartition("; backends: ")[2].split(", ")
    assert {"streamable-http", "sse"} <= set(listed)


# --- discovery -----------------------------------------------------------------------------


async def test_list_tools_follows_every_next_cursor(own_upstream_factory: UpstreamFactory) -> None:
    upstream = own_upstream_factory("--tools", "25", "--page-size", "2")
    async with backend_for("streamable-http", upstream.url) as backend:
        tools = await backend.list_tools()
    names = [tool.name for tool in tools]
    assert names == [*BASE_TOOLS, *(f"t{i}" for i in range(25))]
    assert (await upstream.stats())["tools_list"] == 16


async def test_list_tools_maps_schema_title_output_schema_and_annotations(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        tools = {tool.name: tool for tool in await backend.list_tools()}
    echo = tools["echo"]
    assert echo.input_schema["required"] == ["text"]
    assert echo.description == "Return the text it is given."
    assert echo.title == "Echo"
    assert echo.output_schema is not None and "text" in echo.output_schema["properties"]
    assert echo.annotations == {"readOnlyHint": True, "idempotentHint": True}
    assert tools["fail"].title is None and tools["fail"].output_schema is None


# --- calls ---------------------------------------------------------------------------------


async def test_call_echo_returns_content_and_structured_content(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        result = await backend.call_tool("echo", {"text": "hello"}, timeout=5)
    assert result == {
        "content": [{"type": "text", "text": "hello"}],
        "isError": False,
        "structuredContent": {"text": "hello"},
    }


async def test_tool_failure_comes_back_as_is_error_result(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        result = await backend.call_tool("fail", {}, timeout=5)
    assert result["isError"] is True
    assert result["content"][0]["text"] == "this tool always fails"


async def test_json_rpc_error_raises_upstream_error_with_code_and_message(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        with pytest.raises(UpstreamError) as caught:
            await backend.call_tool("missing", {}, timeout=5)
    assert caught.value.code == -32602
    assert caught.value.upstream_message == "Unknown tool: missing"
    assert str(caught.value) == "upstream 'own' answered with error -32602: Unknown tool: missing"


async def test_request_returns_the_json_rpc_result_of_any_method(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        assert await backend.request("ping", None, timeout=5) == {}


async def test_large_result_arrives_whole(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        result = await backend.call_tool("big", {"n": 2_000_000}, timeout=10)
    assert len(result["content"][0]["text"]) == 2_000_000


# --- the MCP session -----------------------------------------------------------------------


async def test_fifty_concurrent_first_calls_initialise_one_session(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        results = await asyncio.gather(
            *(backend.call_tool("add", {"a": i, "b": 1}, timeout=10) for i in range(50))
        )
    assert [r["structuredContent"]["sum"] for r in results] == [i + 1 for i in range(50)]
    counts = await own_upstream.stats()
    assert counts["initialize"] == 1
    assert counts["initialized_notifications"] == 1
    assert counts["tools_call"] == 50


async def test_sequential_calls_reuse_kept_alive_connections(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        for _ in range(50):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)
    assert (await own_upstream.stats())["connections"] == 1


async def test_expired_session_is_reinitialised_transparently(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "before"}, timeout=5)
        assert (await own_upstream.admin("POST", "/admin/expire-sessions"))["expired"] == 1
        result = await backend.call_tool("echo", {"text": "after"}, timeout=5)
    assert result["structuredContent"] == {"text": "after"}
    counts = await own_upstream.stats()
    assert counts["initialize"] == 2
    assert counts["tools_call"] == 2


async def test_many_calls_on_an_expired_session_reinitialise_it_once(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "warm"}, timeout=5)
        await own_upstream.admin("POST", "/admin/expire-sessions")
        await asyncio.gather(
            *(backend.call_tool("echo", {"text": str(i)}, timeout=10) for i in range(30))
        )
    assert (await own_upstream.stats())["initialize"] == 2


async def test_session_forgotten_after_ttl_is_reinitialised(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--session-ttl", "1")
    async with backend_for("streamable-http", upstream.url) as backend:
        await backend.call_tool("echo", {"text": "a"}, timeout=5)
        await asyncio.sleep(1.3)
        await backend.call_tool("echo", {"text": "b"}, timeout=5)
    assert (await upstream.stats())["initialize"] == 2


async def test_close_ends_the_upstream_session(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "x"}, timeout=5)
        assert (await own_upstream.stats())["sessions"] == 1
    counts = await own_upstream.stats()
    assert counts["sessions"] == 0
    assert counts["sessions_deleted"] == 1


# --- SSE replies ---------------------------------------------------------------------------


async def test_sse_replies_are_read_to_the_matching_response(
    own_upstream_sse: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream_sse.url) as backend:
        tools = await backend.list_tools()
        echo = await backend.call_tool("echo", {"text": "over sse"}, timeout=5)
        big = await backend.call_tool("big", {"n": 500_000}, timeout=10)
        failed = await backend.call_tool("fail", {}, timeout=5)
    assert len(tools) == len(BASE_TOOLS)
    assert echo["structuredContent"] == {"text": "over sse"}
    assert len(big["content"][0]["text"]) == 500_000
    assert failed["isError"] is True
    assert (await own_upstream_sse.stats())["initialize"] == 1


# --- configured headers --------------------------------------------------------------------


async def test_configured_headers_are_sent_on_every_request(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--require-header", "Authorization=Bearer s3cret")
    headers = {"Authorization": "Bearer s3cret"}
    async with backend_for("streamable-http", upstream.url, headers=headers) as backend:
        assert len(await backend.list_tools()) == len(BASE_TOOLS)
        result = await backend.call_tool("echo", {"text": "authorised"}, timeout=5)
    assert result["structuredContent"] == {"text": "authorised"}


async def test_missing_header_raises_backend_error_with_the_http_status(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--require-header", "Authorization=Bearer s3cret")
    async with backend_for("streamable-http", upstream.url, name="locked") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'locked' answered HTTP 401 "):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)


# --- failures ------------------------------------------------------------------------------


async def test_timeout_raises_backend_error_naming_the_upstream_within_the_bound(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url, name="slow") as backend:
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"^upstream 'slow' did not answer within 0\.5s"):
            await backend.call_tool("sleep", {"seconds": 5}, timeout=0.5)
        assert time.monotonic() - started < 1.5
        # The session survives a timed-out call.
        assert (await backend.call_tool("echo", {"text": "ok"}, timeout=5))["isError"] is False


async def test_unreachable_upstream_raises_backend_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with backend_for("streamable-http", url, name="gone") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'gone' could not be reached at "):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)


async def test_list_tools_on_unreachable_upstream_raises_backend_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with backend_for("streamable-http", url, name="gone") as backend:
        with pytest.raises(BackendError, match="Connection refused"):
            await backend.list_tools()


@pytest.fixture
async def stub_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A deliberately broken upstream in this process; returns its MCP URL."""
    async with AsyncExitStack() as stack:

        async def start(handler: Handler) -> str:
            return await stack.enter_async_context(serving_mcp(handler, "POST"))

        yield start


async def test_invalid_json_raises_backend_error(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url, name="garbled") as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("echo", {}, timeout=5)
    assert str(caught.value) == "upstream 'garbled' sent invalid JSON in reply to initialize"


async def test_every_request_after_initialize_carries_session_and_version_headers(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        message = await request.json()
        seen.append((message["method"], dict(request.headers)))
        if "id" not in message:
            return web.Response(status=202)
        result: dict[str, Any] = {}
        if message["method"] == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}}
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        return web.json_response(reply, headers={"Mcp-Session-Id": "abc"})

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url, headers={"X-Api-Key": "k"}) as backend:
        await backend.request("ping", None, timeout=5)
        await backend.request("ping", None, timeout=5)
    assert [method for method, _ in seen] == [
        "initialize",
        "notifications/initialized",
        "ping",
        "ping",
    ]
    assert seen[0][0] == "initialize"
    assert "Mcp-Session-Id" not in seen[0][1] and "MCP-Protocol-Version" not in seen[0][1]
    for _, headers in seen:
        assert headers["X-Api-Key"] == "k"
        assert headers["Accept"] == "application/json, text/event-stream"
    for _, headers in seen[1:]:
        assert headers["Mcp-Session-Id"] == "abc"
        assert headers["MCP-Protocol-Version"] == "2025-11-25"


async def test_unsupported_protocol_version_raises_backend_error(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        message = await request.json()
        result = {"protocolVersion": "1999-01-01", "capabilities": {}, "serverInfo": {}}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url, name="old") as backend:
        with pytest.raises(BackendError, match="unsupported protocol version '1999-01-01'"):
            await backend.list_tools()


async def test_connection_closed_without_answer_raises_backend_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with backend_for(
            "streamable-http", f"http://127.0.0.1:{port}/mcp", name="rude"
        ) as backend:
            with pytest.raises(BackendError, match=r"^upstream 'rude' closed the connection"):
                await backend.call_tool("echo", {}, timeout=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_sse_with_cr_line_endings_and_other_events_is_parsed(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    """A stream using bare CR, written in small pieces, with a ping event, a comment, a
    server request and a reply to another id before ours."""

    async def handler(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2025-03-26", "capabilities": {}}
        else:
            result = {"content": [{"type": "text", "text": "a\nb"}], "isError": False}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        reply = f'{{"jsonrpc":"2.0",\r"id":{message["id"]},\r"result":'
        stream = (
            ":comment\revent: ping\rdata: {}\r\r"
            'data: {"jsonrpc":"2.0","id":"srv-1","method":"ping"}\r\r'
            f'data: {{"jsonrpc":"2.0","id":{message["id"] + 1000},"result":{{}}}}\r\r'
            + "".join(f"data: {line}\r" for line in reply.split("\r"))
            + f"data: {json.dumps(result)}}}\r\r"
        ).encode()
        for i in range(0, len(stream), 7):
            await response.write(stream[i : i + 7])
        await response.write_eof()
        return response

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url) as backend:
        result = await backend.call_tool("x", {}, timeout=5)
    assert result == {"content": [{"type": "text", "text": "a\nb"}], "isError": False}


# --- the official SDK's server -------------------------------------------------------------


async def test_sdk_server_tools_can_be_listed_and_called(sdk_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", sdk_upstream.url, name="sdk") as backend:
        tools = {tool.name: tool for tool in await backend.list_tools()}
        greeting = await backend.call_tool("greet", {"name": "Ada"}, timeout=10)
        product = await backend.call_tool("multiply", {"a": 6, "b": 7}, timeout=10)
    assert set(tools) == {"greet", "multiply", "count"}
    assert tools["multiply"].input_schema["required"] == ["a", "b"]
    assert greeting["content"] == [{"type": "text", "text": "Hello, Ada!"}]
    assert product["structuredContent"] == {"result": 42.0}


async def test_sdk_server_answers_concurrent_calls_on_one_backend(
    sdk_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", sdk_upstream.url, name="sdk") as backend:
        results = await asyncio.gather(
            *(backend.call_tool("greet", {"name": str(i)}, timeout=10) for i in range(20))
        )
    greetings = [r["structuredContent"]["result"] for r in results]
    assert greetings == [f"Hello, {i}!" for i in range(20)]


async def test_sdk_server_resources_templates_and_prompts_are_listed_read_and_got(
    sdk_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", sdk_upstream.url, name="sdk") as backend:
        resources = await backend.list_resources()
        templates = await backend.list_resource_templates()
        prompts = await backend.list_prompts()
        readme = await backend.request("resources/read", {"uri": "memo://sdk/readme"}, 10)
        item = await backend.request("resources/read", {"uri": "memo://sdk/items/7"}, 10)
        haiku = await backend.request(
            "prompts/get", {"name": "haiku", "arguments": {"topic": "rain"}}, 10
        )
    assert [(r.uri, r.name, r.mime_type) for r in resources] == [
        ("memo://sdk/readme", "readme", "text/plain")
    ]
    assert [(t.uri_template, t.name) for t in templates] == [
        ("memo://sdk/items/{item_id}", "sdk-item")
    ]
    assert [(p.name, p.title) for p in prompts] == [("haiku", "Haiku")]
    assert prompts[0].arguments[0]["name"] == "topic"
    assert prompts[0].arguments[0]["required"] is True
    assert readme["contents"][0]["text"] == "Served by the SDK."
    assert item["contents"][0]["text"] == "SDK item 7"
    assert haiku["messages"][0]["content"]["text"] == "Write a haiku about rain."


async def test_sdk_server_progress_reaches_on_notification_before_the_result(
    sdk_upstream: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("streamable-http", sdk_upstream.url, name="sdk") as backend:
        result = await backend.request(
            "tools/call",
            {"name": "count", "arguments": {"steps": 3}, "_meta": {"progressToken": "sdk-1"}},
            10,
            on_notification=recorder,
        )
    progress = recorder.of("notifications/progress")
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
        ("sdk-1", 1, 3),
        ("sdk-1", 2, 3),
        ("sdk-1", 3, 3),
    ]
    assert result["content"][0]["text"] == "counted to 3"


# --- capabilities and catalogues -----------------------------------------------------------


async def test_capabilities_come_from_the_initialize_result(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        assert backend.capabilities == {}
        await backend.list_tools()
        capabilities = backend.capabilities
    assert capabilities["resources"] == {"subscribe": True, "listChanged": True}
    assert capabilities["prompts"] == {"listChanged": True}
    assert {"tools", "completions", "logging"} <= set(capabilities)


async def test_list_resources_follows_every_next_cursor_and_maps_fields(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--page-size", "1")
    async with backend_for("streamable-http", upstream.url) as backend:
        resources = {resource.uri: resource for resource in await backend.list_resources()}
    assert list(resources) == ["memo://one", "memo://two", "memo://blob"]
    one, blob = resources["memo://one"], resources["memo://blob"]
    assert (one.name, one.title, one.mime_type) == ("one", "Memo one", "text/plain")
    assert one.description == "The first memo."
    assert (blob.size, blob.annotations) == (16, {"audience": ["user"], "priority": 0.5})
    assert resources["memo://two"].title is None
    assert (await upstream.stats())["resources_list"] == 3


async def test_list_resource_templates_and_prompts_follow_pagination(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--page-size", "1")
    async with backend_for("streamable-http", upstream.url) as backend:
        templates = await backend.list_resource_templates()
        prompts = await backend.list_prompts()
    assert [(t.uri_template, t.name, t.title, t.mime_type) for t in templates] == [
        ("memo://items/{id}", "item", "Item", "text/plain")
    ]
    assert [p.name for p in prompts] == ["greeting", "summary"]
    greeting = prompts[0]
    assert greeting.title == "Greeting"
    assert greeting.arguments == (
        {"name": "name", "description": "Who to greet.", "required": True},
    )
    counts = await upstream.stats()
    assert (counts["resources_templates_list"], counts["prompts_list"]) == (1, 2)


async def test_lists_are_empty_without_the_capability_and_never_asked_for(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--tools-only")
    async with backend_for("streamable-http", upstream.url) as backend:
        assert await backend.list_resources() == []
        assert await backend.list_resource_templates() == []
        assert await backend.list_prompts() == []
        assert set(backend.capabilities) == {"tools"}
    counts = await upstream.stats()
    assert counts["requests"] == 2  # initialize and notifications/initialized only
    assert counts["resources_list"] == counts["prompts_list"] == 0


# --- any request ---------------------------------------------------------------------------


async def test_read_text_blob_and_templated_resources(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        one = await backend.request("resources/read", {"uri": "memo://one"}, 5)
        blob = await backend.request("resources/read", {"uri": "memo://blob"}, 5)
        item = await backend.request("resources/read", {"uri": "memo://items/42"}, 5)
    assert one["contents"] == [
        {"uri": "memo://one", "mimeType": "text/plain", "text": "The first memo says hello."}
    ]
    assert base64.b64decode(blob["contents"][0]["blob"]) == bytes(range(16))
    assert item["contents"][0]["text"] == "Item 42 is here."


async def test_read_of_unknown_resource_raises_upstream_error_32002(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        with pytest.raises(UpstreamError) as caught:
            await backend.request("resources/read", {"uri": "memo://nowhere"}, 5)
    assert (caught.value.code, caught.value.upstream_message) == (
        -32002,
        "Resource not found: memo://nowhere",
    )


async def test_get_prompt_returns_messages_and_unknown_prompt_raises_32602(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        greeting = await backend.request(
            "prompts/get", {"name": "greeting", "arguments": {"name": "Ada"}}, 5
        )
        summary = await backend.request("prompts/get", {"name": "summary"}, 5)
        with pytest.raises(UpstreamError) as unknown:
            await backend.request("prompts/get", {"name": "nope"}, 5)
        with pytest.raises(UpstreamError) as missing:
            await backend.request("prompts/get", {"name": "greeting"}, 5)
    assert greeting["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "Please greet Ada warmly."}}
    ]
    assert summary["messages"][0]["content"]["text"] == "Summarise in a brief style:"
    assert summary["messages"][1]["content"]["resource"]["uri"] == "memo://one"
    assert (unknown.value.code, unknown.value.upstream_message) == (-32602, "Unknown prompt: nope")
    assert missing.value.code == -32602


async def test_completion_offers_prompt_argument_values_by_prefix(
    own_upstream: RunningUpstream,
) -> None:
    async def complete(value: str) -> Any:
        params = {
            "ref": {"type": "ref/prompt", "name": "greeting"},
            "argument": {"name": "name", "value": value},
        }
        async with backend_for("streamable-http", own_upstream.url) as backend:
            return (await backend.request("completion/complete", params, 5))["completion"]

    assert await complete("al") == {"values": ["Alan", "Alonzo"], "total": 2, "hasMore": False}
    assert (await complete("G"))["values"] == ["Grace"]
    assert (await complete("z"))["values"] == []


async def test_notify_posts_a_notification_the_upstream_accepts(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.notify("notifications/cancelled", {"requestId": 999, "reason": "test"})
    counts = await own_upstream.stats()
    assert (counts["cancel_notifications"], counts["cancelled"]) == (1, 0)


# --- progress and log notifications --------------------------------------------------------


@pytest.mark.parametrize("mode", [(), ("--sse",)], ids=["json", "sse"])
async def test_progress_reaches_on_notification_in_order_before_the_result(
    own_upstream_factory: UpstreamFactory, mode: tuple[str, ...]
) -> None:
    upstream = own_upstream_factory(*mode)
    events: list[Any] = []

    async def on_notification(method: str, params: JSON) -> None:
        if method == "notifications/progress":
            events.append((params["progressToken"], params["progress"], params["total"]))

    params = {
        "name": "progress",
        "arguments": {"steps": 4, "delay": 0.02},
        "_meta": {"progressToken": "tok-1"},
    }
    async with backend_for("streamable-http", upstream.url) as backend:
        result = await backend.request("tools/call", params, 5, on_notification=on_notification)
        events.append(result["structuredContent"])
    assert events == [("tok-1", step, 4) for step in range(1, 5)] + [{"steps": 4}]
    assert params["_meta"] == {"progressToken": "tok-1"}


async def test_params_go_out_as_given_so_without_a_caller_token_no_progress_is_asked(
    own_upstream: RunningUpstream,
) -> None:
    recorder = Recorder()
    params: JSON = {"name": "progress", "arguments": {"steps": 2}}
    async with backend_for("streamable-http", own_upstream.url) as backend:
        result = await backend.request("tools/call", params, 5, recorder)
    assert recorder.seen == []
    assert params == {"name": "progress", "arguments": {"steps": 2}}
    assert result["structuredContent"] == {"steps": 2}


async def test_log_messages_about_a_request_reach_on_notification_filtered_by_set_level(
    own_upstream: RunningUpstream,
) -> None:
    recorder = Recorder()
    async with backend_for("streamable-http", own_upstream.url) as backend:
        assert await backend.request("logging/setLevel", {"level": "warning"}, 5) == {}
        for level in ("info", "error"):
            arguments = {"level": level, "message": f"at {level}"}
            await backend.request(
                "tools/call", {"name": "log", "arguments": arguments}, 5, recorder
            )
    assert recorder.seen == [
        (
            "notifications/message",
            {"level": "error", "logger": "own-upstream", "data": "at error"},
        )
    ]


async def test_failing_on_notification_fails_the_request_and_cancels_it_upstream(
    own_upstream: RunningUpstream,
) -> None:
    async def on_notification(method: str, params: JSON) -> None:
        raise RuntimeError("client gone")

    params = {
        "name": "progress",
        "arguments": {"steps": 50, "delay": 0.05},
        "_meta": {"progressToken": 1},
    }
    async with backend_for("streamable-http", own_upstream.url) as backend:
        with pytest.raises(RuntimeError, match="client gone"):
            await backend.request("tools/call", params, 10, on_notification)
        await stat_is(own_upstream, "cancelled", 1)


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [(), ("--sse",)], ids=["json", "sse"])
async def test_cancelling_the_caller_sends_notifications_cancelled_upstream(
    own_upstream_factory: UpstreamFactory, mode: tuple[str, ...]
) -> None:
    upstream = own_upstream_factory(*mode)
    async with backend_for("streamable-http", upstream.url) as backend:
        await backend.list_tools()
        started = time.monotonic()
        task = asyncio.create_task(backend.call_tool("sleep", {"seconds": 30}, timeout=60))
        await stat_is(upstream, "tools_call", 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stat_is(upstream, "cancelled", 1)
        assert time.monotonic() - started < 5
        # The session goes on serving.
        assert (await backend.call_tool("echo", {"text": "ok"}, timeout=5))["isError"] is False


async def test_timeout_sends_notifications_cancelled_upstream(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        with pytest.raises(BackendError, match=r"did not answer within 0\.3s"):
            await backend.request(
                "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}, 0.3
            )
        await stat_is(own_upstream, "cancelled", 1)


async def test_answered_requests_send_no_cancellation(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "x"}, timeout=5)
        with pytest.raises(UpstreamError):
            await backend.call_tool("missing", {}, timeout=5)
    assert (await own_upstream.stats())["cancel_notifications"] == 0


# --- the listening stream ------------------------------------------------------------------


@asynccontextmanager
async def listening(
    upstream: RunningUpstream, *args: str
) -> AsyncIterator[tuple[FullBackend, Recorder]]:
    """A backend with a listener whose session (and so its stream) is open."""
    recorder = Recorder()
    async with backend_for("streamable-http", upstream.url) as backend:
        backend.set_listener(recorder)
        await backend.list_tools()
        await stat_is(upstream, "open_streams", 1)
        yield backend, recorder


async def test_listener_receives_list_changed_and_resource_updates_over_the_get_stream(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (backend, recorder):
        await backend.request("resources/subscribe", {"uri": "memo://one"}, 5)
        await own_upstream.admin("POST", "/admin/list-changed?kind=tools")
        await own_upstream.admin("POST", "/admin/update-resource?uri=memo://two")
        await own_upstream.admin("POST", "/admin/update-resource?uri=memo://one")
        await recorder.received("notifications/resources/updated")
    assert recorder.seen == [
        ("notifications/tools/list_changed", {}),
        ("notifications/resources/updated", {"uri": "memo://one"}),
    ]


async def test_tool_added_after_list_changed_is_found_by_a_refresh(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (backend, recorder):
        await own_upstream.admin("POST", "/admin/add-tool?name=late")
        await own_upstream.admin("POST", "/admin/list-changed?kind=tools")
        await recorder.received("notifications/tools/list_changed")
        names = [tool.name for tool in await backend.list_tools()]
    assert names[-1] == "late"


async def test_dropped_stream_is_resumed_with_last_event_id_and_misses_nothing(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (_, recorder):
        await own_upstream.admin("POST", "/admin/list-changed?kind=tools")
        await recorder.received("notifications/tools/list_changed")
        assert (await own_upstream.admin("POST", "/admin/drop-streams"))["dropped"] == 1
        # Sent while the backend waits to reconnect: replayed after its Last-Event-ID.
        await own_upstream.admin("POST", "/admin/list-changed?kind=prompts")
        await recorder.received("notifications/prompts/list_changed")
        await stat_is(own_upstream, "open_streams", 1)
        await own_upstream.admin("POST", "/admin/list-changed?kind=resources")
        await recorder.received("notifications/resources/list_changed")
        counts = await own_upstream.stats()
    assert recorder.methods() == [
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
    ]
    assert (counts["get_streams"], counts["resumed_streams"]) == (2, 1)
    assert counts["last_event_id"] is not None
    assert counts["initialize"] == 1


async def test_stream_is_reopened_for_a_reinitialised_session(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (backend, recorder):
        # The upstream forgets the session and ends its stream; the backend's reconnect
        # meets 404, initialises a new session and listens on that.
        await own_upstream.admin("POST", "/admin/expire-sessions")
        await stat_is(own_upstream, "initialize", 2)
        await stat_is(own_upstream, "open_streams", 1)
        await own_upstream.admin("POST", "/admin/list-changed?kind=tools")
        await recorder.received("notifications/tools/list_changed")
        assert (await backend.call_tool("echo", {"text": "x"}, timeout=5))["isError"] is False
    assert (await own_upstream.stats())["initialize"] == 2


async def test_stream_follows_a_session_renewed_by_a_request(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (backend, recorder):
        # The upstream forgets the session but leaves its stream open; a call meets 404 and
        # renews the session, and the stream moves to the new one.
        await own_upstream.admin("POST", "/admin/expire-sessions?keep_streams=1")
        await backend.call_tool("echo", {"text": "x"}, timeout=5)
        await stat_is(own_upstream, "initialize", 2)
        await stat_is(own_upstream, "open_streams", 1)
        await own_upstream.admin("POST", "/admin/list-changed?kind=prompts")
        await recorder.received("notifications/prompts/list_changed")
    assert (await own_upstream.stats())["get_streams"] == 2


async def test_no_stream_is_opened_without_a_listener(own_upstream: RunningUpstream) -> None:
    async with backend_for("streamable-http", own_upstream.url) as backend:
        await backend.list_tools()
        await backend.call_tool("echo", {"text": "x"}, timeout=5)
        await asyncio.sleep(0.3)
    assert (await own_upstream.stats())["get_streams"] == 0


async def test_upstream_answering_405_to_get_has_no_stream_and_is_not_retried(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--no-listen")
    async with backend_for("streamable-http", upstream.url) as backend:
        backend.set_listener(Recorder())
        await backend.list_tools()
        await stat_is(upstream, "get_streams", 1)
        await asyncio.sleep(0.6)
        assert (await backend.call_tool("echo", {"text": "x"}, timeout=5))["isError"] is False
    assert (await upstream.stats())["get_streams"] == 1


async def test_removing_the_listener_or_closing_ends_the_stream(
    own_upstream: RunningUpstream,
) -> None:
    async with listening(own_upstream) as (backend, _):
        backend.set_listener(None)
        await stat_is(own_upstream, "open_streams", 0)
        backend.set_listener(Recorder())
        await stat_is(own_upstream, "open_streams", 1)
    await stat_is(own_upstream, "open_streams", 0)
    assert (await own_upstream.stats())["sessions_deleted"] == 1


async def test_a_failing_listener_is_logged_and_does_not_end_the_stream(
    own_upstream: RunningUpstream,
) -> None:
    seen: list[str] = []

    async def listener(method: str, params: JSON) -> None:
        seen.append(method)
        raise RuntimeError("listener bug")

    async def both() -> bool:
        return len(seen) == 2

    with capture_logs() as logs:
        async with backend_for("streamable-http", own_upstream.url) as backend:
            backend.set_listener(listener)
            await backend.list_tools()
            await stat_is(own_upstream, "open_streams", 1)
            for kind in ("tools", "prompts"):
                await own_upstream.admin("POST", f"/admin/list-changed?kind={kind}")
            await eventually(both, what="both notifications")
    failures = [
        entry for entry in logs if entry["event"] == "upstream notification listener failed"
    ]
    assert [(entry["upstream"], entry["method"]) for entry in failures] == [
        ("own", "notifications/tools/list_changed"),
        ("own", "notifications/prompts/list_changed"),
    ]
    assert (await own_upstream.stats())["get_streams"] == 1


async def test_method_not_found_answer_counts_as_an_empty_list(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            capabilities: JSON = {"resources": {}, "prompts": {}}
            result = {"protocolVersion": "2025-06-18", "capabilities": capabilities}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})
        error = {"code": -32601, "message": "Method not found"}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "error": error})

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url) as backend:
        assert await backend.list_resources() == []
        assert await backend.list_resource_templates() == []
        assert await backend.list_prompts() == []
        assert await backend.list_tools() == []


async def test_server_requests_on_a_reply_stream_are_answered(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    """A server may ask the client something (here `ping`, and a method) in the middle of
    a reply stream; without an `on_request` the backend answers by POST at once (`ping`
    with `{}`, the rest refused) and goes on reading."""
    answers: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "method" not in message:
            answers.append(message)
            return web.Response(status=202)
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2025-06-18", "capabilities": {}}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for ask in ({"id": "s1", "method": "ping"}, {"id": "s2", "method": "sampling/x"}):
            await response.write(f"data: {json.dumps({'jsonrpc': '2.0', **ask})}\n\n".encode())
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": {"ok": True}}
        await response.write(f"data: {json.dumps(reply)}\n\n".encode())
        await response.write_eof()
        return response

    url = await stub_upstream(handler)
    async with backend_for("streamable-http", url) as backend:
        assert await backend.request("anything", {}, 5) == {"ok": True}
    assert answers == [
        {"jsonrpc": "2.0", "id": "s1", "result": {}},
        {
            "jsonrpc": "2.0",
            "id": "s2",
            "error": {
                "code": -32601,
                "message": "no client can be asked for sampling/x during this anything",
            },
        },
    ]
