"""The conformance suite of the `Cache` contract, shipped as a pytest plugin.

Every cache the gateway can run on (built-in or from a third-party plugin) must pass the
same tests: round trips, TTLs, atomic `incr` and `add` under concurrency (across tasks
and, for shared caches, across OS processes), pub/sub, large values, unusual keys,
prefix isolation, health, and recovery after dropped connections.

Installing the gateway registers this module as a pytest plugin (entry point
`pytest11: aio_mcp_gateway_cache`), which only adds the fallback fixtures described
below; without the entry point, add `pytest_plugins = ["gateway.testing.cache_conformance"]`
to a `conftest.py`. The tests are async and need pytest-asyncio.

To run the suite against your cache, subclass `CacheConformance` in a test module and
provide fixtures (as methods of the subclass, or in the module or a `conftest.py`):

- `cache` (required): an async fixture yielding a started instance. It overrides
  pytest's built-in `cache` fixture; the first test of the suite says so if you forget.
- `cache_factory` (shared caches only, i.e. `CacheSpec.shared=True`): a callable with
  the `CacheOpener` signature. `cache_factory()` returns an async context manager
  yielding another started instance on the same backend and prefix as `cache`;
  `cache_factory(prefix="other")` one with a different prefix. It is pickled into
  spawned processes, so make it a module-level function or a `functools.partial` of
  one. Without it, the cross-instance, cross-process and prefix tests skip.
- `drop_connections`: an async callable that kills the server-side connections the
  `cache` instance holds (for Redis, `CLIENT KILL` of its clients; for PostgreSQL,
  `pg_terminate_backend` of its backends), issued from a separate connection. Without
  it, the recovery test skips.

For example::

    import functools
    from contextlib import asynccontextmanager

    import pytest

    from gateway.testing.cache_conformance import CacheConformance
    from my_plugin import MyCache

    @asynccontextmanager
    async def open_my_cache(url, default_prefix, *, prefix=None):
        cache = MyCache(url, prefix or default_prefix)
        await cache.start()
        try:
            yield cache
        finally:
            await cache.close()

    class TestMyCache(CacheConformance):
        @pytest.fixture
        def cache_factory(self):
            return functools.partial(open_my_cache, "my://server", "conformance-test")

        @pytest.fixture
        async def cache(self, cache_factory):
            async with cache_factory() as cache:
                yield cache

Then `pytest test_my_cache.py` runs the whole suite; `-k` selects parts of it. Give the
suite a prefix (or a database) of its own: it writes keys, a few of them without a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import queue
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from gateway.contracts import Cache

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

T = TypeVar("T")

SHORT_TTL = 0.3
"""Seconds; long enough for a few round trips, short enough to wait for."""
LONG_TTL = 60.0
"""Seconds; outlives any test."""
EXPIRY_DEADLINE = 3.0
"""Seconds after a short TTL by which the key must be gone."""
EARLY_TOLERANCE = 0.05
"""Seconds a key may vanish before its TTL, for clocks of different resolution."""
DELIVERY_DEADLINE = 1.0
"""Seconds within which a published message reaches a listening subscriber."""
SUBSCRIBE_DEADLINE = 10.0
"""Seconds a new subscription may take to start hearing messages."""
RECOVERY_DEADLINE = 5.0
"""Seconds within which the cache works again after its connections drop."""
POLL_INTERVAL = 0.02
CONCURRENCY = 50
PROCESSES = 4
INCRS_PER_PROCESS = 25
ADDS_PER_PROCESS = 5
PROCESS_DEADLINE = 60.0
"""Seconds the spawned processes get to start, meet and report."""

PROBE = b"conformance-probe:"
"""Messages published until a subscriber hears one; listeners set them aside."""
MESSAGE = b"\x00invalidate\xff" + bytes(range(256))
"""A small message with every byte value, as an invalidation might carry."""

# NUL is left out: SQL text columns cannot hold it, and gateway keys never contain it.
UNUSUAL_KEYS = (
    "",
    "with space",
    " leading and trailing ",
    "colon:separated:key",
    "slash/and\\backslash",
    "glob*?[a-z]{1,2}",
    "quotes'\"`",
    "percent%s%(name)s%%",
    "question?mark&and=equals",
    "semicolon; DROP TABLE cache_entries; --",
    "new\nline\ttab\rreturn",
    "ünïcødé-ключ-鍵-🔑",
    "a-b",
    "a_b",
    "A-B",
    "k" * 1000,
)


class CacheOpener(Protocol):
    """What the `cache_factory` fixture returns."""

    def __call__(self, *, prefix: str | None = None) -> AbstractAsyncContextManager[Cache]:
        """Another started instance; `prefix` replaces the one `cache` uses."""
        ...


DropConnections = Callable[[], Awaitable[None]]


# --- fallback fixtures: a test module or conftest overrides them -------------------------


@pytest.fixture
def cache_factory() -> CacheOpener:
    """Fallback: skip the tests that need a second instance of a shared cache."""
    pytest.skip("no cache_factory fixture: the cache is not shared, or no factory was given")


@pytest.fixture
def drop_connections() -> DropConnections:
    """Fallback: skip the test of recovery after dropped connections."""
    pytest.skip("no drop_connections fixture: the cache has no connections to drop")


# --- helpers -------------------------------------------------------------------------------


def unique(name: str) -> str:
    """A key or channel of this test's own, in case the fixture reuses a prefix."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _gone_after(cache: Cache, key: str, started: float) -> float:
    """Seconds from `started` until `key` reads as absent; fails past the deadline."""
    while _now() - started < SHORT_TTL + EXPIRY_DEADLINE:
        if await cache.get(key) is None:
            return _now() - started
        await asyncio.sleep(POLL_INTERVAL)
    pytest.fail(f"key {key!r} still present {SHORT_TTL + EXPIRY_DEADLINE:g} s after set")


