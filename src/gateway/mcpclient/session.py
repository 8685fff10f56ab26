"""The MCP session with one upstream, the same over every client transport.

A transport subclasses `McpClient` (`client.py`, the `FullBackend` built on this) and
provides only how a link opens (`_open`), how a message goes out on it (`_post`, handing
what comes back to `_receive`), and how the link's server-to-client stream is held open
(`_listen_on`). The rest lives here, once:

- the initialize handshake, on first use (or, with `listens_at_once`, as soon as a
  listener is set), and once again when the upstream has forgotten
  the session (`SessionExpired`), however many requests saw it forget;
- requests matched to their replies by id, with progress tokens of our own where one
  stream carries every request's notifications;
- notifications routed: those about a request to its `on_notification`, the upstream's
  own to the listener;
- the upstream's requests to its client answered: by the `on_request` of the request they
  relate to, else by the listener's `ask`, each in a task of its own (`Answering` in
  `asking.py`; see the package docstring for the policy);
- while a listener is set, the link's stream held open and reopened with backoff.
"""

from __future__ import annotations

import asyncio
import itertools
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import structlog

from gateway.contracts import JSON, AskClient, BackendError, Notify, UpstreamConfig
from gateway.mcpclient.asking import Answering, sole_call
from gateway.mcpclient.link import (
    Backoff,
    Call,
    Link,
    ListenOutcome,
    MessageRefused,
    SessionExpired,
    SessionState,
)
from gateway.mcpclient.wire import (
    CLIENT_INFO,
    SUPPORTED_PROTOCOL_VERSIONS,
    client_capabilities,
    is_response,
    notification,
    one_line,
    params_of,
    progress_token,
    request,
    rpc_result,
    with_progress_token,
)

if TYPE_CHECKING:
    from gateway.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
L = TypeVar("L", bound=Link)

# A stream that stayed up this long starts its backoff again from the first wait.
STREAM_HEALTHY_SECONDS = 10.0
# Notifications a server sends about one request on that request's own reply stream.
REQUEST_NOTIFICATIONS = frozenset({"notifications/progress", "notifications/message"})


class SessionKeeper(Protocol):
    """Decides which session a client uses, where several clients share one session."""

    async def session(
        self, stale: str | None, initialise: Callable[[], Awaitable[SessionState]]
    ) -> SessionState:
        """The session to use: one another client opened, or the one `initialise` opens
        now. `stale` names a session the upstream has forgotten, which must not be used."""
        ...


