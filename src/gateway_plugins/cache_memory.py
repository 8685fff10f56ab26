"""The `memory` cache: an in-process, LRU-bounded key-value store with TTLs and pub/sub.

Nothing is shared between processes, so each gunicorn worker has its own cache and
messages published here reach only subscribers in this process. Every operation runs
without awaiting, which is what makes `incr` and `add` atomic on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.plugin import CacheSpec, Registrar, Settings, SettingSpec, Store, hookimpl, integer

MAX_ITEMS = SettingSpec(
    "MEMORY_CACHE_MAX_ITEMS",
    100_000,
    integer(minimum=1),
    "Most entries the memory cache keeps per worker (least recently used go first).",
)

# A subscriber that stops reading must not grow memory without bound; past this many
# unread messages the oldest are dropped, as a fire-and-forget pub/sub may do.
SUBSCRIBER_QUEUE_SIZE = 1024

# value, and the monotonic deadline after which it is gone (None: never)
_Entry = tuple[bytes, float | None]


def _check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return ttl


class MemoryCache:
    """In-process implementation of the `Cache` contract."""

    def __init__(
        self, max_items: int, prefix: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items!r}")
        self.max_items = max_items
        self.prefix = f"{prefix}:"
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._channels: dict[str, set[asyncio.Queue[bytes]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()

    async def health(self) -> None:
        return None

    # --- key-value ---------------------------------------------------------------------

    def _deadline(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + _check_ttl(ttl)

    def _live(self, full_key: str) -> _Entry | None:
        """The entry under `full_key` if it has not expired, marked most recently used."""
        entry = self._entries.get(full_key)
        if entry is None:
            return None
        deadline = entry[1]
        if deadline is not None and deadline <= self._clock():
            del self._entries[full_key]
            return None
        self._entries.move_to_end(full_key)
        return entry

    def _store(self, full_key: str, entry: _Entry) -> None:
        self._entries[full_key] = entry
        self._entries.move_to_end(full_key)
        while len(self._entries) > self.max_items:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(self.prefix + key)
        return None if entry is None else entry[0]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._store(self.prefix + key, (bytes(value), self._deadline(ttl)))

    async def delete(self, key: str) -> None:
        self._entries.pop(self.prefix + key, None)

    async def incr(self, key: str, ttl: float) -> int:
        full_key = self.prefix + key
        entry = self._live(full_key)
        if entry is None:
            value, deadline = 1, self._deadline(ttl)
        else:
            try:
                value = int(entry[0]) + 1
            except ValueError:
                raise ValueError(f"cache key {key!r} does not hold an integer") from None
            # Like a fixed window counter: the first increment sets the expiry, later ones keep it.
            deadline = entry[1]
        self._store(full_key, (str(value).encode(), deadline))
        return value

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        full_key = self.prefix + key
        if self._live(full_key) is not None:
            return False
        self._store(full_key, (bytes(value), self._deadline(ttl)))
        return True

    # --- pub/sub -----------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in tuple(self._channels.get(self.prefix + channel, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Yield messages published on `channel` from the first iteration on, until cancelled.

        The queue is registered when iteration starts (an async generator runs nothing
        before that); close the iterator (`contextlib.aclosing`) if you stop early.
        """
        full_channel = self.prefix + channel
        queue: asyncio.Queue[bytes] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        subscribers = self._channels.setdefault(full_channel, set())
        subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)
            if not subscribers and self._channels.get(full_channel) is subscribers:
                del self._channels[full_channel]

    def subscriber_count(self, channel: str) -> int:
        """How many iterators are listening on `channel` in this process."""
        return len(self._channels.get(self.prefix + channel, ()))


def create_memory_cache(settings: Settings, store: Store) -> MemoryCache:
    """Cache factory; the memory cache keeps nothing in the store."""
    return MemoryCache(settings.plugin_value(MAX_ITEMS), settings.cache_prefix)


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    register.add(MAX_ITEMS)


@hookimpl(trylast=True)
def gateway_register_caches(register: Registrar[CacheSpec]) -> None:
    register.add(
        CacheSpec(
            name="memory",
            factory=create_memory_cache,
            description="In-process LRU cache with TTLs; each worker process has its own.",
            shared=False,
        )
    )
