"""The `redis` cache beyond the conformance suite: start-up failures, outages, naming.

Outages are staged with a TCP relay between the cache and the real Redis, which a test
can freeze (connections stay open, nothing is answered) or sever (connections closed,
nothing listening); the shared Redis server itself is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.contracts import Cache
from gateway.plugins import Plugins
from gateway.settings import Settings, load_settings
from gateway.testing.cache_conformance import listening, unique, wait_until_listening
from gateway_plugins.cache_redis import RedisCache, RedisCacheError, create_redis_cache
from tests.caches.conftest import NO_STORE, delete_prefix, kill_clients
from tests.conftest import GatewayFactory, free_port

SHORT_TIMEOUT = 0.5
"""TOOL_TIMEOUT of the outage tests, so a hang shows quickly."""
MARGIN = 0.5
"""Seconds of scheduling slack on a busy machine."""


class Relay:
    """A TCP relay to Redis that a test can freeze, sever and bring back on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._db = parts.path
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._db}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )
        for end in (writer, upstream_writer):
            end.transport.abort()
            self._writers.discard(end)
        self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def freeze(self) -> None:
        """Keep every connection open but relay nothing: Redis seems to hang."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def sever(self) -> None:
        """Close every connection and stop listening: Redis seems to be down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.thaw()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@pytest.fixture
async def relay(redis_base_url: str) -> AsyncIterator[Relay]:
    relay = Relay(redis_base_url)
    await relay.start()
    yield relay
    await relay.sever()


@pytest.fixture
async def cache_via_relay(
    relay: Relay, redis_base_url: str, cache_prefix: str
) -> AsyncIterator[RedisCache]:
    cache = RedisCache(relay.url, cache_prefix, timeout=SHORT_TIMEOUT)
    await cache.start()
    yield cache
    await cache.close()
    await delete_prefix(redis_base_url, cache_prefix)


@pytest.fixture
async def cache(redis_base_url: str, cache_prefix: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_base_url, cache_prefix, timeout=5.0)
    await cache.start()
    yield cache
    await cache.close()
    await delete_prefix(redis_base_url, cache_prefix)


