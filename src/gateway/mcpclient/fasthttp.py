"""A lean HTTP/1.1 client for the upstream hop: keep-alive connections per origin, each
request one write of bytes, each response parsed by httptools (llhttp, as uvicorn uses it).

aiohttp's client spent more CPU on a small POST than the rest of a gateway call; this one
does only what the hop needs. A request's head is encoded once per URL and set of headers
(`RequestHead`), so a request is that head, its Content-Length and its body. Connections
are asyncio protocols (so they run on uvloop as on asyncio), kept per origin (scheme, host,
port) up to `LIMIT_PER_ORIGIN` in use at once, reused most recent first, and dropped after
`KEEPALIVE_SECONDS` idle, before the upstream's own idle close. A request that fails on a
reused connection before any byte of its response arrived (the upstream closed it while it
was idle, and the close crossed our request) is sent once more on a new connection;
nothing else is retried, since a POST is not idempotent.

A response's body is read as it arrives (`body.Body`), up to the pool's bound. No
`Accept-Encoding` is sent, but a server may compress anyway: gzip and deflate are undone a
piece at a time as the body arrives, never past the bound; other codings are refused. The
request head and the errors are `gateway.mcpclient.http1`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import zlib
from collections import deque

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import request_ids, tracing
from gateway.mcpclient.body import Body
from gateway.mcpclient.bounded import UNBOUNDED, Bounds, Inflater, UnsupportedEncoding
from gateway.mcpclient.http1 import (
    BadResponse,
    CannotConnect,
    Disconnected,
    HttpClientError,
    Origin,
    RequestHead,
    TruncatedBody,
)
from gateway.netguard import AddressPolicy, AddressRefused

# Below the 5 s idle timeout of uvicorn and Node.js, so the pool drops an idle connection
# before the upstream does, instead of racing it and failing a call on a dead socket.
KEEPALIVE_SECONDS = 4.0
LIMIT_PER_ORIGIN = 256


class Response:
    """An upstream's response, its body still arriving; `release()` it when done."""

    __slots__ = ("_connection", "_headers", "_inflater", "_raw", "content", "reason", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        self.content = Body(connection, connection.pool.owner.bounds)
        self._inflater: Inflater | None = None
        self.status = 0
        self.reason = ""
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw]
            self._headers = CIMultiDictProxy(CIMultiDict(pairs))
        return self._headers

    @property
    def content_type(self) -> str:
        """The media type, lower case and without parameters, as aiohttp gives it."""
        for name, value in self._raw:
            if len(name) == 12 and name.lower() == b"content-type":
                return value.split(b";", 1)[0].strip().lower().decode("latin-1")
        return "application/octet-stream"

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """Give the connection back for the next request if the body was read to its end,
        and close it otherwise."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(self.content.complete and not self.content.failed)


class _Pool:
    """The connections to one origin: at most `limit_per_origin` in use, the idle ones most
    recent last, each dropped `keepalive` seconds after it was last used."""

    def __init__(self, origin: Origin, context: ssl.SSLContext | None, owner: HttpPool) -> None:
        self.scheme, self.host, self.port = origin
        self.context = context
        self.owner = owner
        self.slots = asyncio.Semaphore(owner.limit_per_origin)
        self.idle: deque[_Connection] = deque()
        self.loop = asyncio.get_running_loop()
        self._sweeping: asyncio.TimerHandle | None = None

    def take(self) -> _Connection | None:
        idle, now = self.idle, self.loop.time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.owner.keepalive:
                return connection
            connection.close()
        return None

    def put_back(self, connection: _Connection) -> None:
        connection.idle_since = self.loop.time()
        self.idle.append(connection)
        if self._sweeping is None:
            self._sweeping = self.loop.call_later(self.owner.keepalive, self._sweep)

    def _sweep(self) -> None:
        idle, now, keepalive = self.idle, self.loop.time(), self.owner.keepalive
        while idle and (idle[0].closed or now - idle[0].idle_since >= keepalive):
            idle.popleft().close()
        self._sweeping = None
        if idle:
            self._sweeping = self.loop.call_at(idle[0].idle_since + keepalive, self._sweep)

    def stop(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.head: asyncio.Future[None] | None = None
        """Settled once the response's head has arrived (or never will)."""
        self.received = False
        self.keep_alive = False
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._informational = False
        self._reason = b""

    async def exchange(self, data: bytes) -> Response:
        """Send one request; its response once the head has arrived."""
        transport = self.transport
        assert transport is not None  # connected before it is pooled
        self.response = response = Response(self)
        self.received = False
        self.head = head = self.pool.loop.create_future()
        transport.write(data)
        try:
            await head
        except BaseException:
            self.response = None
            self.close()
            raise
        return response

    def finish(self, reusable: bool) -> None:
        self.response = None
        self.head = None
        if reusable and self.keep_alive and not self.closed:
            self.pool.put_back(self)
        else:
            self.close()
        self.pool.slots.release()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.pool.owner.connections.add(self)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.content.complete:
            # Nothing asked: an upstream out of step with us; never reuse the connection.
            self.keep_alive = False
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(BadResponse(f"{type(exc).__name__}: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.owner.connections.discard(self)
        if self.response is None:
            return
        if self.head is not None and not self.head.done():
            self.head.set_exception(Disconnected("closed before answering"))
        elif not self.response.content.complete:
            if self._ends_at_eof():
                self.response.content.finish()
            else:
                self.response.content.set_exception(TruncatedBody("closed mid-body"))

    def _fail(self, exc: HttpClientError) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        elif self.response is not None:
            self.response.content.set_exception(exc)

    def _ends_at_eof(self) -> bool:
        """Whether the response has neither a length nor chunks: its body ends with the
        connection."""
        if self.keep_alive or self.response is None:
            return False
        for name, value in self.response._raw:
            name = name.lower()
            if name == b"content-length" or (
                name == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    # --- httptools callbacks ---

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None  # fed only during an exchange
        self.response._raw.append((name, value))

    def on_headers_complete(self) -> None:
        response, head = self.response, self.head
        assert response is not None and head is not None
        status = self.parser.get_status_code()
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._informational = True
            response._raw = []
            return
        response.status = status
        response.reason = self._reason.decode("latin-1")
        self.keep_alive = self.parser.should_keep_alive()
        for name, value in response._raw:
            if name.lower() == b"content-encoding":
                coding = value.strip().lower().decode("latin-1")
                if coding and coding != "identity":
                    try:
                        response._inflater = Inflater(coding)
                    except UnsupportedEncoding:
                        self._fail(BadResponse(f"unsupported Content-Encoding {coding[:40]!r}"))
                        self.close()
                        return
        if not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        content, inflater = response.content, response._inflater
        if content.failed:
            return  # past its bound, or undecodable: the connection is closing
        if inflater is not None:
            try:
                body = inflater.inflate(body, content.room)
            except zlib.error:
                self._undecodable()
                return
        content.feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
        elif self.response is not None:
            content, inflater = self.response.content, self.response._inflater
            if inflater is not None and not content.failed:
                # Every inflate stayed within its room, so what zlib still holds is small.
                try:
                    content.feed(inflater.flush())
                except zlib.error:
                    self._undecodable()
                    return
            content.finish()

    def _undecodable(self) -> None:
        self._fail(BadResponse("a compressed body that does not decompress"))
        self.close()


class HttpPool:
    """Keep-alive HTTP/1.1 connections to any number of origins, for one owner."""

    def __init__(
        self,
        *,
        limit_per_origin: int = LIMIT_PER_ORIGIN,
        keepalive: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        guard: AddressPolicy | None = None,
        bounds: Bounds = UNBOUNDED,
    ) -> None:
        self.limit_per_origin = limit_per_origin
        self.bounds = bounds
        """How much of a response's body is read before it fails with `TooLarge`."""
        self.guard = guard
        """When set, every connection goes to an address it has checked."""
        self.keepalive = keepalive
        self._ssl_context = ssl_context
        self._pools: dict[Origin, _Pool] = {}
        self.connections: set[_Connection] = set()
        """Every open connection, idle or in use."""
        self._closed = False

    async def request(self, head: RequestHead, body: bytes | None) -> Response:
        """Send `head` with `body` (None: a request without content, such as a GET); the
        response once its head has arrived."""
        if self._closed:
            raise HttpClientError("the HTTP client is closed")
        pool = self._pools.get(head.origin) or self._pool(head.origin)
        # Per client request: its id and trace context (the head is shared by all).
        if body is None:
            data = b"%b%b%b\r\n" % (
                head.encoded,
                request_ids.header_line(),
                tracing.outbound_header_lines(),
            )
        else:
            data = b"%b%b%bContent-Length: %d\r\n\r\n%b" % (
                head.encoded,
                request_ids.header_line(),
                tracing.outbound_header_lines(),
                len(body),
                body,
            )
        await pool.slots.acquire()
        try:
            connection = pool.take()
            if connection is not None:
                try:
                    return await connection.exchange(data)
                except Disconnected:
                    if connection.received:
                        raise
                    # Closed by the upstream while idle: the request never got there.
            connection = await self._connect(pool)
            return await connection.exchange(data)
        except BaseException:
            pool.slots.release()
            raise

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.stop()
        for connection in [*self.connections]:
            connection.close()
        # Let the transports report their closing before the loop may go away.
        await asyncio.sleep(0)

    def _pool(self, origin: Origin) -> _Pool:
        context: ssl.SSLContext | None = None
        if origin[0] == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        pool = self._pools[origin] = _Pool(origin, context, self)
        return pool

    async def _connect(self, pool: _Pool) -> _Connection:
        def protocol() -> _Connection:
            return _Connection(pool)

        try:
            if self.guard is None:
                _, connection = await pool.loop.create_connection(
                    protocol, pool.host, pool.port, ssl=pool.context
                )
            else:
                _, connection = await self.guard.connect(
                    protocol, pool.host, pool.port, pool.context
                )
        except AddressRefused as exc:
            raise CannotConnect(str(exc)) from None
        except ssl.SSLError as exc:
            raise CannotConnect(exc.strerror or str(exc)) from None
        except OSError as exc:
            # asyncio words a refusal as "Connect call failed (...)"; say what failed.
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
            raise CannotConnect(reason or str(exc) or type(exc).__name__) from None
        return connection
