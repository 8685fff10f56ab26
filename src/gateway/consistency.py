"""Read-your-writes across workers and instances: a write returns once every live worker
has applied it.

Each worker serves the catalogue from memory and keeps a short-lived copy of the sessions
it saw, so that a call costs no store query and no cache round trip. A change made through
one worker must therefore reach the others before the write that made it returns:

- Every worker is a *member*: it renews a heartbeat key of its own
  (`consistency:worker:<id>`, every `HEARTBEAT_INTERVAL`, gone `HEARTBEAT_TTL` after the
  worker stops) and is listed in one shared record (`consistency:members`), which changes
  only when a worker joins or leaves, under a short lock (`add` with a TTL).
- A write *announces* its change with a fresh change id (a catalogue version on the
  `catalogue` channel, an ended session as a hub event). Each worker applies it, then
  *acknowledges* with a key `consistency:ack:<change>:<worker>`.
- The writer polls the acknowledgements of the other members and returns once each has
  answered or lost its heartbeat, so a killed worker holds writes back no longer than
  `HEARTBEAT_TTL`. It announces again every `REANNOUNCE` seconds, since pub/sub may drop
  a message. Past `CONSISTENCY_TIMEOUT` it returns anyway, with a warning naming the
  workers that did not answer (they catch up through the store poll).

With a cache that lives in one process (`memory`), each worker is a cluster of its own:
there is nothing to wait for, and other workers follow through the store poll as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import orjson
import structlog

from gateway.cacheuse import CacheUnavailable, CacheUse

log = structlog.get_logger(__name__)

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TTL = 5.0
"""Seconds after its last heartbeat that a worker stops counting as a member."""
ACK_POLL = 0.02
"""Seconds between the writer's looks at the acknowledgements."""
REANNOUNCE = 0.5
LOCK_TTL = 2.0
"""Seconds the membership lock lives, should its holder die while holding it."""

MEMBERS_KEY = "consistency:members"
LOCK_KEY = "consistency:members-lock"

Announce = Callable[[str], Awaitable[None]]
"""Publishes a change to every worker, carrying the change id it is given."""


def worker_key(worker: str) -> str:
    return f"consistency:worker:{worker}"


def ack_key(change: str, worker: str) -> str:
    return f"consistency:ack:{change}:{worker}"