@pytest.fixture
async def raw(redis_base_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at what the cache stored."""
    client = aioredis.Redis.from_url(redis_base_url)
    yield client
    await client.aclose()


def operations(cache: Cache) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of every operation that talks to Redis."""
    return {
        "get": lambda: cache.get("key"),
        "set": lambda: cache.set("key", b"value", 60),
        "delete": lambda: cache.delete("key"),
        "incr": lambda: cache.incr("counter", 60),
        "add": lambda: cache.add("lock", b"me", 60),
        "publish": lambda: cache.publish("news", b"hello"),
        "health": cache.health,
    }


async def timed_failure(call: Callable[[], Awaitable[object]]) -> tuple[float, str]:
    """Seconds until `call` raised `RedisCacheError`, and its message."""
    started = time.monotonic()
    with pytest.raises(RedisCacheError) as raised:
        await call()
    return time.monotonic() - started, str(raised.value)


async def publish_until_heard(cache: Cache, channel: str, listener: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisCacheError):
            await cache.publish(channel, b"after")
        if await listener.next(0.1) == b"after":
            return
    pytest.fail(f"the subscription heard nothing within {within:g} s{listener.ended()}")


# --- the plugin ---------------------------------------------------------------------------


def test_redis_cache_is_registered_as_a_shared_cache() -> None:
    spec = Plugins.load(Settings()).caches.items["redis"]
    assert spec.shared is True
    assert spec.factory is create_redis_cache


def test_factory_reads_url_prefix_and_timeout_from_settings() -> None:
    environ = {
        "REDIS_URL": "redis://cache.internal:6380/2",
        "CACHE_PREFIX": "gw",
        "TOOL_TIMEOUT": "7",
    }
    settings = load_settings(environ, env_file=None)
    cache = create_redis_cache(settings, NO_STORE)
    assert (cache.redis_url, cache.prefix, cache.client_name, cache.timeout) == (
        "redis://cache.internal:6380/2",
        "gw:",
        "aio-mcp-gateway:gw",
        7,
    )
    assert cache.label == "Redis at redis://cache.internal:6380/2"
    assert isinstance(cache, Cache)


def test_client_name_replaces_characters_redis_refuses() -> None:
    assert RedisCache("redis://h", "my prefix\n", 1.0).client_name == "aio-mcp-gateway:my_prefix_"


# --- start-up -----------------------------------------------------------------------------


async def test_start_with_an_unreachable_redis_url_raises_one_line_naming_it_within_5_s() -> None:
    cache = RedisCache(f"redis://user:hunter2@127.0.0.1:{free_port()}/0", "p", timeout=30.0)
    elapsed, message = await timed_failure(cache.start)
    assert elapsed < 5
    assert message.startswith("cannot reach Redis at REDIS_URL=redis://127.0.0.1:")
    assert "\n" not in message
    assert "hunter2" not in message


async def test_start_against_a_server_that_never_answers_gives_up_within_5_s() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cache = RedisCache(f"redis://127.0.0.1:{port}/0", "p", timeout=30.0)
        elapsed, message = await timed_failure(cache.start)
    finally:
        server.close()
        await server.wait_closed()
    assert elapsed < 5
    assert message == f"cannot reach Redis at REDIS_URL=redis://127.0.0.1:{port}/0: no answer"


async def test_start_with_a_url_that_is_not_redis_raises_one_line_naming_redis_url() -> None:
    _, message = await timed_failure(RedisCache("http://example.com", "p", 30.0).start)
    assert message.startswith("REDIS_URL=http://example.com is not a Redis URL: ")
    assert "\n" not in message


async def test_operations_before_start_and_after_close_raise(
    redis_base_url: str, cache_prefix: str
) -> None:
    cache = RedisCache(redis_base_url, cache_prefix, timeout=5.0)
    with pytest.raises(RedisCacheError, match="not started"):
        await cache.get("key")
    await cache.start()
    await cache.close()
    for call in operations(cache).values():
        with pytest.raises(RedisCacheError, match="not started"):
            await call()


# --- what goes into Redis -------------------------------------------------------------------


async def test_keys_and_channels_live_under_the_prefix_with_millisecond_ttls(
    cache: RedisCache, raw: aioredis.Redis, cache_prefix: str
) -> None:
    await cache.set("plain", b"1")
    await cache.set("timed", b"2", ttl=1.5)
    await cache.incr("counter", ttl=2.5)
    await cache.add("lock", b"me", ttl=3.5)
    assert await raw.get(f"{cache_prefix}:plain") == b"1"
    assert await raw.pttl(f"{cache_prefix}:plain") == -1
    assert 1000 < await raw.pttl(f"{cache_prefix}:timed") <= 1500
    assert 2000 < await raw.pttl(f"{cache_prefix}:counter") <= 2500
    assert 3000 < await raw.pttl(f"{cache_prefix}:lock") <= 3500
    assert await raw.get(f"{cache_prefix}:counter") == b"1"
    async with raw.pubsub() as pubsub:
        await pubsub.subscribe(f"{cache_prefix}:news")
        await pubsub.get_message(timeout=1.0)
        await cache.publish("news", b"hello")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    assert message is not None
    assert message["data"] == b"hello"


async def test_incr_gives_back_the_expiry_to_a_counter_that_lost_it(
    cache: RedisCache, raw: aioredis.Redis, cache_prefix: str
) -> None:
    await cache.set("counter", b"41")
    assert await cache.incr("counter", ttl=2.0) == 42
    assert 1000 < await raw.pttl(f"{cache_prefix}:counter") <= 2000


async def test_incr_of_a_value_that_is_not_an_integer_raises_value_error(
    cache: RedisCache,
) -> None:
    await cache.set("word", b"hello")
    with pytest.raises(ValueError, match="does not hold an integer"):
        await cache.incr("word", ttl=5)


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_a_ttl_that_is_not_positive_is_refused(cache: RedisCache, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        await cache.set("key", b"value", ttl=ttl)
    with pytest.raises(ValueError, match="ttl must be positive"):
        await cache.incr("counter", ttl=ttl)
    with pytest.raises(ValueError, match="ttl must be positive"):
        await cache.add("lock", b"me", ttl=ttl)


async def test_connections_carry_the_client_name_of_the_prefix(
    cache: RedisCache, raw: aioredis.Redis, cache_prefix: str
) -> None:
    await cache.health()
    names = {client["name"] for client in await raw.client_list()}
    assert f"aio-mcp-gateway:{cache_prefix}" in names


# --- outages ------------------------------------------------------------------------------


async def test_operations_on_connections_that_stop_answering_raise_within_the_timeout(
    relay: Relay, cache_via_relay: RedisCache
) -> None:
    await cache_via_relay.set("key", b"value")
    relay.freeze()
    for name, call in operations(cache_via_relay).items():
        elapsed, message = await timed_failure(call)
        assert elapsed < SHORT_TIMEOUT + MARGIN, f"{name} took {elapsed:.2f} s"
        assert message.startswith(f"Redis at {relay.url}: "), message
    relay.thaw()


async def test_operations_fail_fast_while_redis_is_down_and_work_again_when_it_returns(
    relay: Relay, cache_via_relay: RedisCache
) -> None:
    await cache_via_relay.set("key", b"value")
    await relay.sever()
    for name, call in operations(cache_via_relay).items():
        elapsed, message = await timed_failure(call)
        assert elapsed < SHORT_TIMEOUT, f"{name} took {elapsed:.2f} s"
        assert message.startswith(f"Redis at {relay.url}: "), message
    await relay.start()
    await cache_via_relay.health()
    assert await cache_via_relay.get("key") == b"value"


async def test_subscriber_survives_a_client_kill_of_its_connection(
    cache: RedisCache, redis_base_url: str
) -> None:
    channel = unique("news")
    async with listening(cache, channel) as listener:
        await wait_until_listening(cache, channel, listener)
        with capture_logs() as logs:
            killed = await kill_clients(redis_base_url, cache.client_name, ("pubsub",))
            assert killed == 1
            await publish_until_heard(cache, channel, listener, within=5.0)
    events = [(entry["log_level"], entry["event"]) for entry in logs]
    assert events == [
        ("warning", "cache.redis.subscription_lost"),
        ("info", "cache.redis.subscription_restored"),
    ]


async def test_subscriber_retries_through_an_outage_with_one_warning_and_one_info(
    relay: Relay, cache_via_relay: RedisCache
) -> None:
    channel = unique("news")
    async with listening(cache_via_relay, channel) as listener:
        await wait_until_listening(cache_via_relay, channel, listener)
        with capture_logs() as logs:
            await relay.sever()
            # Long enough for several failed reconnection attempts.
            await asyncio.sleep(1.5)
            await relay.start()
            await publish_until_heard(cache_via_relay, channel, listener, within=10.0)
    events = [(entry["log_level"], entry["event"]) for entry in logs]
    assert events == [
        ("warning", "cache.redis.subscription_lost"),
        ("info", "cache.redis.subscription_restored"),
    ]
    assert logs[0]["channel"] == f"{cache_via_relay.prefix}{channel}"


async def test_subscriptions_end_when_the_cache_closes(cache: RedisCache) -> None:
    channel = unique("news")
    async with listening(cache, channel) as listener:
        await wait_until_listening(cache, channel, listener)
        await cache.close()
        for _ in range(50):
            if listener.ended():
                break
            await asyncio.sleep(0.02)
        assert listener.ended() == "; the subscription ended"


async def test_an_idle_subscription_outlives_the_socket_timeout_without_reconnecting(
    cache_via_relay: RedisCache,
) -> None:
    channel = unique("news")
    async with listening(cache_via_relay, channel) as listener:
        await wait_until_listening(cache_via_relay, channel, listener)
        with capture_logs() as logs:
            await asyncio.sleep(3 * SHORT_TIMEOUT)
            await cache_via_relay.publish(channel, b"still here")
            assert await listener.expect() == b"still here"
    assert logs == []


async def test_ready_answers_503_naming_redis_while_it_is_down(
    relay: Relay, gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(cache_type="redis", plugin_values={"REDIS_URL": relay.url})
    assert (await client.get("/ready")).status == 200
    await relay.sever()
    # Only a caller with a token is told what fails.
    response = await client.get("/ready", headers=user_headers)
    body = await response.json()
    assert response.status == 503
    assert body["failing"]["cache"].startswith(f"Redis at {relay.url}: PING failed: ")
    await relay.start()
    assert (await client.get("/ready")).status == 200
