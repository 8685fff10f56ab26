"""Per-client upstream sessions (`"session": "per-client"`): each client session gets an
upstream MCP session of its own, whichever worker or instance serves it (README: "Upstream
sessions: shared or per-client").

- The first worker to need one claims it in the cache (`add`), opens it and records its
  `Mcp-Session-Id`, version and capabilities; the others adopt it without a handshake
  (`gateway.mcpclient`'s `SessionKeeper`), and replace it the same way, once, when the
  upstream forgets it.
- It ends by DELETE, once for the cluster (claimed in the cache), when the client session
  ends (the hub's `session-closed` event, which every worker hears) or expires (a sweep
  asks the session store about those idle here); past `PER_CLIENT_SESSIONS_MAX` on one
  worker, the least recently used ends.
- A request without a client session gets an upstream session for itself alone.
- A worker that stops leaves the sessions it held to the other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from gateway import upstream_oauth
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.client_backend import ClientBackend
from gateway.contracts import (
    Backend,
    BackendError,
    FullBackend,
    UpstreamConfig,
)
from gateway.logconfig import short_hash
from gateway.mcpclient import CLOSE_TIMEOUT, McpClient, SessionState
from gateway.plugins import Plugins
from gateway.registry import Registry, backend_config
from gateway.sessions import SessionStore
from gateway.settings import Settings

log = structlog.get_logger(__name__)

Client = McpClient[Any]
Key = tuple[str, str]
"""(client session id, upstream name)"""

CLAIM_POLL = 0.02
"""How often a worker waiting for another's claim looks for the session it records."""
END_CLAIM_TTL = 300.0
"""How long the claim to end an upstream session is kept: longer than any worker takes to
hear that its client session ended."""


def adoptable(backend: Backend) -> bool:
    """Whether `backend` can share its upstream session with other workers by id."""
    return isinstance(backend, McpClient) and backend.adoptable


def _encode(state: SessionState) -> bytes:
    return orjson.dumps(
        {"id": state.session_id, "version": state.protocol_version, "caps": state.capabilities}
    )