async def _eventually(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """The result of `operation` once it stops raising, within `RECOVERY_DEADLINE`."""
    deadline = _now() + RECOVERY_DEADLINE
    while True:
        try:
            return await operation()
        except Exception as exc:
            if _now() > deadline:
                pytest.fail(f"{what} still fails {RECOVERY_DEADLINE:g} s after the drop: {exc!r}")
        await asyncio.sleep(0.1)


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
    """Publish probes until every listener hears one.

    Pub/sub reaches only subscribers already listening, and the contract has no signal
    for when listening begins.
    """
    deadline = _now() + SUBSCRIBE_DEADLINE
    waiting = [listener for listener in listeners if listener.probes == 0]
    count = 0
    while waiting:
        if _now() > deadline:
            pytest.fail(f"subscribers of {channel!r} heard nothing for {SUBSCRIBE_DEADLINE:g} s")
        await publisher.publish(channel, PROBE + str(count).encode())
        count += 1
        await asyncio.sleep(0.05)
        waiting = [listener for listener in waiting if listener.probes == 0]


async def _heard_after_drop(cache: Cache, channel: str, listener: Listener) -> bytes:
    """Publish numbered messages until the old subscription hears one of them."""
    deadline = _now() + RECOVERY_DEADLINE
    number = 0
    while _now() < deadline:
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


# --- work done in spawned processes --------------------------------------------------------


Job = Callable[[Cache, str, int], Awaitable[list[Any]]]
"""Work one process does: (its own instance, the key, how many calls) -> results."""


async def _incr_job(cache: Cache, key: str, count: int) -> list[Any]:
    return list(await asyncio.gather(*(cache.incr(key, LONG_TTL) for _ in range(count))))


async def _add_job(cache: Cache, key: str, count: int) -> list[Any]:
    """The values this process managed to add."""
    values = [f"{os.getpid()}-{n}".encode() for n in range(count)]
    added = await asyncio.gather(*(cache.add(key, value, LONG_TTL) for value in values))
    return [value for value, won in zip(values, added, strict=True) if won]


async def _run_job(
    job: Job, factory: CacheOpener, key: str, count: int, barrier: Barrier
) -> list[Any]:
    async with factory() as cache:
        # Every process connects first and then they start together, so they contend.
        await asyncio.to_thread(barrier.wait, PROCESS_DEADLINE)
        return await job(cache, key, count)


def _process_main(
    job: Job,
    factory: CacheOpener,
    key: str,
    count: int,
    barrier: Barrier,
    results: Queue[tuple[str, Any]],
) -> None:
    try:
        results.put(("ok", asyncio.run(_run_job(job, factory, key, count, barrier))))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _in_processes(job: Job, factory: CacheOpener, key: str, count: int) -> list[Any]:
    """Run `job` in `PROCESSES` spawned processes, each with its own instance; all results."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        pytest.fail(
            "cache_factory must be picklable (a module-level function or a "
            f"functools.partial of one) to reach other processes: {exc!r}"
        )
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: Queue[tuple[str, Any]] = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(job, factory, key, count, barrier, results),
            name=f"cache-conformance-{n}",
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=PROCESS_DEADLINE) for _ in processes]
    except queue.Empty:
        pytest.fail(f"the {PROCESSES} processes did not report within {PROCESS_DEADLINE:g} s")
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    failures = [str(detail) for status, detail in outcomes if status == "error"]
    if failures:
        pytest.fail(f"{len(failures)} of {PROCESSES} processes failed; the first:\n{failures[0]}")
    return [item for _, detail in outcomes for item in detail]


# --- the suite -------------------------------------------------------------------------------


class CacheConformance:
    """The tests every `Cache` must pass; subclass it and provide the fixtures above."""

    pytestmark = pytest.mark.asyncio

    # --- the fixture ---------------------------------------------------------------------

    async def test_cache_fixture_yields_an_object_of_the_cache_protocol(self, cache: Cache) -> None:
        assert isinstance(cache, Cache), (
            f"the cache fixture gave {cache!r}: define a `cache` fixture yielding a started "
            "gateway Cache (pytest's own `cache` fixture answers otherwise)"
        )

    async def test_health_passes_when_the_cache_is_up(self, cache: Cache) -> None:
        await cache.health()

    # --- key-value -----------------------------------------------------------------------

    async def test_get_of_a_missing_key_returns_none(self, cache: Cache) -> None:
        assert await cache.get(unique("missing")) is None

    @pytest.mark.parametrize(
        "value", [b"", b"value", bytes(range(256))], ids=["empty", "ascii", "every-byte"]
    )
    async def test_set_then_get_returns_the_same_bytes(self, cache: Cache, value: bytes) -> None:
        key = unique("round-trip")
        await cache.set(key, value)
        assert await cache.get(key) == value

    async def test_set_overwrites_the_value(self, cache: Cache) -> None:
        key = unique("overwrite")
        await cache.set(key, b"first")
        await cache.set(key, b"second")
        assert await cache.get(key) == b"second"

    async def test_delete_removes_a_key_and_ignores_a_missing_one(self, cache: Cache) -> None:
        key = unique("delete")
        await cache.set(key, b"value")
        await cache.delete(key)
        assert await cache.get(key) is None
        await cache.delete(key)
        await cache.delete(unique("never-set"))

    async def test_set_with_ttl_expires_after_the_ttl_and_not_before(self, cache: Cache) -> None:
        key = unique("ttl")
        started = _now()
        await cache.set(key, b"value", ttl=SHORT_TTL)
        assert await cache.get(key) == b"value"
        assert await _gone_after(cache, key, started) >= SHORT_TTL - EARLY_TOLERANCE

    async def test_set_without_ttl_persists_and_clears_an_earlier_ttl(self, cache: Cache) -> None:
        timed, plain, cleared = unique("timed"), unique("plain"), unique("cleared")
        started = _now()
        await cache.set(plain, b"plain")
        await cache.set(cleared, b"timed", ttl=SHORT_TTL)
        await cache.set(cleared, b"plain")
        await cache.set(timed, b"timed", ttl=SHORT_TTL)
        await _gone_after(cache, timed, started)
        assert await cache.get(plain) == b"plain"
        assert await cache.get(cleared) == b"plain"

    @pytest.mark.parametrize("mebibytes", [1, 5])
    async def test_large_values_round_trip(self, cache: Cache, mebibytes: int) -> None:
        key = unique("large")
        value = os.urandom(mebibytes * 1024 * 1024)
        await cache.set(key, value, ttl=LONG_TTL)
        assert await cache.get(key) == value

    async def test_keys_with_unusual_characters_round_trip_and_stay_distinct(
        self, cache: Cache
    ) -> None:
        suffix = unique("")
        keys = [key + suffix for key in UNUSUAL_KEYS]
        for number, key in enumerate(keys):
            await cache.set(key, f"value {number}".encode(), ttl=LONG_TTL)
        found = {key: await cache.get(key) for key in keys}
        assert found == {key: f"value {number}".encode() for number, key in enumerate(keys)}

    # --- incr ----------------------------------------------------------------------------

    async def test_incr_returns_1_to_50_exactly_under_50_concurrent_tasks(
        self, cache: Cache
    ) -> None:
        key = unique("counter")
        values = await asyncio.gather(*(cache.incr(key, LONG_TTL) for _ in range(CONCURRENCY)))
        assert sorted(values) == list(range(1, CONCURRENCY + 1))

    async def test_incr_keeps_the_ttl_of_the_first_increment_and_restarts_after_expiry(
        self, cache: Cache
    ) -> None:
        key = unique("window")
        started = _now()
        assert await cache.incr(key, SHORT_TTL) == 1
        assert await cache.incr(key, LONG_TTL) == 2
        assert await _gone_after(cache, key, started) >= SHORT_TTL - EARLY_TOLERANCE
        assert await cache.incr(key, LONG_TTL) == 1

    # --- add -----------------------------------------------------------------------------

    async def test_add_has_exactly_one_winner_among_50_concurrent_tasks(self, cache: Cache) -> None:
        key = unique("lock")
        values = [f"task {number}".encode() for number in range(CONCURRENCY)]
        added = await asyncio.gather(*(cache.add(key, value, LONG_TTL) for value in values))
        winners = [value for value, won in zip(values, added, strict=True) if won]
        assert len(winners) == 1
        assert await cache.get(key) == winners[0]

    async def test_add_is_refused_while_held_and_succeeds_again_after_the_ttl(
        self, cache: Cache
    ) -> None:
        key = unique("lease")
        started = _now()
        assert await cache.add(key, b"first", SHORT_TTL) is True
        assert await cache.add(key, b"second", SHORT_TTL) is False
        assert await cache.get(key) == b"first"
        while not await cache.add(key, b"third", LONG_TTL):
            assert _now() - started < SHORT_TTL + EXPIRY_DEADLINE, "the key never expired"
            await asyncio.sleep(POLL_INTERVAL)
        assert _now() - started >= SHORT_TTL - EARLY_TOLERANCE
        assert await cache.get(key) == b"third"

    async def test_add_succeeds_again_after_delete(self, cache: Cache) -> None:
        key = unique("released")
        assert await cache.add(key, b"first", LONG_TTL) is True
        await cache.delete(key)
        assert await cache.add(key, b"second", LONG_TTL) is True
        assert await cache.get(key) == b"second"

    # --- pub/sub -------------------------------------------------------------------------

    async def test_publish_without_subscribers_succeeds(self, cache: Cache) -> None:
        await cache.publish(unique("nobody"), MESSAGE)

    async def test_publish_reaches_two_subscribers_within_one_second(self, cache: Cache) -> None:
        channel = unique("news")
        async with listening(cache, channel) as first, listening(cache, channel) as second:
            await wait_until_listening(cache, channel, first, second)
            await cache.publish(channel, MESSAGE)
            received = list(await asyncio.gather(first.expect(), second.expect()))
        assert received == [MESSAGE, MESSAGE]

    async def test_channels_with_similar_names_stay_distinct(self, cache: Cache) -> None:
        suffix = unique("")
        dashed, underscored = f"news-a.b{suffix}", f"news_a_b{suffix}"
        async with listening(cache, dashed) as one, listening(cache, underscored) as other:
            await wait_until_listening(cache, dashed, one)
            await wait_until_listening(cache, underscored, other)
            for channel, message in [
                (dashed, b"one"),
                (underscored, b"other"),
                (dashed, b"end one"),
                (underscored, b"end other"),
            ]:
                await cache.publish(channel, message)
            assert [await one.expect(), await one.expect()] == [b"one", b"end one"]
            assert [await other.expect(), await other.expect()] == [b"other", b"end other"]

    # --- shared caches: a second instance, other processes -----------------------------------

    async def test_a_second_instance_sees_the_same_keys_counters_and_locks(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key, counter, lock = unique("shared"), unique("counter"), unique("lock")
        async with cache_factory() as other:
            await cache.set(key, b"value")
            assert await other.get(key) == b"value"
            await other.delete(key)
            assert await cache.get(key) is None
            assert [
                await cache.incr(counter, LONG_TTL),
                await other.incr(counter, LONG_TTL),
                await cache.incr(counter, LONG_TTL),
            ] == [1, 2, 3]
            assert await cache.add(lock, b"mine", LONG_TTL) is True
            assert await other.add(lock, b"theirs", LONG_TTL) is False

    async def test_publish_reaches_a_subscriber_on_another_instance_within_one_second(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        channel = unique("news")
        async with cache_factory() as other, listening(other, channel) as listener:
            await wait_until_listening(cache, channel, listener)
            await cache.publish(channel, MESSAGE)
            assert await listener.expect() == MESSAGE

    async def test_instances_with_different_prefixes_do_not_see_each_other(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key, counter, lock, channel = (unique(n) for n in ("key", "counter", "lock", "news"))
        async with cache_factory(prefix=unique("other-prefix")) as other:
            await cache.set(key, b"mine")
            assert await other.get(key) is None
            await other.set(key, b"theirs")
            await other.delete(key)
            assert await cache.get(key) == b"mine"
            assert await cache.incr(counter, LONG_TTL) == 1
            assert await other.incr(counter, LONG_TTL) == 1
            assert await cache.add(lock, b"mine", LONG_TTL) is True
            assert await other.add(lock, b"theirs", LONG_TTL) is True
            async with listening(cache, channel) as mine, listening(other, channel) as theirs:
                await wait_until_listening(cache, channel, mine)
                await wait_until_listening(other, channel, theirs)
                await other.publish(channel, b"theirs")
                await cache.publish(channel, b"mine")
                assert await mine.expect() == b"mine"
                assert await theirs.expect() == b"theirs"

    async def test_incr_counts_exactly_across_4_processes(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key = unique("counter")
        values = await asyncio.to_thread(
            _in_processes, _incr_job, cache_factory, key, INCRS_PER_PROCESS
        )
        assert sorted(values) == list(range(1, PROCESSES * INCRS_PER_PROCESS + 1))
        assert await cache.incr(key, LONG_TTL) == PROCESSES * INCRS_PER_PROCESS + 1

    async def test_add_has_exactly_one_winner_across_4_processes(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key = unique("lock")
        winners = await asyncio.to_thread(
            _in_processes, _add_job, cache_factory, key, ADDS_PER_PROCESS
        )
        assert len(winners) == 1, f"{len(winners)} processes added the key: {winners!r}"
        assert await cache.get(key) == winners[0]

    # --- dropped connections -------------------------------------------------------------

    async def test_operations_and_subscriptions_recover_after_connections_drop(
        self, cache: Cache, drop_connections: DropConnections
    ) -> None:
        key, channel = unique("survivor"), unique("news")
        await cache.set(key, b"before")
        async with listening(cache, channel) as listener:
            await wait_until_listening(cache, channel, listener)
            await drop_connections()
            assert await _eventually(lambda: cache.get(key), "get") == b"before"
            await _eventually(lambda: cache.set(key, b"after", LONG_TTL), "set")
            assert await _eventually(lambda: cache.incr(unique("c"), LONG_TTL), "incr") == 1
            assert await _eventually(lambda: cache.add(unique("l"), b"x", LONG_TTL), "add")
            await _eventually(cache.health, "health")
            assert await _heard_after_drop(cache, channel, listener)
