"""The lean HTTP/1.1 client of the upstream hop (`gateway.mcpclient.fasthttp`), against real
servers: aiohttp's, and raw asyncio servers where a server must misbehave in a precise
way. Connections are counted on the server's side, by the client's port."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.contracts import BackendError
from gateway.mcpclient.fasthttp import HttpPool
from gateway.mcpclient.http1 import (
    CannotConnect,
    Disconnected,
    HttpClientError,
    RequestHead,
    TruncatedBody,
)
from tests.backends.conftest import backend_for, served
from tests.upstreams.processes import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Peers:
    """The client ports a server saw, so connections can be counted."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def see(self, request: web.Request) -> None:
        assert request.transport is not None
        self.ports.append(request.transport.get_extra_info("peername")[1])

    @property
    def connections(self) -> int:
        return len(set(self.ports))


@asynccontextmanager
async def serving(handler: Handler, **runner: Any) -> AsyncIterator[str]:
    """`handler` on every path of an aiohttp server; its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    if not runner:
        async with served(app) as url:
            yield url
        return
    site_runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, **runner)
    await site_runner.setup()
    port = free_port()
    await web.TCPSite(site_runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await site_runner.cleanup()


@asynccontextmanager
async def pool(**options: Any) -> AsyncIterator[HttpPool]:
    client = HttpPool(**options)
    try:
        yield client
    finally:
        await client.close()


async def post(client: HttpPool, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    head = RequestHead("POST", url, {"Content-Type": "application/json"})
    response = await client.request(head, body)
    try:
        return response.status, await response.read()
    finally:
        response.release()


def echo_handler(peers: Peers) -> Handler:
    async def echo(request: web.Request) -> web.Response:
        peers.see(request)
        return web.Response(body=await request.read(), content_type="application/json")

    return echo


# --- keep-alive ----------------------------------------------------------------------------


async def test_sequential_calls_through_the_backend_share_one_connection() -> None:
    peers = Peers()

    async def mcp(request: web.Request) -> web.Response:
        peers.see(request)
        message = orjson.loads(await request.read())
        if "id" not in message:
            return web.Response(status=202)
        result: dict[str, Any] = {}
        if message["method"] == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {}}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    async with serving(mcp) as url, backend_for("streamable-http", f"{url}/mcp") as backend:
        for _ in range(30):
            assert await backend.request("ping", None, timeout=5) == {}
    # initialize, notifications/initialized and 30 pings
    assert len(peers.ports) == 32
    assert peers.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    peers = Peers()
    async with serving(echo_handler(peers), keepalive_timeout=0.2) as url, pool() as client:
        assert await post(client, url, b'{"n": 1}') == (200, b'{"n": 1}')
        await asyncio.sleep(0.6)
        assert await post(client, url, b'{"n": 2}') == (200, b'{"n": 2}')
    assert peers.connections == 2


async def test_idle_connections_are_dropped_after_the_keepalive() -> None:
    peers = Peers()
    async with serving(echo_handler(peers)) as url, pool(keepalive=0.2) as client:
        await post(client, url)
        assert len(client.connections) == 1
        await asyncio.sleep(0.6)
        assert client.connections == set()
        await post(client, url)
    assert peers.connections == 2


# --- replies -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_reply_arrives_whole_with_either_framing(chunked: bool) -> None:
    payload = b"[" + b",".join(b'"%d"' % n for n in range(50_000)) + b"]"

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(payload)
        await response.prepare(request)
        for start in range(0, len(payload), 7_000):
            await response.write(payload[start : start + 7_000])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async with serving(reply) as url, pool() as client:
        for _ in range(3):  # and the connection is fit for the next reply
            head = RequestHead("POST", url, {})
            response = await client.request(head, b"{}")
            assert response.content_type == "application/json"
            assert (response.headers.get("Transfer-Encoding") == "chunked") is chunked
            assert await response.read() == payload
            response.release()
        assert len(client.connections) == 1


async def test_an_event_stream_is_read_as_its_events_arrive() -> None:
    go_on = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        # The second event waits until the client has read the first.
        await asyncio.wait_for(go_on.wait(), 5)
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async with serving(stream) as url, pool() as client:
        response = await client.request(RequestHead("POST", url, {}), b"{}")
        assert response.content_type == "text/event-stream"
        seen = []
        async for chunk in response.content.iter_any():
            seen.append(chunk)
            go_on.set()
        response.release()
    assert seen == [b"data: first\n\n", b"data: second\n\n"]


async def test_headers_are_sent_on_every_request_and_line_breaks_refused() -> None:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=204)

    async with serving(record) as url, pool() as client:
        head = RequestHead("POST", f"{url}/mcp?x=1", {"X-Api-Key": "k", "Mcp-Session-Id": "s"})
        for _ in range(2):
            (await client.request(head, b"{}")).release()
        with pytest.raises(HttpClientError, match="line break"):
            RequestHead("POST", url, {"X-Evil": "a\r\nHost: elsewhere"})
    assert len(seen) == 2
    for headers in seen:
        assert headers["X-Api-Key"] == "k" and headers["Mcp-Session-Id"] == "s"
        assert headers["Host"] == url.removeprefix("http://")
        assert headers["Content-Length"] == "2"


# --- failures ------------------------------------------------------------------------------


@asynccontextmanager
async def raw_server(
    answer: Callable[[int], bool],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads requests and, for the n-th request on a connection (from 0),
    answers 200 if `answer(n)` and otherwise closes the connection without a word. Yields
    its URL and, per connection, how many requests arrived on it."""
    counts: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(counts)
        counts.append(0)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                n, counts[index] = counts[index], counts[index] + 1
                if not answer(n):
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", counts
    finally:
        server.close()
        await server.wait_closed()


