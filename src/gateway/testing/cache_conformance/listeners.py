"""Subscriptions the tests can wait on with deadlines, and the probes that start them.

Pub/sub reaches only subscribers already listening, and the `Cache` contract has no signal
for when listening begins: a test publishes probes until every listener has heard one,
and listeners set probes aside so only the test's own messages reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.contracts import Cache
from gateway.testing.cache_conformance.support import (
    DELIVERY_DEADLINE,
    RECOVERY_DEADLINE,
    SUBSCRIBE_DEADLINE,
    now,
)

PROBE = b"conformance-probe:"
"""Messages published until a subscriber hears one; listeners set them aside."""
MESSAGE = b"\x00invalidate\xff" + bytes(range(256))
"""A small message with every byte value, as an invalidation might carry."""


class Listener:
    """One subscription read by a task of its own, so tests can wait with deadlines."""

    def __init__(self, cache: Cache, channel: str) -> None:
        self.channel = channel
        self.probes = 0
        self._messages: asyncio.Queue[bytes] = asyncio.Queue()
        self._iterator = cache.subscribe(channel)
        self._task = asyncio.create_task(self._read(), name=f"listener {channel}")

    async def _read(self) -> None:
        async for message in self._iterator:
            if message.startswith(PROBE):
                self.probes += 1
            else:
                self._messages.put_nowait(message)

    async def next(self, timeout: float) -> bytes | None:
        """The next message that is not a probe, or None after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._messages.get()
        except TimeoutError:
            return None

    async def expect(self, timeout: float = DELIVERY_DEADLINE) -> bytes:
        """The next message that is not a probe; fails the test after `timeout` seconds."""
        message = await self.next(timeout)
        if message is None:
            pytest.fail(f"no message on {self.channel!r} within {timeout:g} s{self.ended()}")
        return message

    def ended(self) -> str:
        """Why the subscription stopped, for failure messages; empty while it runs."""
        if not self._task.done():
            return ""
        if self._task.cancelled():
            return "; the subscription was cancelled"
        error = self._task.exception()
        return (
            "; the subscription ended" if error is None else f"; the subscription failed: {error!r}"
        )

    async def close(self) -> None:
        """Stop reading and end the subscription."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


@contextlib.asynccontextmanager
async def listening(cache: Cache, channel: str) -> AsyncIterator[Listener]:
    """A `Listener` on `channel` that is closed on exit."""
    listener = Listener(cache, channel)
    try:
        yield listener
    finally:
        await listener.close()


async def wait_until_listening(publisher: Cache, channel: str, *listeners: Listener) -> None:
    """Publish probes until every listener hears one."""
    deadline = now() + SUBSCRIBE_DEADLINE
    waiting = [listener for listener in listeners if listener.probes == 0]
    count = 0
    while waiting:
        if now() > deadline:
            pytest.fail(f"subscribers of {channel!r} heard nothing for {SUBSCRIBE_DEADLINE:g} s")
        await publisher.publish(channel, PROBE + str(count).encode())
        count += 1
        await asyncio.sleep(0.05)
        waiting = [listener for listener in waiting if listener.probes == 0]


async def heard_after_drop(cache: Cache, channel: str, listener: Listener) -> bytes:
    """Publish numbered messages until the old subscription hears one of them."""
    deadline = now() + RECOVERY_DEADLINE
    number = 0
    while now() < deadline:
        # Publishing may fail until the cache reconnects; the subscription is what is tested.
        with contextlib.suppress(Exception):
            await cache.publish(channel, b"after drop %d" % number)
        number += 1
        message = await listener.next(0.1)
        if message is not None and message.startswith(b"after drop"):
            return message
    pytest.fail(
        f"the subscription heard nothing published {RECOVERY_DEADLINE:g} s after the drop"
        f"{listener.ended()}"
    )
