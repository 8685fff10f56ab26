"""The `sse` backend: one upstream MCP server on the legacy HTTP+SSE transport (2024-11-05).

The backend GETs the upstream's event stream, whose first event, `endpoint`, names the URL
(resolved against the stream's, and of the same origin) that takes our JSON-RPC messages by
POST. Every reply and notification comes back on that one stream: replies are matched to
the waiting requests by id, and progress notifications to requests by progress token. So a
request given an `on_notification` goes out with a token unique on this connection, and its
progress comes back to `on_notification` under the caller's own `_meta.progressToken` (or
the unique one, if the caller sent none). Log messages and the upstream's other
notifications cannot be tied to a request on this transport: they go to the listener.
A request the upstream sends its client names the request of ours it is about, if any, in
`params._meta.relatedRequestId`: it goes to that request's `on_request`, and otherwise to
the listener's `ask`; the answer is POSTed to the endpoint.

The protocol version is negotiated as over Streamable HTTP (2025-11-25 offered, any older
one the upstream answers with taken), so such an upstream can elicit as it could from a
client of its own; the transport itself is 2024-11-05's.

The MCP session lives as long as the stream. When the stream drops, the requests waiting on
it fail with `BackendError`; the next request opens a new stream and initialises again, as
does a background task with backoff while a listener is set.

The stream is bounded line by line (`MAX_SSE_LINE_BYTES`) and event by event
(`MAX_UPSTREAM_RESPONSE_BYTES`, after decompression): past either it is closed, and the
requests waiting on it fail naming the setting.

The MCP logic is `gateway.mcpclient`'s; this module only moves the bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp

from gateway import upstream_oauth
from gateway.mcpclient import Backoff, Call, HttpClient, HttpLink, ListenOutcome, SseParser
from gateway.mcpclient.bounded import TooLarge
from gateway.mcpclient.http import HttpStatusError
from gateway.mcpclient.wire import one_line
from gateway.plugin import (
    JSON,
    BackendError,
    BackendSpec,
    Registrar,
    Settings,
    UpstreamConfig,
    hookimpl,
)


class _StreamLink(HttpLink):
    """One event stream: the session, and where its messages are POSTed once known."""

    def __init__(
        self, upstream: str, response: aiohttp.ClientResponse, headers: Mapping[str, str]
    ) -> None:
        super().__init__(upstream, "", headers)
        self.response = response
        self.ready = asyncio.Event()
        """Set once the endpoint is known, or the stream is lost before it was."""
        self.reader: asyncio.Task[None] | None = None
        self.error: BackendError | None = None


class McpSseBackend(HttpClient[_StreamLink]):
    """A `FullBackend` for one upstream MCP server on the HTTP+SSE transport."""

    # The transport is the 2024-11-05 one, but the protocol spoken over it is negotiated as
    # on any other: the newest is offered, as the SDKs' own clients do, and a server that
    # knows only 2024-11-05 answers with that.
    protocol_version = "2025-11-25"
    shared_stream = True

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        headers = upstream_oauth.sent_headers(upstream.headers)
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._post_headers = {**headers, "Content-Type": "application/json"}
        self.oauth = upstream_oauth.TokenSource.of(
            self.name, upstream.options, upstream.headers, self._guard
        )
        """The upstream's OAuth access token, when its registration has `oauth`."""

    async def close(self) -> None:
        await super().close()
        if self.oauth is not None:
            await self.oauth.close()

    async def _post(self, link: _StreamLink, message: JSON, call: Call | None) -> None:
        if self.oauth is None:
            return await self._post_once(link, message)
        # The link's headers are shared by concurrent calls: remember what this one sent.
        sent = link.headers["Authorization"] = await self.oauth.header()
        try:
            await self._post_once(link, message)
        except HttpStatusError as exc:
            if exc.status != 401:
                raise
            # Revoked or expired early: once more with a fresh token.
            link.headers["Authorization"] = await self.oauth.header(sent)
            await self._post_once(link, message)

    async def _post_once(self, link: _StreamLink, message: JSON) -> None:
        # Whatever comes back, comes back on the stream.
        async with self._posting(link, message):
            pass

    async def _listen_on(self, link: _StreamLink, backoff: Backoff) -> ListenOutcome:
        # The stream is read all along; the listener only has it reopened when it drops.
        await link.ended.wait()
        return ListenOutcome.ENDED

    # --- the stream ---

    async def _connect(self, refused: str | None = None) -> aiohttp.ClientResponse:
        headers = self._stream_headers
        if self.oauth is not None:
            headers = {**headers, "Authorization": await self.oauth.header(refused)}
        resp = await self._client().get(self.url, headers=headers, allow_redirects=False)
        if resp.status == 401 and self.oauth is not None and refused is None:
            resp.close()
            return await self._connect(headers["Authorization"])
        return resp

    async def _open(self) -> _StreamLink:
        resp = await self._connect()
        link = _StreamLink(self.name, resp, self._post_headers)
        try:
            await self._check_stream(resp)
            link.reader = asyncio.create_task(self._read(link))
            await link.ready.wait()
            if link.error is not None:
                raise link.error
            if link.lost is not None:
                raise BackendError(f"upstream {self.name!r} {link.lost} before naming its endpoint")
            return link
        except BaseException:
            self._discard(link, "was abandoned")
            raise

    def _discard(self, link: _StreamLink, reason: str) -> None:
        link.end(reason)
        link.ready.set()
        link.response.close()
        if link.reader is not None and link.reader is not asyncio.current_task():
            link.reader.cancel()

    async def _terminate(self, link: _StreamLink) -> None:
        self._discard(link, "was closed")
        if link.reader is not None:
            await asyncio.gather(link.reader, return_exceptions=True)

    async def _read(self, link: _StreamLink) -> None:
        parser = SseParser(self.bounds)
        reason = "closed its event stream"
        try:
            async for chunk in link.response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "endpoint":
                        self._on_endpoint(link, event.data)
                    else:
                        await self._receive_event(link, event)
                    if link.lost is not None:
                        return
        except aiohttp.ClientError as exc:
            reason = f"lost its event stream ({type(exc).__name__})"
        except TooLarge as exc:
            reason = f"sent {exc} on its event stream, which was closed,"
        finally:
            self._discard(link, reason)

    def _on_endpoint(self, link: _StreamLink, data: bytes) -> None:
        if link.url:
            return
        try:
            link.url = self._endpoint(data)
        except BackendError as exc:
            link.error = exc
            self._discard(link, "named a bad endpoint")
        else:
            # The endpoint's URL names the session, so a 404 to a POST means it is gone.
            link.session_id = link.url
        link.ready.set()

    def _endpoint(self, data: bytes) -> str:
        """The endpoint event's URI, resolved against the stream's URL; same origin only, so
        an upstream cannot send our messages (and configured headers) elsewhere."""
        text = data.decode("utf-8", "replace").strip()
        try:
            target = urljoin(self.url, text)
            same = _origin(urlsplit(target)) == _origin(urlsplit(self.url))
        except ValueError:
            summary = f"upstream {self.name!r} named an invalid endpoint"
            raise BackendError(f"{summary} {one_line(text)!r}", summary) from None
        if not same:
            summary = f"upstream {self.name!r} named an endpoint on another origin"
            raise BackendError(f"{summary}: {one_line(text)}", summary)
        return target


def _origin(url: SplitResult) -> tuple[str, str | None, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.hostname, url.port or {"http": 80, "https": 443}.get(scheme)


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="sse",
            transport="sse",
            factory=McpSseBackend,
            description="An upstream MCP server over the legacy HTTP+SSE transport (2024-11-05).",
            fields=frozenset({upstream_oauth.FIELD}),
            check_options=upstream_oauth.check_options,
        )
    )