class Consistency:
    """This worker's membership, and the barrier its writes wait at."""

    def __init__(self, use: CacheUse, timeout: float, shared: bool) -> None:
        self.use = use
        self.timeout = timeout
        self.shared = shared
        """False when the cache lives in this process: no other worker can be reached."""
        # Readable in the warnings that name workers; the random part tells a restarted
        # worker from the one that had its pid.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._ack_ttl = 2 * max(timeout, 1.0)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Become a member before anything is loaded, so no write can miss this worker."""
        if not self.shared:
            return
        try:
            await self._beat()
            await self._join()
        except CacheUnavailable:
            pass  # logged by the cache use; the heartbeat joins once the cache answers
        self._task = asyncio.create_task(self._heartbeat())

    async def close(self) -> None:
        # The flag ends the heartbeat even if a cache call turned the cancellation into
        # a failure it carries on from.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.shared:
            return
        try:
            async with self._membership() as members:
                members.discard(self.worker)
            await self.use.run(self.use.cache.delete(worker_key(self.worker)))
        except CacheUnavailable:
            pass  # the heartbeat key expires by itself

    # --- the barrier ---------------------------------------------------------------------------

    async def everywhere(self, what: str, announce: Announce) -> None:
        """Announce a change this worker has applied already, and return once every other
        live member has applied it too, or after the timeout."""
        change = secrets.token_hex(8)
        await announce(change)
        if not self.shared:
            return
        try:
            await self._confirmed(what, change, announce)
        except CacheUnavailable:
            log.warning("change not confirmed: the cache is unavailable", change=what)

    async def applied(self, change: object) -> None:
        """Acknowledge a change announced with id `change` (anything else is ignored: an
        announcement from a gateway that does not wait for acknowledgements)."""
        if not self.shared or not isinstance(change, str) or not change:
            return
        with contextlib.suppress(CacheUnavailable):
            await self.use.run(
                self.use.cache.set(ack_key(change, self.worker), b"1", self._ack_ttl)
            )

    async def _confirmed(self, what: str, change: str, announce: Announce) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = started + REANNOUNCE
        pending = await self._members() - {self.worker}
        gone: set[str] = set()
        while pending:
            if loop.time() - started >= self.timeout:
                log.warning(
                    "change not applied by every worker within CONSISTENCY_TIMEOUT",
                    change=what,
                    workers=sorted(pending),
                    timeout=self.timeout,
                )
                return
            await asyncio.sleep(ACK_POLL)
            acked, stopped = await self._answers(change, pending)
            pending -= acked | stopped
            gone |= stopped
            if pending and loop.time() >= again:
                await announce(change)
                again = loop.time() + REANNOUNCE
        if gone:
            log.info("workers without a heartbeat were not waited for", workers=sorted(gone))
        log.debug("change applied everywhere", change=what, seconds=loop.time() - started)

    async def _answers(self, change: str, workers: Iterable[str]) -> tuple[set[str], set[str]]:
        """Of `workers`, those that acknowledged `change`, and those no longer alive."""
        ordered = list(workers)
        get = self.use.cache.get
        replies = await self.use.run(
            asyncio.gather(
                *(get(ack_key(change, w)) for w in ordered),
                *(get(worker_key(w)) for w in ordered),
            )
        )
        acks, beats = replies[: len(ordered)], replies[len(ordered) :]
        acked = {w for w, ack in zip(ordered, acks, strict=True) if ack is not None}
        stopped = {w for w, beat in zip(ordered, beats, strict=True) if beat is None}
        return acked, stopped - acked

    # --- membership ----------------------------------------------------------------------------

    async def _beat(self) -> None:
        await self.use.run(self.use.cache.set(worker_key(self.worker), b"1", HEARTBEAT_TTL))

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self._beat()
                # The record may have been lost (a cache restart) or written over.
                if self.worker not in await self._members():
                    await self._join()
            except CacheUnavailable:
                pass  # logged by the cache use; the next beat retries

    async def _join(self) -> None:
        async with self._membership() as members:
            listed = sorted(members)
            beats = await self.use.run(
                asyncio.gather(*(self.use.cache.get(worker_key(m)) for m in listed))
            )
            # Workers that died without leaving are dropped here, so the record stays small.
            members.difference_update(
                m for m, beat in zip(listed, beats, strict=True) if beat is None
            )
            members.add(self.worker)
        log.info("worker joined the cluster", worker=self.worker, members=len(members))

    async def _members(self) -> set[str]:
        raw = await self.use.run(self.use.cache.get(MEMBERS_KEY))
        try:
            listed = orjson.loads(raw) if raw is not None else []
        except orjson.JSONDecodeError:
            listed = []
        return {m for m in listed if isinstance(m, str)} if isinstance(listed, list) else set()

    @contextlib.asynccontextmanager
    async def _membership(self) -> AsyncIterator[set[str]]:
        """The member set, to change in place; written back under the membership lock."""
        cache, token = self.use.cache, self.worker.encode()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2 * LOCK_TTL
        held = await self.use.run(cache.add(LOCK_KEY, token, LOCK_TTL))
        while not held and loop.time() < give_up:
            await asyncio.sleep(random.uniform(0.01, 0.05))
            held = await self.use.run(cache.add(LOCK_KEY, token, LOCK_TTL))
        # Not held after twice its TTL: the cache misbehaves; go on, the heartbeat heals.
        try:
            members = await self._members()
            yield members
            await self.use.run(cache.set(MEMBERS_KEY, orjson.dumps(sorted(members))))
        finally:
            if held and await self.use.run(cache.get(LOCK_KEY)) == token:
                await self.use.run(cache.delete(LOCK_KEY))