async def test_a_request_crossing_the_servers_idle_close_is_sent_once_more() -> None:
    # Every connection answers once and drops the next request unanswered: just what an
    # upstream's idle close racing our request looks like.
    async with raw_server(lambda n: n == 0) as (url, counts), pool() as client:
        for _ in range(4):
            assert await post(client, url) == (200, b"ok")
    # Calls 2 to 4 each failed on the previous call's connection, then got a new one.
    assert counts == [2, 2, 2, 1]


async def test_a_request_dropped_on_a_fresh_connection_is_not_sent_again() -> None:
    async with raw_server(lambda n: False) as (url, counts), pool() as client:
        with pytest.raises(Disconnected):
            await post(client, url)
    assert counts == [1]


async def test_a_server_dying_mid_reply_is_a_truncated_reply_backend_error() -> None:
    async def mcp(request: web.Request) -> web.StreamResponse:
        message = orjson.loads(await request.read())
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {}}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"jsonrpc": "2.0", ')
        assert request.transport is not None
        request.transport.close()
        return response

    async with (
        serving(mcp) as url,
        backend_for("streamable-http", f"{url}/mcp", name="dying") as backend,
    ):
        with pytest.raises(
            BackendError, match=r"^upstream 'dying' sent a truncated reply to ping$"
        ):
            await backend.request("ping", None, timeout=5)


async def test_a_truncated_reply_fails_its_reader() -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return response

    async with serving(half) as url, pool() as client:
        with pytest.raises(TruncatedBody):
            await post(client, url)
        assert client.connections == set()


async def test_concurrent_requests_never_use_more_connections_than_the_bound() -> None:
    peers, in_flight, most = Peers(), 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        peers.see(request)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(text="ok")

    async with serving(slow) as url, pool(limit_per_origin=4) as client:
        answers = await asyncio.gather(*(post(client, url) for _ in range(40)))
        assert len(client.connections) <= 4
    assert answers == [(200, b"ok")] * 40
    assert most == 4
    assert peers.connections == 4


async def test_a_request_its_caller_timed_out_frees_its_place_in_the_pool() -> None:
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(5)
        return web.Response(text="ok")

    async with serving(answer) as url, pool(limit_per_origin=1) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(client, f"{url}/slow")
        # The one place is free again, and the abandoned connection is not reused.
        async with asyncio.timeout(2):
            assert await post(client, f"{url}/fast") == (200, b"ok")
        assert len(client.connections) == 1


async def test_an_unreachable_origin_raises_cannot_connect_with_the_reason() -> None:
    async with pool() as client:
        with pytest.raises(CannotConnect, match=r"^Connection refused$"):
            await post(client, f"http://127.0.0.1:{free_port()}/")


# --- TLS -----------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@asynccontextmanager
async def tls_server(handler: Handler, cert: Path, key: Path) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_https_origins_are_reached_over_tls_and_their_connections_reused(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    peers = Peers()
    trusting = ssl.create_default_context(cafile=str(cert))
    async with tls_server(echo_handler(peers), cert, key) as url:
        async with pool(ssl_context=trusting) as client:
            for n in range(5):
                assert await post(client, url, b"[%d]" % n) == (200, b"[%d]" % n)
        assert peers.connections == 1
        # Without the certificate among its authorities, the pool refuses the server.
        async with pool() as client:
            with pytest.raises(CannotConnect, match="certificate verify failed"):
                await post(client, url)
