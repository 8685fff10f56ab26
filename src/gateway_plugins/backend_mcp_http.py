"""The `streamable-http` backend: one upstream MCP server reached over Streamable HTTP.

Each backend instance (one per upstream per worker) keeps one keep-alive connection
pool and one MCP session, initialised on first use, or as soon as a listener is set (the
gateway's own backends have one, so they listen from the start), and re-initialised
once when the upstream forgets it (HTTP 404); `close()` ends it with DELETE, and fails
the requests still reading their replies with `BackendError`. Every message is a POST,
and a request's reply is a JSON body or an SSE stream. The session speaks 2025-11-25, so the
upstream may end a reply's stream before the answer once it has given the stream an event
id: the backend then GETs the rest with `Last-Event-ID`, after the upstream's `retry`, for
as long as the request may take, and fails the request when the stream ends with no id to
resume from or resuming brings nothing three times in a row. That stream belongs to its request,
so the progress and log notifications in it go to that request's `on_notification` as
they come; params go out as given, so the upstream sends progress when the caller put a
`_meta.progressToken` in them. Other notifications there, like those on the listening
stream, go to the listener. A request the upstream sends its client there
relates to that request and goes to its `on_request`; one on the listening stream relates
to none and goes to the listener's `ask`. Either answer is POSTed with the session's
headers, while the stream it came on goes on being read.
With a listener set, the backend also holds the session's own GET event stream open for the
upstream's notifications, reconnecting with backoff (resuming with `Last-Event-ID`) when it
drops and reopening it for every new session.

What an upstream sends is bounded (`gateway.mcpclient.bounded`): a reply, JSON or event
stream, by `MAX_UPSTREAM_RESPONSE_BYTES` after decompression, and every line of an event
stream by `MAX_SSE_LINE_BYTES`; past either the connection is closed and the request fails
naming the setting. The listening stream lives long, so only its lines and events are
bounded, not its total.

The MCP logic is `gateway.mcpclient`'s; this module only moves the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import aiohttp

from gateway import upstream_oauth
from gateway.mcpclient import (
    CLOSE_TIMEOUT,
    Backoff,
    Call,
    HttpClient,
    HttpLink,
    ListenOutcome,
    SessionState,
    SseParser,
)
from gateway.mcpclient.fasthttp import Response
from gateway.mcpclient.http import HttpStatusError, http_error
from gateway.mcpclient.http1 import RequestHead
from gateway.mcpclient.wire import decode_json, json_messages, media_type
from gateway.plugin import (
    JSON,
    BackendError,
    BackendSpec,
    Registrar,
    Settings,
    UpstreamConfig,
    hookimpl,
)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
# How long to wait for a reply's event stream to end once the answer is in; see
# `_finish_stream`.
STREAM_END_GRACE = 0.05
# Resuming a reply's event stream: the wait when the server gives no `retry`, the least
# wait whatever it gives, and how many resumptions in a row may bring nothing at all (not
# even a new event id) before the request fails.
RESUME_DELAY = 1.0
RESUME_DELAY_FLOOR = 0.05
QUIET_RESUMPTIONS = 3


def resume_delay(retry: int | None) -> float:
    """How long to wait before resuming a reply's stream: the server's `retry` (in
    milliseconds), with a floor so that a server asking for none cannot make a busy loop."""
    if retry is None:
        return RESUME_DELAY
    return max(retry / 1000, RESUME_DELAY_FLOOR)


def stream_headers(link: _SessionLink, last_event_id: str) -> dict[str, str]:
    """The session's headers for a GET of an event stream, resuming after `last_event_id`."""
    headers = {name: value for name, value in link.headers.items() if name != "Content-Type"}
    headers["Accept"] = "text/event-stream"
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


