"""The `mcp-http` backend against real upstream processes: our aiohttp server in JSON and
SSE modes, the official SDK's server, and a few deliberately broken loopback servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.contracts import Backend, BackendError, BackendSpec, UpstreamConfig
from gateway.plugins import Registrar
from gateway.settings import Settings
from gateway_plugins.backend_mcp_http import (
    McpHttpBackend,
    SseEvent,
    SseParser,
    gateway_register_backends,
)
from tests.upstreams.processes import RunningUpstream, free_port

# The top-level conftest may load these as well; pytest registers a plugin module once.
pytest_plugins = ["tests.upstreams.fixtures"]

UpstreamFactory = Callable[..., RunningUpstream]


@asynccontextmanager
async def backend_for(
    url: str,
    *,
    name: str = "own",
    headers: Mapping[str, str] | None = None,
    tool_timeout: float = 10.0,
) -> AsyncIterator[McpHttpBackend]:
    config = UpstreamConfig(
        name=name, transport="streamable-http", url=url, headers=dict(headers or {})
    )
    backend = McpHttpBackend(config, Settings(tool_timeout=tool_timeout))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def admin(upstream: RunningUpstream, method: str, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{upstream.base_url}{path}") as resp,
    ):
        resp.raise_for_status()
        body: dict[str, Any] = await resp.json()
        return body


async def stats(upstream: RunningUpstream) -> dict[str, Any]:
    return await admin(upstream, "GET", "/admin/stats")


# --- registration --------------------------------------------------------------------------


def test_plugin_registers_mcp_http_for_streamable_http_transport() -> None:
    register: Registrar[BackendSpec] = Registrar("backend")
    gateway_register_backends(register)
    spec = register.select("transport", "mcp-http")
    assert spec.transport == "streamable-http"
    assert spec.description
    backend = spec.factory(
        UpstreamConfig("u", "streamable-http", "http://127.0.0.1:1/mcp"), Settings()
    )
    assert isinstance(backend, Backend)


# --- discovery -----------------------------------------------------------------------------


async def test_list_tools_follows_every_next_cursor(own_upstream_factory: UpstreamFactory) -> None:
    upstream = own_upstream_factory("--tools", "25", "--page-size", "2")
    async with backend_for(upstream.url) as backend:
        tools = await backend.list_tools()
    names = [tool.name for tool in tools]
    assert names == ["echo", "add", "sleep", "fail", "big", *(f"t{i}" for i in range(25))]
    assert (await stats(upstream))["tools_list"] == 15


async def test_list_tools_maps_schema_title_output_schema_and_annotations(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
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
    async with backend_for(own_upstream.url) as backend:
        result = await backend.call_tool("echo", {"text": "hello"}, timeout=5)
    assert result == {
        "content": [{"type": "text", "text": "hello"}],
        "isError": False,
        "structuredContent": {"text": "hello"},
    }


async def test_tool_failure_comes_back_as_is_error_result(own_upstream: RunningUpstream) -> None:
    async with backend_for(own_upstream.url) as backend:
        result = await backend.call_tool("fail", {}, timeout=5)
    assert result["isError"] is True
    assert result["content"][0]["text"] == "this tool always fails"


async def test_json_rpc_error_raises_backend_error_with_code_and_message(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        with pytest.raises(BackendError) as caught:
            await backend.call_tool("missing", {}, timeout=5)
    assert str(caught.value) == (
        "upstream 'own' answered tools/call with error -32602: Unknown tool: missing"
    )


async def test_request_returns_the_json_rpc_result_of_any_method(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        assert await backend.request("ping", None, timeout=5) == {}


async def test_large_result_arrives_whole(own_upstream: RunningUpstream) -> None:
    async with backend_for(own_upstream.url) as backend:
        result = await backend.call_tool("big", {"n": 2_000_000}, timeout=10)
    assert len(result["content"][0]["text"]) == 2_000_000


# --- the MCP session -----------------------------------------------------------------------


async def test_fifty_concurrent_first_calls_initialise_one_session(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        results = await asyncio.gather(
            *(backend.call_tool("add", {"a": i, "b": 1}, timeout=10) for i in range(50))
        )
    assert [r["structuredContent"]["sum"] for r in results] == [i + 1 for i in range(50)]
    counts = await stats(own_upstream)
    assert counts["initialize"] == 1
    assert counts["initialized_notifications"] == 1
    assert counts["tools_call"] == 50


async def test_sequential_calls_reuse_kept_alive_connections(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        for _ in range(50):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)
    assert (await stats(own_upstream))["connections"] == 1


async def test_expired_session_is_reinitialised_transparently(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "before"}, timeout=5)
        assert (await admin(own_upstream, "POST", "/admin/expire-sessions"))["expired"] == 1
        result = await backend.call_tool("echo", {"text": "after"}, timeout=5)
    assert result["structuredContent"] == {"text": "after"}
    counts = await stats(own_upstream)
    assert counts["initialize"] == 2
    assert counts["tools_call"] == 2


async def test_many_calls_on_an_expired_session_reinitialise_it_once(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "warm"}, timeout=5)
        await admin(own_upstream, "POST", "/admin/expire-sessions")
        await asyncio.gather(
            *(backend.call_tool("echo", {"text": str(i)}, timeout=10) for i in range(30))
        )
    assert (await stats(own_upstream))["initialize"] == 2


async def test_session_forgotten_after_ttl_is_reinitialised(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--session-ttl", "0.2")
    async with backend_for(upstream.url) as backend:
        await backend.call_tool("echo", {"text": "a"}, timeout=5)
        await asyncio.sleep(0.4)
        await backend.call_tool("echo", {"text": "b"}, timeout=5)
    assert (await stats(upstream))["initialize"] == 2


async def test_close_ends_the_upstream_session(own_upstream: RunningUpstream) -> None:
    async with backend_for(own_upstream.url) as backend:
        await backend.call_tool("echo", {"text": "x"}, timeout=5)
        assert (await stats(own_upstream))["sessions"] == 1
    counts = await stats(own_upstream)
    assert counts["sessions"] == 0
    assert counts["sessions_deleted"] == 1


# --- SSE replies ---------------------------------------------------------------------------


async def test_sse_replies_are_read_to_the_matching_response(
    own_upstream_sse: RunningUpstream,
) -> None:
    async with backend_for(own_upstream_sse.url) as backend:
        tools = await backend.list_tools()
        echo = await backend.call_tool("echo", {"text": "over sse"}, timeout=5)
        big = await backend.call_tool("big", {"n": 500_000}, timeout=10)
        failed = await backend.call_tool("fail", {}, timeout=5)
    assert len(tools) == 5
    assert echo["structuredContent"] == {"text": "over sse"}
    assert len(big["content"][0]["text"]) == 500_000
    assert failed["isError"] is True
    assert (await stats(own_upstream_sse))["initialize"] == 1


# --- configured headers --------------------------------------------------------------------


async def test_configured_headers_are_sent_on_every_request(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--require-header", "Authorization=Bearer s3cret")
    headers = {"Authorization": "Bearer s3cret"}
    async with backend_for(upstream.url, headers=headers) as backend:
        assert len(await backend.list_tools()) == 5
        result = await backend.call_tool("echo", {"text": "authorised"}, timeout=5)
    assert result["structuredContent"] == {"text": "authorised"}


async def test_missing_header_raises_backend_error_with_the_http_status(
    own_upstream_factory: UpstreamFactory,
) -> None:
    upstream = own_upstream_factory("--require-header", "Authorization=Bearer s3cret")
    async with backend_for(upstream.url, name="locked") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'locked' answered HTTP 401 "):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)


# --- failures ------------------------------------------------------------------------------


async def test_timeout_raises_backend_error_naming_the_upstream_within_the_bound(
    own_upstream: RunningUpstream,
) -> None:
    async with backend_for(own_upstream.url, name="slow") as backend:
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"^upstream 'slow' did not answer within 0\.5s"):
            await backend.call_tool("sleep", {"seconds": 5}, timeout=0.5)
        assert time.monotonic() - started < 1.5
        # The session survives a timed-out call.
        assert (await backend.call_tool("echo", {"text": "ok"}, timeout=5))["isError"] is False


async def test_unreachable_upstream_raises_backend_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with backend_for(url, name="gone") as backend:
        with pytest.raises(BackendError, match=r"^upstream 'gone' could not be reached at "):
            await backend.call_tool("echo", {"text": "x"}, timeout=5)


async def test_list_tools_on_unreachable_upstream_raises_backend_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with backend_for(url, name="gone") as backend:
        with pytest.raises(BackendError, match="Connection refused"):
            await backend.list_tools()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def stub_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A deliberately broken upstream in this process; returns its MCP URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/mcp", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/mcp"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_invalid_json_raises_backend_error(
    stub_upstream: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    url = await stub_upstream(handler)
    async with backend_for(url, name="garbled") as backend:
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
    async with backend_for(url, headers={"X-Api-Key": "k"}) as backend:
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
    async with backend_for(url, name="old") as backend:
        with pytest.raises(BackendError, match="unsupported protocol version '1999-01-01'"):
            await backend.list_tools()


async def test_connection_closed_without_answer_raises_backend_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with backend_for(f"http://127.0.0.1:{port}/mcp", name="rude") as backend:
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
    async with backend_for(url) as backend:
        result = await backend.call_tool("x", {}, timeout=5)
    assert result == {"content": [{"type": "text", "text": "a\nb"}], "isError": False}


# --- the SSE parser ------------------------------------------------------------------------


def feed_all(parser: SseParser, *chunks: bytes) -> list[SseEvent]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_accepts_every_line_ending_split_anywhere(eol: bytes) -> None:
    stream = eol.join([b"event: update", b"data: one", b"data:two", b"", b""])
    for cut in range(len(stream) + 1):
        events = feed_all(SseParser(), stream[:cut], stream[cut:])
        assert events == [SseEvent("update", b"one\ntwo")], cut


def test_sse_parser_skips_comments_and_events_without_data() -> None:
    parser = SseParser()
    events = feed_all(parser, b": keep-alive\n\nevent: ping\n\nid: 7\ndata: x\n\n")
    assert events == [SseEvent("message", b"x")]
    assert parser.last_event_id == "7"


def test_sse_parser_ignores_a_leading_bom_and_an_unfinished_event() -> None:
    events = feed_all(SseParser(), b"\xef\xbb", b"\xbfdata: a\n\n", b"data: b\n")
    assert events == [SseEvent("message", b"a")]


def test_sse_parser_keeps_field_values_with_colons_and_no_space() -> None:
    events = feed_all(SseParser(), b'data:{"a": "b:c"}\n\n')
    assert events == [SseEvent("message", b'{"a": "b:c"}')]


# --- the official SDK's server -------------------------------------------------------------


async def test_sdk_server_tools_can_be_listed_and_called(sdk_upstream: RunningUpstream) -> None:
    async with backend_for(sdk_upstream.url, name="sdk") as backend:
        tools = {tool.name: tool for tool in await backend.list_tools()}
        greeting = await backend.call_tool("greet", {"name": "Ada"}, timeout=10)
        product = await backend.call_tool("multiply", {"a": 6, "b": 7}, timeout=10)
    assert set(tools) == {"greet", "multiply"}
    assert tools["multiply"].input_schema["required"] == ["a", "b"]
    assert greeting["content"] == [{"type": "text", "text": "Hello, Ada!"}]
    assert product["structuredContent"] == {"result": 42.0}


async def test_sdk_server_answers_concurrent_calls_on_one_backend(
    sdk_upstream: RunningUpstream,
) -> None:
    async with backend_for(sdk_upstream.url, name="sdk") as backend:
        results = await asyncio.gather(
            *(backend.call_tool("greet", {"name": str(i)}, timeout=10) for i in range(20))
        )
    greetings = [r["structuredContent"]["result"] for r in results]
    assert greetings == [f"Hello, {i}!" for i in range(20)]
