"""SQLite pub/sub for the `database` cache: every subscription of one cache in one process
is served by a single query every `interval` for all their channels, rather than one query
per subscription (a worker holds several: the catalogue, the hub, token revocations).

A subscription starts after the newest message there is when it subscribes, as one on
Redis does, and gets its channel's messages in order. Each has a backlog of up to
`MAX_BACKLOG` messages; a subscriber that falls further behind loses the newest ones, with
a warning, since delivery is best-effort like Redis pub/sub, but cannot grow the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import structlog

from gateway.plugin import Store

log = structlog.get_logger(__name__)

MAX_BACKLOG = 10_000
"""Messages waiting for one subscriber at most."""


class _Subscription:
    __slots__ = ("after", "behind", "channel", "queue")

    def __init__(self, channel: str, after: int) -> None:
        self.channel = channel
        self.after = after
        """Messages up to this id were published before it subscribed."""
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_BACKLOG)
        self.behind = False

    def deliver(self, message_id: int, payload: bytes) -> None:
        if message_id <= self.after:
            return
        try:
            self.queue.put_nowait(payload)
            self.behind = False
        except asyncio.QueueFull:
            if not self.behind:
                log.warning("cache.subscriber_behind", channel=self.channel, backlog=MAX_BACKLOG)
            self.behind = True


class SharedPoll:
    """The SQLite subscriptions of one cache in this process, and the one task polling for
    them while there is any."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._subscriptions: dict[str, set[_Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_id = 0
        self.polls = 0
        """Queries made, for tests and curiosity."""

    async def messages(self, channel: str) -> AsyncGenerator[bytes, None]:
        """Yield what is published on `channel` from now on, until closed or cancelled."""
        subscription = _Subscription(channel, await self._newest_id())
        self._subscriptions.setdefault(channel, set()).add(subscription)
        if self._task is None:
            self._last_id = subscription.after
            self._task = asyncio.create_task(self._poll_forever(), name="cache-poll")
        try:
            while True:
                yield await subscription.queue.get()
        finally:
            self._leave(subscription)

    def _leave(self, subscription: _Subscription) -> None:
        same = self._subscriptions.get(subscription.channel)
        if same is not None:
            same.discard(subscription)
            if not same:
                del self._subscriptions[subscription.channel]
        if not self._subscriptions and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _newest_id(self) -> int:
        async with self.store.connection() as conn:
            row = await conn.fetchone("SELECT COALESCE(MAX(id), 0) FROM cache_messages")
        return int(row[0]) if row is not None else 0

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            channels = list(self._subscriptions)
            if not channels:
                continue
            marks = ", ".join("?" * len(channels))
            try:
                self.polls += 1
                async with self.store.connection() as conn:
                    rows = await conn.fetchall(
                        "SELECT id, channel, payload FROM cache_messages "
                        f"WHERE id > ? AND channel IN ({marks}) ORDER BY id",
                        (self._last_id, *channels),
                    )
            except Exception as exc:
                # Keep the subscriptions alive through a locked or briefly missing
                # database (or any other failure of this one query), but say so only once
                # per outage.
                if not failing:
                    log.warning("cache.poll_failed", channels=channels, error=str(exc))
                failing = True
                continue
            failing = False
            for message_id, channel, payload in rows:
                self._last_id = int(message_id)
                for subscription in self._subscriptions.get(channel, ()):
                    subscription.deliver(self._last_id, bytes(payload))
