"""What the two HTTP transports share: messages POSTed with the upstream's answer checked,
on our own keep-alive client (`fasthttp`, far cheaper per call than aiohttp's); event
streams opened (and Streamable HTTP's DELETE sent) on an aiohttp session, which long-lived
streams suit; and both clients' failures as one-line `BackendError`s naming the upstream."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import orjson
import structlog

from gateway.contracts import JSON, BackendError, UpstreamConfig
from gateway.mcpclient import http1
from gateway.mcpclient.bounded import ERROR_BODY_BYTES, Bounds, Readable, TooLarge, read_bounded
from gateway.mcpclient.client import McpClient
from gateway.mcpclient.fasthttp import KEEPALIVE_SECONDS, HttpPool, Response
from gateway.mcpclient.http1 import RequestHead
from gateway.mcpclient.link import Link, MessageRefused, SessionExpired
from gateway.mcpclient.sse import SseEvent
from gateway.mcpclient.wire import json_messages, media_type, one_line, phrase
from gateway.netguard import AddressPolicy, guarded_connector
from gateway.request_ids import send_request_id
from gateway.tracing import send_trace_context

if TYPE_CHECKING:
    from gateway.settings import Settings

log = structlog.get_logger(__name__)


def json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def new_http_session(guard: AddressPolicy) -> aiohttp.ClientSession:
    """A session for event streams and DELETEs; its callers pass `allow_redirects=False`,
    so the upstream's headers (its credentials) never follow a redirect elsewhere."""
    connector = guarded_connector(
        guard, limit=1024, limit_per_host=256, keepalive_timeout=KEEPALIVE_SECONDS
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=json_dumps,
        middlewares=(send_request_id, send_trace_context),
        # The caller's asyncio.timeout bounds each exchange; aiohttp's 5-minute default
        # would only add a second, inconsistent limit (and end listening streams).
        timeout=aiohttp.ClientTimeout(total=None),
    )


class HttpStatusError(MessageRefused):
    """The upstream answered an HTTP error status."""

    def __init__(self, message: str, status: int, summary: str = "") -> None:
        super().__init__(message, summary or message)
        self.status = status