class _SessionLink(HttpLink):
    """One Streamable HTTP session: its id and version go out as headers once known."""

    def __init__(self, upstream: str, url: str, headers: Mapping[str, str]) -> None:
        super().__init__(upstream, url, headers)
        self.last_event_id = ""
        """Where the listening stream resumes after a drop."""
        self.replies: dict[Response, str] = {}
        """The reply streams being read, with their request's method."""

    def adopt(self, headers: Mapping[str, str]) -> None:
        session_id = headers.get(SESSION_HEADER)
        if session_id:
            self.session_id = session_id
            self.headers[SESSION_HEADER] = session_id

    def resume(self, state: SessionState) -> None:
        super().resume(state)
        if state.session_id:
            self.headers[SESSION_HEADER] = state.session_id

    def initialised(self, protocol_version: str, capabilities: JSON) -> None:
        super().initialised(protocol_version, capabilities)
        self.headers[VERSION_HEADER] = protocol_version

    def end(self, reason: str) -> None:
        super().end(reason)
        for resp, method in self.replies.items():
            # Nothing else wakes a reader whose upstream keeps its stream open.
            failure = BackendError(
                f"upstream {self.upstream!r} {self.lost} before answering {method}"
            )
            resp.content.set_exception(failure)


class McpHttpBackend(HttpClient[_SessionLink]):
    """A `FullBackend` for one upstream MCP server speaking Streamable HTTP."""

    protocol_version = "2025-11-25"
    adoptable = True

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        self._base_headers: dict[str, str] = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **upstream_oauth.sent_headers(upstream.headers),
        }
        self._await_stream_end = True
        self._own_oauth = upstream_oauth.TokenSource.of(
            self.name, upstream.options, upstream.headers, self._guard
        )
        self.oauth: upstream_oauth.Tokens | None = self._own_oauth
        """Where the upstream's OAuth access token comes from, when its registration has
        `oauth`."""

    def borrow(self, source: upstream_oauth.Tokens) -> None:
        """Use `source` (the shared backend's, or the caller's exchanged token) instead of
        a token of its own."""
        self.oauth = source

    async def close(self) -> None:
        await super().close()
        if self._own_oauth is not None:
            await self._own_oauth.close()

    async def _open(self) -> _SessionLink:
        # Nothing to connect: the session begins with the initialize POST.
        return _SessionLink(self.name, self.url, self._base_headers)

    async def _terminate(self, link: _SessionLink) -> None:
        link.end("was closed")
        if link.session_id is None:
            return
        # Courtesy only (the spec's DELETE): an upstream that is gone must not slow shutdown.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self.oauth is not None:
                    # A session adopted from another worker has sent nothing yet, and one
                    # idle for long holds an expired token: the DELETE gets a current one.
                    with contextlib.suppress(BackendError):
                        link.headers["Authorization"] = await self.oauth.header()
                async with self._client().delete(
                    self.url, headers=link.headers, allow_redirects=False
                ):
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass

    # --- POST: every message, and a request's reply ---

    async def _post(self, link: _SessionLink, message: JSON, call: Call | None) -> None:
        if self.oauth is None:
            return await self._post_once(link, message, call)
        # The link's headers are shared by concurrent calls: remember what this one sent.
        sent = link.headers["Authorization"] = await self.oauth.header()
        try:
            await self._post_once(link, message, call)
        except HttpStatusError as exc:
            if exc.status != 401:
                raise
            # Revoked or expired early: once more with a fresh token.
            link.headers["Authorization"] = await self.oauth.header(sent)
            await self._post_once(link, message, call)

    async def _post_once(self, link: _SessionLink, message: JSON, call: Call | None) -> None:
        async with self._posting(link, message) as resp:
            if call is None:
                return
            if call.method == "initialize":
                link.adopt(resp.headers)
            if resp.content_type == "text/event-stream":
                link.replies[resp] = call.method
                try:
                    await self._read_stream(resp, link, call)
                finally:
                    del link.replies[resp]
            else:
                await self._read_body(resp, link, call)

    async def _read_body(self, resp: Response, link: _SessionLink, call: Call) -> None:
        decoded = decode_json(self.name, await resp.read(), call.method, resp.content_type)
        for message in json_messages(decoded):
            await self._receive(link, message, call)
        if not call.reply.done():
            raise BackendError(
                f"upstream {self.name!r} sent no response to {call.method} (id {call.request_id})"
            )

    async def _read_stream(self, resp: Response, link: _SessionLink, call: Call) -> None:
        parser = SseParser(self.bounds)
        await self._read_events(resp, parser, link, call)
        quiet = 0
        while not call.reply.done():
            # A 2025-11-25 server may end a reply's stream before the answer once it has
            # given the stream an event id; the rest comes on a GET resuming from it, after
            # the server's `retry`.
            if not parser.last_event_id:
                raise BackendError(
                    f"upstream {self.name!r} ended its event stream without answering {call.method}"
                )
            if quiet >= QUIET_RESUMPTIONS:
                raise BackendError(
                    f"upstream {self.name!r} ended its event stream without answering "
                    f"{call.method}, and {quiet} resumptions of it brought nothing"
                )
            await asyncio.sleep(resume_delay(parser.retry))
            seen = parser.last_event_id
            resumed = await self._resume(link, seen, call.method)
            link.replies[resumed] = call.method
            try:
                # The SDK's servers keep a resumed stream open past the answer, so it is not
                # read to its end (its connection closes instead of going back to the pool).
                received = await self._read_events(resumed, parser, link, call, finish=False)
            finally:
                del link.replies[resumed]
                resumed.release()
            quiet = 0 if received or parser.last_event_id != seen else quiet + 1

    async def _read_events(
        self,
        resp: Response,
        parser: SseParser,
        link: _SessionLink,
        call: Call,
        *,
        finish: bool = True,
    ) -> int:
        """Read `resp`'s events for `call` until its answer or the stream's end; how many
        messages it carried."""
        received = 0
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                # Other event types carry no JSON-RPC; an event with empty data only primes
                # a resumable stream.
                if event.event != "message" or not event.data.strip():
                    continue
                for message in json_messages(decode_json(self.name, event.data, call.method)):
                    received += 1
                    await self._receive(link, message, call)
                    if call.answered and finish:
                        await self._finish_stream(resp)
                    if call.reply.done():
                        return received
        return received

    async def _resume(self, link: _SessionLink, last_event_id: str, method: str) -> Response:
        """GET the rest of a reply's event stream, from `last_event_id` on."""
        if self._pool is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        if link.lost is not None:
            raise BackendError(f"upstream {self.name!r} {link.lost} before answering {method}")
        head = RequestHead("GET", link.url, stream_headers(link, last_event_id))
        resp = await self._pool.request(head, None)
        try:
            if resp.status >= 300:
                # Not `MessageRefused`: the request went out, and may still be running.
                refused = await http_error(self.name, resp, f"GET (resuming {method})")
                raise BackendError(str(refused), refused.summary)
            if resp.content_type != "text/event-stream":
                raise BackendError(
                    f"upstream {self.name!r} answered GET (resuming {method}) with "
                    f"{media_type(resp.content_type)}, not an event stream"
                )
        except BaseException:
            resp.release()
            raise
        return resp

    async def _finish_stream(self, resp: Response) -> None:
        # A stream read to its end lets the connection go back to the pool; servers end it
        # right after the answer. One that keeps streams open loses this after one miss, so
        # it costs a reconnect per call rather than a wait per call.
        if resp.content.at_eof() or not self._await_stream_end:
            return
        try:
            async with asyncio.timeout(STREAM_END_GRACE):
                while await resp.content.readany():
                    pass
        except TimeoutError:
            self._await_stream_end = False

    # --- GET: the session's listening stream ---

    async def _listen_on(self, link: _SessionLink, backoff: Backoff) -> ListenOutcome:
        headers = stream_headers(link, link.last_event_id)
        async with asyncio.timeout(self.discovery_timeout):
            resp = await self._client().get(self.url, headers=headers, allow_redirects=False)
        try:
            if resp.status == 405:
                return ListenOutcome.NO_STREAM
            if resp.status == 404 and link.session_id is not None:
                return ListenOutcome.EXPIRED
            await self._check_stream(resp)
            parser = SseParser(self.bounds)
            async for chunk in resp.content.iter_any():
                for event in parser.feed(chunk):
                    backoff.reset()
                    await self._receive_event(link, event)
                link.last_event_id = parser.last_event_id or link.last_event_id
                if parser.retry is not None:
                    backoff.least = parser.retry / 1000
            return ListenOutcome.ENDED
        finally:
            resp.close()


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="streamable-http",
            transport="streamable-http",
            factory=McpHttpBackend,
            description="An upstream MCP server over Streamable HTTP (JSON or SSE replies).",
            fields=frozenset({upstream_oauth.FIELD}),
            check_options=upstream_oauth.check_options,
        )
    )
