"""Which objects a configuration file manages (the `config_managed` table: rows of kind and
name that the last apply declared), and the lease that lets one process apply at a time
(`config_lease`), both from migration 10; and the starts that applied a file
(`config_applied`, migration 12)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable

from gateway.store import Store, StoreError

LEASE_TTL = 30.0
"""Seconds a dead applier keeps the lease; a live one renews it every third of this."""

APPLIED_KEPT = 30 * 24 * 3600.0
"""Seconds a record of an applied start is kept."""


async def managed(store: Store) -> frozenset[tuple[str, str]]:
    async with store.connection() as conn:
        rows = await conn.fetchall("SELECT kind, name FROM config_managed")
    return frozenset((str(kind), str(name)) for kind, name in rows)


async def set_managed(store: Store, objects: Iterable[tuple[str, str]]) -> None:
    """Replace the managed set in one transaction."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM config_managed")
        for kind, name in sorted(set(objects)):
            await conn.execute(
                "INSERT INTO config_managed (kind, name) VALUES (?, ?)", (kind, name)
            )


class LeaseBusy(Exception):
    """Another process held the apply lease for as long as this one would wait."""


class Lease:
    """The store's one apply lease (`config_lease`): a single UPDATE takes it, so of all
    the workers of all instances starting at once, one applies while the others wait."""

    def __init__(self, store: Store, ttl: float = LEASE_TTL) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def take(self) -> bool:
        now = time.time()
        async with self.store.transaction() as conn:
            taken = await conn.execute(
                "UPDATE config_lease SET holder = ?, expires_at = ? "
                "WHERE id = 1 AND (expires_at < ? OR holder = ?)",
                (self.holder, now + self.ttl, now, self.holder),
            )
        return taken == 1

    async def release(self) -> None:
        async with self.store.transaction() as conn:
            await conn.execute(
                "UPDATE config_lease SET holder = '', expires_at = 0 WHERE id = 1 AND holder = ?",
                (self.holder,),
            )

    @contextlib.asynccontextmanager
    async def held(self, wait: float) -> AsyncIterator[None]:
        """Hold the lease, renewed, for the block; raise `LeaseBusy` after `wait` seconds."""
        deadline = time.monotonic() + wait
        while not await self.take():
            if time.monotonic() > deadline:
                raise LeaseBusy(f"the configuration lease stayed taken for {wait:g} s")
            await asyncio.sleep(0.2)
        renewal = asyncio.create_task(self._renew())
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await self.release()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            # A store that fails now fails the apply's own writes too; the lease only has
            # to outlive a slow one.
            with contextlib.suppress(StoreError):
                await self.take()


async def was_applied(store: Store, marker: str) -> bool:
    """Whether the start `marker` names (instance, master process, file bytes) applied its
    file already. Read under the lease, so a worker that waited for it sees the applier's
    record."""
    async with store.connection() as conn:
        row = await conn.fetchone("SELECT 1 FROM config_applied WHERE marker = ?", (marker,))
    return row is not None


async def record_applied(store: Store, marker: str) -> None:
    now = time.time()
    async with store.transaction() as conn:
        await conn.execute(
            "DELETE FROM config_applied WHERE marker = ? OR applied_at < ?",
            (marker, now - APPLIED_KEPT),
        )
        await conn.execute(
            "INSERT INTO config_applied (marker, applied_at) VALUES (?, ?)", (marker, now)
        )