class Answer(Protocol):
    """What `http_error` reads of either client's response."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def content(self) -> Readable: ...


async def http_error(upstream: str, resp: Answer, what: str) -> HttpStatusError:
    detail = ""
    try:
        # Only the start is read: a JSON-RPC error message is short, and an error page may
        # be endless.
        too_long = TooLarge("an error body", "the error body bound", ERROR_BODY_BYTES)
        body = orjson.loads(await read_bounded(resp.content, ERROR_BODY_BYTES, too_long))
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = f": {one_line(str(body['error'].get('message', '')))}"
    except (orjson.JSONDecodeError, aiohttp.ClientError, http1.HttpClientError, TooLarge):
        pass
    # The standard phrase, not the upstream's: its reason phrase is its own words.
    summary = f"upstream {upstream!r} answered HTTP {resp.status} {phrase(resp.status)}"
    summary = summary.rstrip() + f" to {what}"
    return HttpStatusError(summary + detail, resp.status, summary)


def client_error(
    upstream: str, url: object, method: str, exc: aiohttp.ClientError | http1.HttpClientError
) -> BackendError:
    where = f"upstream {upstream!r}"
    if isinstance(exc, http1.CannotConnect):
        message = f"{where} could not be reached at {url}: {exc}"
    elif isinstance(exc, http1.Disconnected):
        message = f"{where} closed the connection before answering {method}"
    elif isinstance(exc, http1.TruncatedBody):
        message = f"{where} sent a truncated reply to {method}"
    elif isinstance(exc, http1.BadResponse):
        # The parser's words or ours, never the upstream's bytes.
        message = f"{where} sent an invalid HTTP response to {method}: {one_line(str(exc))}"
    elif isinstance(exc, http1.InvalidUrl):
        message = f"{where} has an invalid URL {str(url)!r}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = os.strerror(exc.errno) if exc.errno else one_line(str(exc))
        message = f"{where} could not be reached at {url}: {reason}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        message = f"{where} closed the connection before answering {method}"
    elif isinstance(exc, aiohttp.ClientOSError):
        reason = os.strerror(exc.errno) if exc.errno else one_line(str(exc))
        message = f"{where} connection failed during {method}: {reason}"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        message = f"{where} sent a truncated reply to {method}"
    elif isinstance(exc, aiohttp.InvalidURL):
        message = f"{where} has an invalid URL {str(url)!r}"
    else:
        summary = f"{where} failed during {method}: {type(exc).__name__}"
        return BackendError(f"{summary}: {one_line(str(exc))}", summary)
    return BackendError(message)


class HttpLink(Link):
    """A link whose messages are POSTed to `url` with `headers`."""

    def __init__(self, upstream: str, url: str, headers: Mapping[str, str]) -> None:
        super().__init__(upstream)
        self.url = url
        self.headers = dict(headers)
        self.head: RequestHead | None = None
        """`headers` encoded for a POST to `url`, once they are settled."""


H = TypeVar("H", bound=HttpLink)


class HttpClient(McpClient[H]):
    """An `McpClient` over HTTP, for the transports to build on."""

    # Every worker's backend of an upstream listens from the start: the upstream's
    # `list_changed` must reach the gateway before any client has called it.
    listens_at_once = True

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        self._http: aiohttp.ClientSession | None = None
        self._pool: HttpPool | None = None
        self._guard = AddressPolicy.of(settings)
        self.bounds = Bounds.of(settings)

    async def start(self) -> None:
        await super().start()
        self._http = new_http_session(self._guard)
        self._pool = HttpPool(guard=self._guard, bounds=self.bounds)

    async def close(self) -> None:
        await super().close()
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def open_connections(self) -> int:
        """Connections held open in the fast pool (in use or idle), for the metrics."""
        return len(self._pool.connections) if self._pool is not None else 0

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        return self._http

    def _failure(self, exc: Exception, what: str) -> BackendError | None:
        if isinstance(exc, aiohttp.ClientError | http1.HttpClientError):
            return client_error(self.name, self.url, what, exc)
        if isinstance(exc, TooLarge):
            during = f" during {what}" if what else ""
            return BackendError(
                f"upstream {self.name!r} sent {exc}{during}; the connection was closed"
            )
        return None

    @asynccontextmanager
    async def _posting(self, link: H, message: JSON) -> AsyncIterator[Response]:
        """POST `message` on `link`; the response, once the upstream has accepted it."""
        what = str(message.get("method", "a reply"))
        if link.lost is not None:
            raise BackendError(f"upstream {self.name!r} {link.lost}")
        if self._pool is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        head = link.head
        # Headers change only when a session begins, so the encoded head is nearly always
        # the one built before.
        if head is None or head.url != link.url or head.headers != link.headers:
            head = link.head = RequestHead("POST", link.url, link.headers)
        resp = await self._pool.request(head, orjson.dumps(message))
        try:
            if resp.status == 404 and link.session_id is not None:
                raise SessionExpired(self.name, what)
            if resp.status >= 300:
                raise await http_error(self.name, resp, what)
            yield resp
        finally:
            resp.release()

    async def _check_stream(self, resp: aiohttp.ClientResponse) -> None:
        """Raise unless `resp` is the event stream a GET asked for."""
        if resp.status >= 300:
            raise await http_error(self.name, resp, "GET (event stream)")
        if resp.content_type != "text/event-stream":
            raise BackendError(
                f"upstream {self.name!r} answered GET (event stream) with "
                f"{media_type(resp.content_type)}, not an event stream"
            )

    async def _receive_event(self, link: H, event: SseEvent) -> None:
        """An event on a stream that no request owns: garbage there is logged, not fatal."""
        # Other event types carry no JSON-RPC; an event with empty data only primes a
        # resumable stream.
        if event.event != "message" or not event.data.strip():
            return
        try:
            decoded = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            log.info("upstream sent invalid JSON on its event stream", upstream=self.name)
            return
        for message in json_messages(decoded):
            await self._receive(link, message)