def _decode(raw: bytes | None) -> SessionState | None:
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        return SessionState(data["id"], data["version"], data["caps"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def record_key(client: str, config: UpstreamConfig) -> str:
    """Where a client's session with an upstream is recorded. The upstream's address is part
    of it: a session of the old address means nothing to a new one."""
    where = hashlib.blake2b(f"{config.transport} {config.url}".encode(), digest_size=8)
    return f"upstream-session:{config.name}:{where.hexdigest()}:{client}"


class _Keeper:
    """Agrees with the other workers on one client's session with one upstream."""

    def __init__(self, pool: UpstreamSessions, key: str) -> None:
        self.pool = pool
        self.key = key
        self.state: SessionState | None = None
        """The session the backend uses, once it has one."""

    async def session(
        self, stale: str | None, initialise: Callable[[], Awaitable[SessionState]]
    ) -> SessionState:
        self.state = await self.pool.agree(self.key, stale, initialise)
        return self.state


class _Known:
    """Keeps to one known session, to end it from a worker that does not hold it."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    async def session(
        self, stale: str | None, initialise: Callable[[], Awaitable[SessionState]]
    ) -> SessionState:
        return self.state


@dataclass(slots=True, eq=False)
class _Held:
    """One client session's upstream session, as this worker holds it."""

    backend: Client
    config: UpstreamConfig
    keeper: _Keeper
    last_used: float
    renewed: float
    busy: int = 0


class UpstreamSessions:
    """This worker's per-client upstream sessions, least recently used first."""

    def __init__(
        self,
        settings: Settings,
        plugins: Plugins,
        registry: Registry,
        sessions: SessionStore,
        use: CacheUse,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.registry = registry
        self.sessions = sessions
        self.use = use
        self.limit = settings.per_client_sessions_max
        self.ttl = settings.session_ttl
        self.sweep_every = min(60.0, max(0.5, settings.session_ttl / 4))
        self.held: OrderedDict[Key, _Held] = OrderedDict()
        self._opening: dict[Key, asyncio.Future[_Held]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeping = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        stopped: list[asyncio.Future[Any]] = [*self._opening.values()]
        if self._sweeping is not None:
            stopped.append(self._sweeping)
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)
        # Endings (a DELETE is bounded by CLOSE_TIMEOUT) get the time to finish, so that no
        # backend is left half closed; what is still running then is cancelled.
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT * 2)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        held, self.held = self.held, OrderedDict()
        # Other workers may go on serving these clients: leave their sessions open.
        await asyncio.gather(*(h.backend.detach() for h in held.values()), return_exceptions=True)

    def backend_for(self, upstream: str, client: str | None) -> FullBackend:
        """The backend serving `upstream` to a client session, or (`client` None) to one
        request without a session."""
        return ClientBackend(self, upstream, client)

    async def session_ended(self, client: str) -> None:
        """End a client session's upstream sessions held here (the hub's listener)."""
        for key in [key for key in self.held if key[0] == client]:
            self._spawn(self._end(self.held.pop(key)))

    # --- using a session -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def using(self, upstream: str, client: str | None) -> AsyncIterator[Client]:
        if client is None:
            backend = self._new_backend(self._config(upstream))
            await backend.start()
            try:
                yield backend
            finally:
                # Ended in the background: the caller's answer need not wait for a DELETE.
                self._spawn(backend.close())
            return
        held = await self.acquire(upstream, client)
        held.busy += 1
        try:
            yield held.backend
        finally:
            held.busy -= 1

    async def acquire(self, upstream: str, client: str) -> _Held:
        key = (client, upstream)
        config = self._config(upstream)
        held = self.held.get(key)
        if held is not None:
            if held.config == config:
                self.held.move_to_end(key)
                held.last_used = now = time.monotonic()
                if now - held.renewed > self.ttl / 10:
                    held.renewed = now
                    self._spawn(self._renew(held))
                return held
            del self.held[key]
            self._spawn(self._retire(held, config))
        opening = self._opening.get(key)
        if opening is None:
            opening = asyncio.ensure_future(self._open(key, config))
            self._opening[key] = opening
            opening.add_done_callback(lambda done: self._opened(key, done))
        # Shielded: callers that give up do not stop the others' session from opening.
        return await asyncio.shield(opening)

    def _opened(self, key: Key, done: asyncio.Future[_Held]) -> None:
        self._opening.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, when every caller gave up

    async def _open(self, key: Key, config: UpstreamConfig) -> _Held:
        backend = self._new_backend(config)
        keeper = _Keeper(self, record_key(key[0], config))
        backend.keeper = keeper
        await backend.start()
        try:
            await backend.connect()
        except BaseException:
            await backend.close()
            raise
        now = time.monotonic()
        held = _Held(backend, config, keeper, now, now)
        self.held[key] = held
        self._bound(key)
        shared = self.registry.full_backends.get(key[1])
        if shared is not None:
            # The upstream's own notifications come on the shared session's stream, which
            # is listened to once that session is open: open it, if no call has yet.
            self._spawn(shared.connect())
        return held

    def _bound(self, opened: Key) -> None:
        while len(self.held) > self.limit:
            idle = (k for k, h in self.held.items() if h.busy == 0 and k != opened)
            victim = next(idle, next(iter(self.held)))
            held = self.held.pop(victim)
            log.info(
                "per-client upstream session ended: this worker holds too many",
                upstream=victim[1],
                session=short_hash(victim[0]),
                limit=self.limit,
            )
            self._spawn(self._end(held))

    def _config(self, upstream: str) -> UpstreamConfig:
        record = self.registry.catalogue.upstreams.get(upstream)
        if record is None:
            raise BackendError(f"upstream {upstream!r} is no longer registered")
        return backend_config(record)

    def _new_backend(self, config: UpstreamConfig) -> Client:
        spec = self.plugins.backend_for(config.transport)
        backend = None if spec is None else spec.factory(config, self.settings)
        if backend is None or not adoptable(backend):
            raise BackendError(
                f"upstream {config.name!r}: transport {config.transport!r} cannot hold "
                "per-client sessions"
            )
        assert isinstance(backend, McpClient)
        upstream_oauth.share_token(backend, self.registry.backends.get(config.name))
        return backend

    # --- agreeing on a session across workers ----------------------------------------------

    async def agree(
        self, key: str, stale: str | None, initialise: Callable[[], Awaitable[SessionState]]
    ) -> SessionState:
        """The session recorded under `key`, unless it is `stale`; else the one this worker
        opens and records, having claimed the right to. Without the cache, this worker's
        own."""
        lock = f"{key}:opening"
        cache = self.use.cache
        try:
            while True:
                recorded = await self._read(key)
                if recorded is not None and (stale is None or recorded.session_id != stale):
                    return recorded
                if await self.use.run(cache.add(lock, b"1", max(1.0, self.settings.tool_timeout))):
                    break
                await asyncio.sleep(CLAIM_POLL)
            # The claim's last holder may have recorded its session just before letting go.
            recorded = await self._read(key)
        except CacheUnavailable:
            log.warning("per-client upstream session not shared: the cache is unavailable")
            return await initialise()
        try:
            if recorded is not None and (stale is None or recorded.session_id != stale):
                return recorded
            state = await initialise()
            with contextlib.suppress(CacheUnavailable):
                await self.use.run(cache.set(key, _encode(state), self.ttl))
            return state
        finally:
            with contextlib.suppress(CacheUnavailable):
                await self.use.run(cache.delete(lock))

    async def _read(self, key: str) -> SessionState | None:
        return _decode(await self.use.run(self.use.cache.get(key)))

    async def _renew(self, held: _Held) -> None:
        """Keep the record alive while the client uses it; a record another worker replaced
        is left alone (this worker's backend adopts the new session at its next 404)."""
        keeper = held.keeper
        with contextlib.suppress(CacheUnavailable):
            recorded = await self._read(keeper.key)
            if keeper.state is not None and recorded in (None, keeper.state):
                await self.use.run(self.use.cache.set(keeper.key, _encode(keeper.state), self.ttl))

    # --- ending sessions -------------------------------------------------------------------

    async def _end(self, held: _Held) -> None:
        """End an upstream session with DELETE, once however many workers held it."""
        keeper, ended = held.keeper, False
        try:
            recorded = await self._read(keeper.key)
            candidates = [s for s in (keeper.state, recorded) if s is not None and s.session_id]
            for state in {s.session_id: s for s in candidates}.values():
                claim = f"upstream-session-end:{held.config.name}:{state.session_id}"
                if not await self.use.run(self.use.cache.add(claim, b"1", END_CLAIM_TTL)):
                    continue
                if state == keeper.state:
                    ended = True
                    await held.backend.close()
                else:
                    await self._end_elsewhere(held.config, state)
            if recorded is not None:
                await self.use.run(self.use.cache.delete(keeper.key))
        except CacheUnavailable:
            if not ended:  # nobody to agree with: end what this worker holds
                ended = True
                await held.backend.close()
        finally:
            if not ended:
                await held.backend.detach()

    async def _end_elsewhere(self, config: UpstreamConfig, state: SessionState) -> None:
        backend = self._new_backend(config)
        backend.keeper = _Known(state)
        await backend.start()
        try:
            await backend.connect()  # adopts the session: nothing is sent
        finally:
            await backend.close()

    async def _retire(self, held: _Held, config: UpstreamConfig) -> None:
        """An upstream's registration changed: a session at its old address ends, one at
        the same address carries on under the new settings."""
        if record_key("", held.config) == record_key("", config):
            await held.backend.detach()
        else:
            await self._end(held)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                await self._sweep_once()
            except Exception as exc:
                log.warning("per-client upstream session sweep failed", error=str(exc))

    async def _sweep_once(self) -> None:
        """End the sessions of upstreams no longer per-client, and of client sessions that
        have expired (asked only of those idle here: a busy one is alive)."""
        now = time.monotonic()
        for key, held in list(self.held.items()):
            client, upstream = key
            if upstream in self.registry.per_client:
                if held.busy or now - held.last_used < self.sweep_every:
                    continue
                try:
                    if await self.sessions.get(client) is not None:
                        continue
                except CacheUnavailable:
                    return
            if self.held.get(key) is held:
                del self.held[key]
                self._spawn(self._end(held))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            log.info("per-client upstream session upkeep failed", error=str(exc))
