"""The `database` cache: keys, counters, locks and pub/sub in the gateway's own SQL store.

Every worker and instance that shares `DATABASE_URL` shares this cache, so it works with
zero extra services. Entries live in `cache_entries`; each key is stored under
`CACHE_PREFIX:`, so gateways sharing a database do not see each other's keys. Expired rows
read as absent and a background task deletes them. `incr` and `add` are single
`INSERT ... ON CONFLICT ... RETURNING` statements, atomic across processes.

Pub/sub uses PostgreSQL's NOTIFY (payloads base64, at most about 5 KB per message, a
NOTIFY limit). SQLite has no notifications, so messages go into `cache_messages` and one
query per process looks for newer ids of every subscribed channel every `POLL_INTERVAL`
(`cache_polling`); old messages are purged. Like Redis
pub/sub, delivery is best-effort: a subscriber gets what is published while it listens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator

import structlog

from gateway.plugin import CacheSpec, Registrar, Settings, Store, StoreError, hookimpl
from gateway_plugins.cache_polling import SharedPoll

PURGE_INTERVAL = 60.0
"""Seconds between deletions of expired entries and old messages."""
POLL_INTERVAL = 0.2
"""Seconds between two looks for new SQLite messages."""
MESSAGE_RETENTION = 60.0
"""Seconds a SQLite message stays for subscribers that are slow to poll."""

log = structlog.get_logger(__name__)

# The counter is stored as its decimal text, like Redis does, so `get` reads it as b"3".
_INCREMENT = {
    "sqlite": "CAST(CAST(CAST(CAST(cache_entries.value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB)",
    "postgresql": (
        "convert_to(CAST(CAST(convert_from(cache_entries.value, 'UTF8') AS BIGINT) + 1 AS TEXT),"
        " 'UTF8')"
    ),
}
_EXPIRED = "cache_entries.expires_at IS NOT NULL AND cache_entries.expires_at <= ?"

_INCR_SQL = """
INSERT INTO cache_entries (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {expired} THEN excluded.value ELSE {increment} END,
    expires_at = CASE WHEN {expired} THEN excluded.expires_at ELSE cache_entries.expires_at END
RETURNING value
"""
_ADD_SQL = f"""
INSERT INTO cache_entries (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE {_EXPIRED}
RETURNING key
"""
_SET_SQL = """
INSERT INTO cache_entries (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
_GET_SQL = (
    "SELECT value FROM cache_entries WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
)


def _check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return ttl


def notify_channel(channel: str) -> str:
    """A PostgreSQL identifier for a prefixed channel name.

    LISTEN needs an identifier of at most 63 bytes. The readable part is squashed to
    `[a-z0-9_]` and cut short; the hash keeps distinct names (`a-b`, `a_b`) apart.
    """
    slug = re.sub(r"[^a-z0-9_]+", "_", channel.lower()).strip("_")[:40]
    digest = hashlib.sha256(channel.encode("utf-8")).hexdigest()[:12]
    return f"cache_{slug}_{digest}"


class DatabaseCache:
    """The `Cache` contract on the store's `cache_entries` and `cache_messages` tables."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        purge_interval: float = PURGE_INTERVAL,
        poll_interval: float = POLL_INTERVAL,
        message_retention: float = MESSAGE_RETENTION,
    ) -> None:
        self.store = store
        self.prefix = f"{prefix}:"
        self._purge_interval = purge_interval
        self._poll_interval = poll_interval
        self._message_retention = message_retention
        self._purger: asyncio.Task[None] | None = None
        self.subscriptions = SharedPoll(store, poll_interval)

    @property
    def _postgres(self) -> bool:
        return self.store.dialect == "postgresql"

    async def start(self) -> None:
        if self._purger is None:
            self._purger = asyncio.create_task(self._purge_forever(), name="cache-purge")

    async def close(self) -> None:
        await self.subscriptions.close()
        purger, self._purger = self._purger, None
        if purger is not None:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger

    async def health(self) -> None:
        await self.store.ping()

    # --- key-value ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async with self.store.connection() as conn:
            row = await conn.fetchone(_GET_SQL, (self.prefix + key, time.time()))
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires_at = None if ttl is None else time.time() + _check_ttl(ttl)
        async with self.store.transaction() as conn:
            await conn.execute(_SET_SQL, (self.prefix + key, bytes(value), expires_at))

    async def delete(self, key: str) -> None:
        async with self.store.transaction() as conn:
            await conn.execute("DELETE FROM cache_entries WHERE key = ?", (self.prefix + key,))

    async def incr(self, key: str, ttl: float) -> int:
        """Add one; a new or expired key restarts at 1 and expires `ttl` seconds later.

        Like a fixed-window counter, later increments keep the first expiry.
        """
        now = time.time()
        sql = _INCR_SQL.format(expired=_EXPIRED, increment=_INCREMENT[self.store.dialect])
        async with self.store.transaction() as conn:
            row = await conn.fetchone(
                sql, (self.prefix + key, b"1", now + _check_ttl(ttl), now, now)
            )
        if row is None:
            raise StoreError(f"cache incr of {key!r} returned nothing")
        return int(bytes(row[0]))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        async with self.store.transaction() as conn:
            row = await conn.fetchone(
                _ADD_SQL, (self.prefix + key, bytes(value), now + _check_ttl(ttl), now)
            )
        return row is not None

    async def purge(self) -> None:
        """Delete expired entries of every prefix, and SQLite messages past retention."""
        now = time.time()
        async with self.store.transaction() as conn:
            await conn.execute(
                "DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )
            if not self._postgres:
                await conn.execute(
                    "DELETE FROM cache_messages WHERE created_at < ?",
                    (now - self._message_retention,),
                )

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self._purge_interval)
            try:
                await self.purge()
            except StoreError as exc:
                log.warning("cache.purge_failed", error=str(exc))

    # --- pub/sub -----------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        full_channel = self.prefix + channel
        if self._postgres:
            payload = base64.b64encode(message).decode("ascii")
            async with self.store.connection() as conn:
                await conn.execute(
                    "SELECT pg_notify(?, ?)", (notify_channel(full_channel), payload)
                )
            return
        async with self.store.transaction() as conn:
            await conn.execute(
                "INSERT INTO cache_messages (channel, payload, created_at) VALUES (?, ?, ?)",
                (full_channel, bytes(message), time.time()),
            )

    def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Yield messages published on `channel` from the first iteration on, until cancelled.

        Listening starts when iteration starts (an async generator runs nothing before
        that); close the iterator (`contextlib.aclosing`) if you stop early.
        """
        full_channel = self.prefix + channel
        if self._postgres:
            return self._notifications(full_channel)
        return self.subscriptions.messages(full_channel)

    async def _notifications(self, full_channel: str) -> AsyncGenerator[bytes, None]:
        payloads = await self.store.listen(notify_channel(full_channel))
        try:
            async for payload in payloads:
                yield base64.b64decode(payload)
        finally:
            if isinstance(payloads, AsyncGenerator):
                await payloads.aclose()


def create_database_cache(settings: Settings, store: Store) -> DatabaseCache:
    """Cache factory: the cache lives in the store's own database."""
    return DatabaseCache(store, settings.cache_prefix)


@hookimpl(trylast=True)
def gateway_register_caches(register: Registrar[CacheSpec]) -> None:
    register.add(
        CacheSpec(
            name="database",
            factory=create_database_cache,
            description="Cache in the SQL store (DATABASE_URL), shared by every worker and "
            "instance; pub/sub through NOTIFY on PostgreSQL, polling on SQLite.",
            shared=True,
        )
    )
