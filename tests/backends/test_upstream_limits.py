"""What an upstream sends is bounded: a reply by MAX_UPSTREAM_RESPONSE_BYTES counted after
decompression, a line of an event stream by MAX_SSE_LINE_BYTES. Past either, every backend
stops reading, closes the connection, fails the request naming the setting, and serves the
next request as if nothing had happened."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.contracts import BackendError, UpstreamConfig
from gateway.mcpclient import SseParser
from gateway.mcpclient.bounded import Bounds, Inflater, TooLarge, UnsupportedEncoding
from gateway.settings import Settings
from tests.backends.conftest import installed_plugins, served, serving_mcp
from tests.conftest import GatewayFactory, rpc
from tests.upstreams.fixtures import Recorder, eventually
from tests.upstreams.unruly import Unruly, answer, gzip_bomb

LIMIT = 1_048_576
LINE_LIMIT = 65_536
SLACK = 8 * 1_048_576
"""Socket buffers on both sides hold some of what was written before the client hung up."""


@pytest.fixture
async def unruly() -> AsyncIterator[tuple[Unruly, str]]:
    upstream = Unruly()
    async with served(upstream.app()) as base:
        yield upstream, base


@asynccontextmanager
async def bounded_backend(transport: str, url: str) -> AsyncIterator[Any]:
    spec = installed_plugins().backend_for(transport)
    assert spec is not None
    config = UpstreamConfig(name="unruly", transport=transport, url=url, headers={})
    settings = Settings(
        tool_timeout=20.0, max_upstream_response_bytes=LIMIT, max_sse_line_bytes=LINE_LIMIT
    )
    backend = spec.factory(config, settings)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def stopped(upstream: Unruly, kind: str) -> None:
    """Wait until the upstream's writer of `kind` has given up: its client hung up."""

    async def check() -> bool:
        return upstream.finished[kind] >= 1

    await eventually(check, what=f"the {kind} writer stopped")


async def assert_healthy(backend: Any) -> None:
    result = await backend.call_tool("ok", {}, timeout=10)
    assert result["content"][0]["text"] == "fine"


async def refused_call(backend: Any, tool: str) -> str:
    """The message of the BackendError that calling `tool` ends in."""
    with pytest.raises(BackendError) as caught:
        await backend.call_tool(tool, {}, timeout=20)
    return str(caught.value)


def assert_each_stream_cut_off_early(upstream: Unruly, tool: str) -> None:
    # The stream is opened again after a backoff, and cut off again: each time early.
    streams = upstream.finished[tool] + 1
    assert upstream.sent[tool] < (LIMIT + SLACK) * streams


TRANSPORTS = [("streamable-http", "/mcp"), ("streamable-http-2026", "/modern")]


@pytest.mark.parametrize(("transport", "path"), TRANSPORTS)
async def test_a_reply_that_never_ends_fails_naming_the_limit_and_is_cut_off(
    unruly: tuple[Unruly, str], transport: str, path: str
) -> None:
    upstream, base = unruly
    async with bounded_backend(transport, base + path) as backend:
        await assert_healthy(backend)
        message = await refused_call(backend, "huge")
        assert "MAX_UPSTREAM_RESPONSE_BYTES (1048576 bytes)" in message
        assert message.startswith("upstream 'unruly' sent a reply larger than")
        # The connection was closed: the upstream's writer stops, having sent little more.
        await stopped(upstream, "huge")
        assert upstream.sent["huge"] < LIMIT + SLACK
        await assert_healthy(backend)


@pytest.mark.parametrize(("transport", "path"), TRANSPORTS)
async def test_a_gzip_bomb_is_cut_off_at_the_limit_of_inflated_bytes(
    unruly: tuple[Unruly, str], transport: str, path: str
) -> None:
    upstream, base = unruly
    first, block = gzip_bomb()
    assert len(first) + len(block) < 10_000  # for 8 MiB inflated
    async with bounded_backend(transport, base + path) as backend:
        message = await refused_call(backend, "bomb")
        assert "larger than MAX_UPSTREAM_RESPONSE_BYTES (1048576 bytes)" in message
        await stopped(upstream, "bomb")
        # 1 MiB inflated takes the first 4 KiB of the bomb; it was cut off long before a
        # gigabyte (1 MB on the wire), as the socket buffers allow.
        assert upstream.sent["bomb"] < SLACK
        await assert_healthy(backend)


@pytest.mark.parametrize(("transport", "path"), TRANSPORTS)
async def test_an_event_stream_line_that_never_ends_fails_naming_the_line_limit(
    unruly: tuple[Unruly, str], transport: str, path: str
) -> None:
    upstream, base = unruly
    async with bounded_backend(transport, base + path) as backend:
        message = await refused_call(backend, "long_line")
        assert "line larger than MAX_SSE_LINE_BYTES (65536 bytes)" in message
        await stopped(upstream, "long_line")
        assert_each_stream_cut_off_early(upstream, "long_line")
        await assert_healthy(backend)


async def test_legacy_sse_stream_with_a_line_that_never_ends_fails_waiting_calls_and_reopens(
    unruly: tuple[Unruly, str],
) -> None:
    upstream, base = unruly
    async with bounded_backend("sse", base + "/sse") as backend:
        await assert_healthy(backend)
        message = await refused_call(backend, "long_line")
        assert "line larger than MAX_SSE_LINE_BYTES (65536 bytes)" in message
        assert message.endswith("before answering tools/call")
        await stopped(upstream, "long_line")
        assert_each_stream_cut_off_early(upstream, "long_line")
        await assert_healthy(backend)