class McpSession(Answering[L]):
    """The MCP session with one upstream, over the transport a subclass provides."""

    protocol_version: ClassVar[str]
    """The version offered in `initialize`."""
    shared_stream: ClassVar[bool] = False
    """True where one stream carries every request's replies and notifications: progress is
    then asked for under tokens of our own, and server requests are answered from a task
    of their own, so that the stream goes on being read meanwhile."""
    listens_at_once: ClassVar[bool] = False
    """True where `set_listener` opens the session and its listening stream at once (in
    the background, retried with backoff), rather than when a request first opens it: an
    upstream's own notifications must be heard even before anyone calls it."""
    adoptable: ClassVar[bool] = False
    """True where a session is named by an id any client may send (Streamable HTTP's
    `Mcp-Session-Id`), so that other clients, in other processes too, can carry it on."""

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.url = upstream.url
        self.discovery_timeout = settings.tool_timeout
        self.capabilities: JSON = {}
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._listener: Notify | None = None
        self._ask: AskClient | None = None
        self._link: L | None = None
        self._link_lock = asyncio.Lock()
        self.keeper: SessionKeeper | None = None
        """Shares the session with other clients of the upstream (needs `adoptable`)."""
        self._running = False
        self._listening: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering: set[asyncio.Task[None]] = set()

    # --- what a transport provides ---

    @abstractmethod
    async def _open(self) -> L:
        """A new link, not yet initialised."""

    @abstractmethod
    async def _post(self, link: L, message: JSON, call: Call | None) -> None:
        """Send one message on `link`. For a request (`call`), hand whatever arrives about
        it on its own reply stream, if the transport has those, to `_receive` with `call`.
        Raise `SessionExpired` or another `MessageRefused` when the upstream refuses it."""

    @abstractmethod
    async def _listen_on(self, link: L, backoff: Backoff) -> ListenOutcome:
        """Hold `link`'s server-to-client stream open until it ends, handing its messages
        to `_receive`."""

    def _discard(self, link: L, reason: str) -> None:
        """Give up on a link that is replaced or abandoned; nothing to release by default."""

    async def _terminate(self, link: L) -> None:
        """End the current link when the backend closes; nothing to do by default."""

    def _failure(self, exc: Exception, what: str) -> BackendError | None:
        """The one-line `BackendError` for a failure of the transport's own library."""
        return None

    # --- lifecycle ---

    async def start(self) -> None:
        # No network here: the first request connects, so an upstream that is down does not
        # hold up a worker's start-up.
        self._running = True

    async def close(self) -> None:
        self._running = False
        link, self._link = self._link, None
        self._listening = None
        tasks = [*self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if link is not None:
            await self._terminate(link)

    async def detach(self) -> None:
        """Close without ending the session upstream: another client of it carries on."""
        link, self._link = self._link, None
        if link is not None:
            link.end("was closed")
        await self.close()

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        """Where the upstream's own notifications go, and what answers its requests that
        relate to no request of ours. While a listener is set, the link's stream is held
        open: with `listens_at_once` from this call on (a running backend), otherwise from
        when a request first opens the link."""
        self._listener, self._ask = listener, ask
        if listener is None:
            self._stop_listening()
            return
        opened = self._link is not None or (self.listens_at_once and self._running)
        if opened and (self._listening is None or self._listening.done()):
            self._listening = self._spawn(self._listen())

    # --- round trips ---

    async def _within(self, what: str, timeout: float, work: Awaitable[T]) -> T:
        """Await `work` under `timeout`, with the same one-line errors as requests."""
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({what})"
            ) from None
        except Exception as exc:
            failure = self._failure(exc, what)
            if failure is None:
                raise
            raise failure from None

    async def _send(self, call: Call) -> JSON:
        link = await self._current()
        try:
            return await self._round_trip(link, call)
        except SessionExpired:
            link = await self._renew(link)
        try:
            return await self._round_trip(link, call)
        except SessionExpired:
            raise BackendError(
                f"upstream {self.name!r} answered HTTP 404 to {call.method} "
                "with a freshly initialised session"
            ) from None

    async def _round_trip(self, link: L, call: Call) -> JSON:
        request_id = next(self._ids)
        params, token = call.params, None
        if call.on_notification is not None and self.shared_stream:
            # A token of our own routes progress back to this request even when two callers
            # picked the same token.
            token = f"aio-mcp-gateway-{next(self._tokens)}"
            caller_token = progress_token(params)
            call.shown_token = token if caller_token is None else caller_token
            link.progress[token] = call
            params = with_progress_token(params, token)
        call.reply = asyncio.get_running_loop().create_future()
        call.request_id, call.link = request_id, link
        link.pending[request_id] = call
        try:
            try:
                await self._post(link, request(request_id, call.method, params), call)
            except MessageRefused:
                call.request_id = None
                raise
            reply = await call.reply
        finally:
            del link.pending[request_id]
            if token is not None:
                del link.progress[token]
            # Whatever the upstream still asks about this request is moot now.
            for task in call.asking:
                task.cancel()
            if call.reply.done() and not call.reply.cancelled():
                # Taken here too: a failure the caller learns another way is not lost.
                call.reply.exception()
        return rpc_result(self.name, reply, call.method)

    async def _notify_upstream(self, method: str, params: JSON | None) -> None:
        link = await self._current()
        try:
            await self._post(link, notification(method, params), None)
        except SessionExpired:
            # A notification belongs to its session; a new session would not understand it.
            raise BackendError(
                f"upstream {self.name!r} no longer knows the session; {method} not delivered"
            ) from None

    # --- the MCP session ---

    async def _current(self) -> L:
        link = self._link
        if link is not None and link.lost is None:
            return link
        async with self._link_lock:
            link = self._link
            if link is None or link.lost is not None:
                link = await self._initialised_link()
                self._install(link)
            return link

    async def _renew(self, stale: L) -> L:
        async with self._link_lock:
            link = self._link
            # Many calls can see the same expiry; only the first of them re-initialises.
            if link is stale or link is None or link.lost is not None:
                self._link = None
                self._discard(stale, "forgot the session")
                link = await self._initialised_link(stale.session_id)
                self._install(link)
            return link

    async def _initialised_link(self, stale: str | None = None) -> L:
        """A link in a new session; with a `keeper`, in the session it says to use (`stale`
        names the one the upstream just forgot)."""
        if not self._running:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        link = await self._open()
        try:
            if self.keeper is None:
                await self._handshake(link)
            else:
                link.resume(await self.keeper.session(stale, lambda: self._handshake(link)))
            if not self._running:
                # Closed meanwhile: the link would outlive the backend.
                raise BackendError(f"upstream {self.name!r}: not started or already closed")
            return link
        except BaseException:
            self._discard(link, "was abandoned")
            raise

    async def _handshake(self, link: L) -> SessionState:
        """Open a session on `link` with the initialize exchange."""
        params: JSON = {
            "protocolVersion": self.protocol_version,
            "capabilities": client_capabilities(self.protocol_version),
            "clientInfo": CLIENT_INFO,
        }
        result = await self._round_trip(link, Call("initialize", params))
        version = result.get("protocolVersion")
        if version not in SUPPORTED_PROTOCOL_VERSIONS:
            chose = f"upstream {self.name!r} chose unsupported protocol version"
            raise BackendError(
                f"{chose} {one_line(repr(version), 80)}",
                f"upstream {self.name!r} chose an unsupported protocol version",
            )
        capabilities = result.get("capabilities")
        state = SessionState(
            link.session_id, str(version), capabilities if isinstance(capabilities, dict) else {}
        )
        link.initialised(state.protocol_version, state.capabilities)
        await self._post(link, notification("notifications/initialized", None), None)
        return state

    def _install(self, link: L) -> None:
        self._link = link
        self.capabilities = link.capabilities
        if self._listener is None:
            return
        task = self._listening
        if task is not None and task is asyncio.current_task():
            return  # the listening task renewed the link itself and carries on with it
        self._stop_listening()
        self._listening = self._spawn(self._listen())

    # --- what the upstream sends ---

    async def _receive(self, link: L, message: JSON, call: Call | None = None) -> None:
        """Route one message from the upstream; `call` is the request whose own reply
        stream carried it, if any."""
        method = message.get("method")
        if not isinstance(method, str):
            self._resolve(link, message)
        elif "id" in message:
            await self._on_server_request(link, message, call)
        elif call is not None and method in REQUEST_NOTIFICATIONS:
            await self._notify_caller(call, method, params_of(message))
        elif method == "notifications/message" and self.shared_stream:
            # A log message about a request, on a stream that cannot say which.
            owner = sole_call(link, asking=False)
            if owner is not None:
                await self._notify_caller(owner, method, params_of(message))
            else:
                await self._deliver(method, params_of(message))
        elif method == "notifications/progress":
            # Progress belongs to a request; on a shared stream, our own token names it.
            params = params_of(message)
            token = params.get("progressToken")
            owner = link.progress.get(token) if isinstance(token, str) else None
            if owner is not None:
                await self._notify_caller(
                    owner, method, {**params, "progressToken": owner.shown_token}
                )
        else:
            await self._deliver(method, params_of(message))

    def _resolve(self, link: L, message: JSON) -> None:
        request_id = message.get("id")
        call = link.pending.get(request_id) if type(request_id) is int else None
        if call is not None and is_response(message) and not call.reply.done():
            call.answered = True
            call.reply.set_result(message)

    async def _notify_caller(self, call: Call, method: str, params: JSON) -> None:
        if call.on_notification is None:
            return
        try:
            await call.on_notification(method, params)
        except Exception as exc:
            # A stream may serve many requests: the failure goes to the request whose
            # handler failed (which is then abandoned), not to the stream's reader.
            if not call.reply.done():
                call.reply.set_exception(exc)

    async def _deliver(self, method: str, params: JSON) -> None:
        """Hand a notification to the listener, if any; its failure must not end a stream."""
        listener = self._listener
        if listener is None:
            return
        try:
            await listener(method, params)
        except Exception:
            log.exception(
                "upstream notification listener failed", upstream=self.name, method=method
            )

    # --- the listening stream ---

    async def _listen(self) -> None:
        """Hold the current link's stream open while a listener is set: reopen it with
        backoff when it drops, renew the session when the upstream forgot it, stop when the
        upstream has no such stream."""
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        listened: L | None = None
        while self._running and self._listener is not None:
            try:
                link = await self._within("initialize", self.discovery_timeout, self._current())
                if link is not listened:
                    backoff, listened = Backoff(), link
                opened = loop.time()
                outcome = await self._listen_on(link, backoff)
                if outcome is ListenOutcome.NO_STREAM:
                    return
                if outcome is ListenOutcome.EXPIRED:
                    await self._within("initialize", self.discovery_timeout, self._renew(link))
                    continue
                if loop.time() - opened >= STREAM_HEALTHY_SECONDS:
                    backoff.reset()
            except Exception as exc:
                if isinstance(exc, BackendError | TimeoutError) or self._failure(exc, ""):
                    log.info("upstream event stream failed", upstream=self.name, error=str(exc))
                else:
                    # Whatever went wrong, notifications matter enough to keep trying.
                    log.exception("upstream event stream failed", upstream=self.name)
            await asyncio.sleep(backoff.next_delay())

    def _stop_listening(self) -> None:
        task, self._listening = self._listening, None
        if task is not None and not task.done():
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
