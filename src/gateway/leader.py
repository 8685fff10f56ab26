"""Leader election: exactly one worker cluster-wide runs the background jobs.

Each worker tries `add("leader", its id, LEADER_TTL)` (set-if-absent); the winner renews
every third of the TTL. If the leader dies its key expires and another worker takes over
within one TTL. Renewal reads the key and re-sets it only while it still holds its own id;
with a renewal margin of two thirds of the TTL the read-then-write window cannot hand the
key to two workers in practice. With the `memory` cache "cluster-wide" is one worker.

The jobs: upstream health checks (kept in the cache, shown by `GET /upstreams`) and a
periodic catalogue refresh from every upstream (written only when the tools changed).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from gateway.cacheuse import CacheUnavailable, CacheUse

log = structlog.get_logger(__name__)

LEADER_KEY = "leader"


def health_key(upstream: str) -> str:
    return f"upstream-health:{upstream}"


Job = Callable[[], Awaitable[None]]


class LeaderElection:
    def __init__(self, use: CacheUse, ttl: float) -> None:
        self.use = use
        self.ttl = ttl
        self.identity = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.is_leader = False
        self._jobs: list[tuple[str, float, Job]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add_job(self, name: str, interval: float, job: Job) -> None:
        self._jobs.append((name, interval, job))

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._campaign()))
        for name, interval, job in self._jobs:
            self._tasks.append(asyncio.create_task(self._run_job(name, interval, job)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.is_leader:
            try:
                if await self.use.run(self.use.cache.get(LEADER_KEY)) == self.identity.encode():
                    await self.use.run(self.use.cache.delete(LEADER_KEY))
            except CacheUnavailable:
                pass
            self.is_leader = False

    async def _campaign(self) -> None:
        while True:
            try:
                await self._term()
            except CacheUnavailable:
                # Keep the last view: a leader carries on until its key would have expired.
                pass
            await asyncio.sleep(self.ttl / 3)

    async def _term(self) -> None:
        me = self.identity.encode()
        cache = self.use.cache
        if self.is_leader:
            if await self.use.run(cache.get(LEADER_KEY)) == me:
                await self.use.run(cache.set(LEADER_KEY, me, self.ttl))
                return
            self.is_leader = False
            log.warning("leadership lost", worker=self.identity)
        if await self.use.run(cache.add(LEADER_KEY, me, self.ttl)):
            self.is_leader = True
            log.info("leader elected", worker=self.identity)

    async def _run_job(self, name: str, interval: float, job: Job) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.is_leader:
                continue
            started = time.monotonic()
            try:
                await job()
            except Exception as exc:
                log.warning("background job failed", job=name, error=str(exc))
            else:
                log.debug(
                    "background job done", job=name, seconds=round(time.monotonic() - started, 3)
                )


async def record_health(use: CacheUse, upstream: str, error: str | None, ttl: float) -> None:
    status: dict[str, Any] = {"ok": error is None, "checked_at": time.time()}
    if error is not None:
        status["error"] = error
    try:
        await use.run(use.cache.set(health_key(upstream), orjson.dumps(status), ttl))
    except CacheUnavailable:
        pass


async def read_health(use: CacheUse, upstream: str) -> dict[str, Any] | None:
    try:
        raw = await use.run(use.cache.get(health_key(upstream)))
    except CacheUnavailable:
        return None
    return None if raw is None else dict(orjson.loads(raw))