def test_sse_parser_refuses_an_event_of_many_short_lines_past_the_reply_limit() -> None:
    parser = SseParser(Bounds(response_bytes=1000, sse_line_bytes=100))
    assert parser.feed(b"data: " + b"a" * 90 + b"\n\n")[0].data == b"a" * 90
    with pytest.raises(TooLarge, match="an event larger than MAX_UPSTREAM_RESPONSE_BYTES"):
        for _ in range(20):
            parser.feed(b"data: " + b"a" * 90 + b"\n")


def test_sse_parser_refuses_a_line_past_the_limit_even_when_it_ends() -> None:
    parser = SseParser(Bounds(response_bytes=1000, sse_line_bytes=100))
    with pytest.raises(TooLarge, match="MAX_SSE_LINE_BYTES"):
        parser.feed(b"data: " + b"a" * 200 + b"\n\n")


async def test_a_bounded_reply_within_the_limit_arrives_whole(
    unruly: tuple[Unruly, str],
) -> None:
    _, base = unruly
    async with bounded_backend("streamable-http", base + "/mcp") as backend:
        tools = await backend.list_tools()
    assert [tool.name for tool in tools] == ["ok", "huge", "bomb", "long_line"]


# --- through the gateway ------------------------------------------------------------------


async def test_gateway_turns_a_reply_past_the_limit_into_an_error_result_and_serves_on(
    unruly: tuple[Unruly, str],
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    _, base = unruly
    client = await gateway(max_upstream_response_bytes=LIMIT, tool_timeout=20.0)
    registered = await client.post(
        "/upstreams", json={"name": "unruly", "url": base + "/mcp"}, headers=admin_headers
    )
    assert registered.status == 201, await registered.text()
    for tool in ("huge", "bomb"):
        body = await rpc(
            client, "tools/call", {"name": f"unruly__{tool}", "arguments": {}}, user_headers
        )
        result = body["result"]
        assert result["isError"] is True
        assert (
            "larger than MAX_UPSTREAM_RESPONSE_BYTES (1048576 bytes)"
            in (result["content"][0]["text"])
        )
        body = await rpc(
            client, "tools/call", {"name": "unruly__ok", "arguments": {}}, user_headers
        )
        assert body["result"]["content"][0]["text"] == "fine"
    # Another method: a JSON-RPC error naming the limit.
    body = await rpc(client, "resources/read", {"uri": "unruly://huge"}, user_headers)
    assert body["error"]["code"] == -32603
    assert "larger than MAX_UPSTREAM_RESPONSE_BYTES (1048576 bytes)" in body["error"]["message"]
    body = await rpc(client, "tools/call", {"name": "unruly__ok", "arguments": {}}, user_headers)
    assert body["result"]["content"][0]["text"] == "fine"


async def test_discovery_meeting_a_reply_past_the_limit_answers_502_naming_it(
    unruly: tuple[Unruly, str], gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    _, base = unruly
    client = await gateway(max_upstream_response_bytes=LIMIT)
    response = await client.post(
        "/upstreams", json={"name": "unruly", "url": base + "/mcp-huge-list"}, headers=admin_headers
    )
    assert response.status == 502
    message = (await response.json())["error"]["message"]
    assert "sent a reply larger than MAX_UPSTREAM_RESPONSE_BYTES (1048576 bytes)" in message
    assert "xxxx" not in message
    healthy = await client.post(
        "/upstreams", json={"name": "fine", "url": base + "/mcp"}, headers=admin_headers
    )
    assert healthy.status == 201, await healthy.text()


def test_inflater_reads_every_gzip_member_and_stops_a_bomb_at_the_room_given() -> None:
    members = gzip.compress(b"hello, ") + gzip.compress(b"world")
    inflater = Inflater("gzip")
    out = b"".join(inflater.inflate(members[i : i + 7], 1000) for i in range(0, len(members), 7))
    assert out + inflater.flush() == b"hello, world"
    first, block = gzip_bomb()
    assert len(Inflater("gzip").inflate(first + block, 1000)) == 1001


def test_inflater_refuses_codings_it_cannot_bound() -> None:
    with pytest.raises(UnsupportedEncoding):
        Inflater("br")


async def test_fast_client_inflates_a_gzip_reply_it_did_not_ask_for_and_refuses_brotli() -> None:
    encodings: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        message = await request.json()
        answered = answer(message, "2025-06-18")
        if answered is None:
            return web.Response(status=202)
        body = orjson.dumps(answered)
        coding = encodings.get(message["method"], "")
        if coding == "gzip":
            body = gzip.compress(body)
        headers = {"Content-Encoding": coding} if coding else {}
        return web.Response(body=body, content_type="application/json", headers=headers)

    async with (
        serving_mcp(handler, "POST") as url,
        bounded_backend("streamable-http", url) as backend,
    ):
        encodings["tools/call"] = "gzip"
        assert (await backend.call_tool("ok", {}, timeout=10))["content"][0]["text"] == "fine"
        encodings["tools/call"] = "br"
        with pytest.raises(BackendError, match="unsupported Content-Encoding 'br'"):
            await backend.call_tool("ok", {}, timeout=10)
        encodings["tools/call"] = ""
        await assert_healthy(backend)


async def test_a_listening_stream_with_a_line_that_never_ends_is_cut_off_and_calls_go_on(
    unruly: tuple[Unruly, str],
) -> None:
    upstream, base = unruly
    async with bounded_backend("streamable-http", base + "/mcp") as backend:
        backend.set_listener(Recorder())
        await assert_healthy(backend)  # opens the session, and with it the listening stream
        await stopped(upstream, "long_line")
        # The stream is opened again after a backoff, and cut off again: each time early.
        streams = upstream.finished["long_line"] + 1
        assert upstream.sent["long_line"] < (LIMIT + SLACK) * streams
        await assert_healthy(backend)
