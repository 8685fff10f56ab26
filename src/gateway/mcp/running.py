"""Which requests of a session are running on some worker, so a `notifications/cancelled`
for one that is not costs no publish.

A worker knows its own requests (`Hub.inflight`). For the others', each request that is
still running `ANNOUNCE_AFTER` (0.5) seconds after it started puts a key in the cache, and
takes it away when it ends; a cancellation this worker cannot act on is published only when
that key is there. So the hot path writes nothing for the quick requests (most of them), and a
client cancelling ids that were never sent, or are long done, costs one cache read each,
no write and no publish. A cancellation that finds no key may have come before the
request was announced: it looks once more `RECHECK_AFTER` later, when any request still
running has been (one that ended sooner needs no cancelling). At most `MAX_RECHECKS` wait
at once per worker; past that a cancellation gets its first look only.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from typing import Any

import structlog

from gateway.contracts import Cache

log = structlog.get_logger(__name__)

ANNOUNCE_AFTER = 0.5
"""Seconds a request runs before other workers can cancel it. Long enough that a loaded
worker's ordinary requests (p99 in the tens of milliseconds) write nothing: every write
here is a cache round trip, a database write with the `database` cache."""
SWEEP_EVERY = ANNOUNCE_AFTER / 5
"""One timer per worker finds the requests due for announcing: a request costs a dict entry,
not a timer of its own, and is announced up to this much later than `ANNOUNCE_AFTER`."""
RECHECK_AFTER = 2 * ANNOUNCE_AFTER + SWEEP_EVERY
MAX_RECHECKS = 1024
ANNOUNCED_TTL = 3600.0
"""A key outlives its request only when its worker died; then it goes after this."""


def running_key(session_id: str, request_id_json: str) -> str:
    # Hashed: a request id is the client's choice, of any length.
    digest = hashlib.sha256(f"{session_id}\0{request_id_json}".encode()).hexdigest()[:32]
    return f"running:{digest}"


class Running:
    """This worker's long-running requests, announced in the cache."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._tasks: set[asyncio.Task[None]] = set()
        self._young: dict[_Announcement, None] = {}
        """Requests not announced yet, oldest first (a dict keeps insertion order)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self.rechecks = 0
        """Cancellations waiting for their second look."""

    def started(self, session_id: str, request_id_json: str) -> _Announcement:
        return _Announcement(self, session_id, request_id_json)

    def young(self, announcement: _Announcement) -> float:
        """Watch a request that has just started; returns its start time."""
        loop = asyncio.get_running_loop()
        self._young[announcement] = None
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_EVERY, self._sweep)
        return loop.time()

    def grown_up(self, announcement: _Announcement) -> None:
        """Stop watching a request (it ended before it was announced)."""
        self._young.pop(announcement, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() - ANNOUNCE_AFTER
        young = self._young
        while young:
            oldest = next(iter(young))
            if oldest.since > due:
                break
            del young[oldest]
            oldest.announce()
        self._sweeper = loop.call_later(SWEEP_EVERY, self._sweep) if young else None

    async def elsewhere(self, session_id: str, request_id_json: str) -> bool:
        """Whether the request may be running on another worker: the key now, or else once
        more after `RECHECK_AFTER` (the request may have started just before)."""
        if await self._announced(session_id, request_id_json):
            return True
        if self.rechecks >= MAX_RECHECKS:
            return False
        self.rechecks += 1
        try:
            await asyncio.sleep(RECHECK_AFTER)
        finally:
            self.rechecks -= 1
        return await self._announced(session_id, request_id_json)

    async def _announced(self, session_id: str, request_id_json: str) -> bool:
        try:
            return await self.cache.get(running_key(session_id, request_id_json)) is not None
        except Exception as exc:
            # Without the cache no other worker could be told anyway.
            log.warning("running requests unknown; cancellation not sent on", error=str(exc))
            return False

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._young.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def write(self, key: str, present: bool) -> None:
        try:
            if present:
                await self.cache.set(key, b"1", ANNOUNCED_TTL)
            else:
                await self.cache.delete(key)
        except Exception as exc:
            log.warning("running request not announced", error=str(exc))


class _Announcement:
    """One request's key: set once the request has run `ANNOUNCE_AFTER`, gone when it ends."""

    __slots__ = ("_announced", "_key", "_request_id_json", "_running", "_session_id", "since")

    def __init__(self, running: Running, session_id: str, request_id_json: str) -> None:
        self._running = running
        # The key is hashed only for the few requests that run long enough to need it.
        self._session_id = session_id
        self._request_id_json = request_id_json
        self._key = ""
        self._announced: asyncio.Task[None] | None = None
        self.since = running.young(self)

    def announce(self) -> None:
        self._key = running_key(self._session_id, self._request_id_json)
        self._announced = self._running.spawn(self._running.write(self._key, True))

    def ended(self) -> None:
        if self._announced is None:
            self._running.grown_up(self)
        else:
            self._running.spawn(self._withdraw(self._announced))

    async def _withdraw(self, announced: asyncio.Task[None]) -> None:
        # After the write that set it, or the key could come back and stay.
        await asyncio.gather(announced, return_exceptions=True)
        await self._running.write(self._key, False)
