"""The `redis` cache: keys, counters, locks and pub/sub in Redis, shared by every worker.

One pooled `redis.asyncio` client per process serves the key-value operations; each
subscription holds a connection of its own from a second pool. Keys and channels are
stored under `CACHE_PREFIX:`, so deployments sharing one Redis never see each other's
data. Connections carry the client name `aio-mcp-gateway:<prefix>`, which shows which
deployment owns them in `CLIENT LIST`.

Atomicity: `incr` is one Lua script (INCR, then PEXPIRE only when the key has no expiry),
so the first increment's expiry is set in the same step as the key and later ones keep it;
`add` is `SET NX PX`.

A lost connection at runtime:
- Every operation fails promptly with `RedisCacheError` rather than waiting: a dead pooled
  connection is replaced and the command retried once, and no call outlives
  `TOOL_TIMEOUT` (socket timeouts plus an overall deadline). Callers such as the result
  cache and the rate limiter decide whether to degrade.
- `health()` raises `RedisCacheError` naming Redis, so `/ready` answers 503.
- A subscription reconnects with backoff and keeps yielding once Redis is back; it logs
  one warning per outage and one info on recovery. Like any Redis pub/sub, messages
  published while it is disconnected are lost. TCP keepalive finds connections that die
  silently. After `close()` every subscription ends.

`start()` pings once and raises `RedisCacheError` with one line naming `REDIS_URL` when
Redis cannot be reached, so the gateway refuses to start rather than run without it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.plugin import CacheSpec, Registrar, Settings, SettingSpec, Store, hookimpl, text

T = TypeVar("T")

REDIS_URL = SettingSpec(
    "REDIS_URL",
    "redis://127.0.0.1:6379/0",
    text,
    "Where the redis cache lives: redis://[:password@]host:port/db, rediss://, unix://.",
)

CONNECT_TIMEOUT = 2.0
POOL_SIZE = 256
"""Connections per worker; more requests than this wait for one instead of failing."""
"""Seconds to open a connection; capped by `TOOL_TIMEOUT` when that is shorter."""
START_TIMEOUT = 3.0
"""Seconds `start()` waits for the first PING, so an unreachable Redis fails fast."""
HEALTH_CHECK_INTERVAL = 15
"""Seconds a pooled connection may sit idle before it is pinged ahead of its next command."""
RECONNECT_DELAY_MIN = 0.1
RECONNECT_DELAY_MAX = 5.0
"""Bounds of the doubling delay between a subscription's reconnection attempts."""

log = structlog.get_logger(__name__)

# Sets the expiry only when the key has none (PTTL -1), which is exactly the first
# increment of a new or expired key; a counter that somehow lost its expiry gets one back.
_INCR_SCRIPT = """
local value = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return value
"""

_CONNECTION_FAILURES = (RedisError, OSError, TimeoutError)


class RedisCacheError(Exception):
    """Redis could not be reached, did not answer in time, or refused a command."""


def describe_url(redis_url: str) -> str:
    """The URL without user or password, for messages."""
    try:
        parts = urlsplit(redis_url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable URL"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def client_name(prefix: str) -> str:
    """The connection name for `prefix`; Redis allows only visible ASCII without spaces."""
    return re.sub(r"[^!-~]", "_", f"aio-mcp-gateway:{prefix}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _milliseconds(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class RedisCache:
    """The `Cache` contract on Redis."""

    def __init__(self, redis_url: str, prefix: str, timeout: float) -> None:
        self.redis_url = redis_url
        self.prefix = f"{prefix}:"
        self.client_name = client_name(prefix)
        self.label = f"Redis at {describe_url(redis_url)}"
        self.timeout = timeout
        """Seconds after which any operation gives up (`TOOL_TIMEOUT`)."""
        self._client: aioredis.Redis | None = None
        self._subscriber_client: aioredis.Redis | None = None
        self._incr_script: Any = None
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------

    def _connect(self, retries: int) -> aioredis.Redis:
        # Only a broken connection is worth one quick retry on a fresh one; a timeout
        # retried would double the wait the caller already paid.
        retry = (
            Retry(ExponentialBackoff(cap=0.2, base=0.05), retries, (RedisConnectionError,))
            if retries
            else Retry(NoBackoff(), 0)
        )
        # A blocking pool: at 200 concurrent requests per worker a plain pool runs out and
        # fails at once ("Too many connections"); this one waits for a free connection,
        # within the operation's own time limit.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=POOL_SIZE,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=min(CONNECT_TIMEOUT, self.timeout),
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            client_name=self.client_name,
            retry=retry,
        )
        return aioredis.Redis.from_pool(pool)

    async def start(self) -> None:
        if self._client is not None:
            return
        where = f"REDIS_URL={describe_url(self.redis_url)}"
        try:
            client = self._connect(retries=1)
            # A subscription does its own reconnecting, with logging; a silent retry
            # inside the driver would hide outages from it.
            self._subscriber_client = self._connect(retries=0)
        except ValueError as exc:
            raise RedisCacheError(f"{where} is not a Redis URL: {_one_line(exc)}") from None
        self._client = client
        self._incr_script = client.register_script(_INCR_SCRIPT)
        self._closed = False
        try:
            async with asyncio.timeout(min(START_TIMEOUT, self.timeout)):
                await client.ping()
        except _CONNECTION_FAILURES as exc:
            await self.close()
            reason = "no answer" if isinstance(exc, TimeoutError) else _one_line(exc)
            raise RedisCacheError(f"cannot reach Redis at {where}: {reason}") from None

    async def close(self) -> None:
        self._closed = True
        clients = (self._client, self._subscriber_client)
        self._client = self._subscriber_client = self._incr_script = None
        for client in clients:
            if client is not None:
                await client.aclose()

    def _require(self) -> aioredis.Redis:
        if self._client is None:
            raise RedisCacheError(f"{self.label}: the cache is not started")
        return self._client

    async def _call(self, command: str, operation: Awaitable[T]) -> T:
        """Await one command within the deadline, turning every failure into one error type."""
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except _CONNECTION_FAILURES as exc:
            reason = (
                f"no answer within {self.timeout:g} s"
                if isinstance(exc, TimeoutError)
                else _one_line(exc)
            )
            raise RedisCacheError(f"{self.label}: {command} failed: {reason}") from exc

    async def health(self) -> None:
        await self._call("PING", self._require().ping())

    # --- key-value -----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        # The client leaves `decode_responses` off, so a value always arrives as bytes.
        value = await self._call("GET", self._require().get(self.prefix + key))
        return cast("bytes | None", value)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        px = None if ttl is None else _milliseconds(ttl)
        await self._call("SET", self._require().set(self.prefix + key, bytes(value), px=px))

    async def delete(self, key: str) -> None:
        await self._call("DEL", self._require().delete(self.prefix + key))

    async def incr(self, key: str, ttl: float) -> int:
        """Add one; a new or expired key restarts at 1 and expires `ttl` seconds later.

        Like a fixed-window counter, later increments keep the first expiry.
        """
        milliseconds = _milliseconds(ttl)
        self._require()
        script = self._incr_script
        try:
            value = await self._call("INCR", script(keys=[self.prefix + key], args=[milliseconds]))
        except RedisCacheError as exc:
            if isinstance(exc.__cause__, ResponseError):
                raise ValueError(f"cache key {key!r} does not hold an integer") from None
            raise
        return int(value)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        done = await self._call(
            "SET NX",
            self._require().set(self.prefix + key, bytes(value), nx=True, px=_milliseconds(ttl)),
        )
        return bool(done)

    # --- pub/sub -------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call("PUBLISH", self._require().publish(self.prefix + channel, message))

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Yield messages published on `channel` from the first iteration on, until cancelled.

        Listening starts when iteration starts (an async generator runs nothing before
        that); close the iterator (`contextlib.aclosing`) if you stop early. The
        subscription survives lost connections (see the module docstring) and ends when
        the cache is closed.
        """
        self._require()
        full_channel = self.prefix + channel
        delay = RECONNECT_DELAY_MIN
        lost_at: float | None = None
        loop = asyncio.get_running_loop()
        while not self._closed and self._subscriber_client is not None:
            # redis-py leaves most of PubSub unannotated.
            pubsub: Any = self._subscriber_client.pubsub()
            try:
                await self._listen(pubsub, full_channel)
                if lost_at is not None:
                    log.info(
                        "cache.redis.subscription_restored",
                        channel=full_channel,
                        outage_seconds=round(loop.time() - lost_at, 3),
                    )
                    lost_at, delay = None, RECONNECT_DELAY_MIN
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        yield bytes(message["data"])
            except _CONNECTION_FAILURES as exc:
                if self._closed:
                    return
                if lost_at is None:
                    lost_at = loop.time()
                    log.warning(
                        "cache.redis.subscription_lost",
                        channel=full_channel,
                        redis=describe_url(self.redis_url),
                        error=_one_line(exc),
                    )
            finally:
                await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    async def _listen(self, pubsub: Any, full_channel: str) -> None:
        """Subscribe and wait for Redis to confirm, so listening has begun on return."""
        async with asyncio.timeout(self.timeout):
            await pubsub.subscribe(full_channel)
            while True:
                reply = await pubsub.get_message(timeout=None)
                if reply is not None and reply["type"] == "subscribe":
                    return


def create_redis_cache(settings: Settings, store: Store) -> RedisCache:
    """Cache factory: the cache lives in Redis at `REDIS_URL`, not in the store."""
    return RedisCache(
        settings.plugin_value(REDIS_URL), settings.cache_prefix, settings.tool_timeout
    )


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    register.add(REDIS_URL)


@hookimpl(trylast=True)
def gateway_register_caches(register: Registrar[CacheSpec]) -> None:
    register.add(
        CacheSpec(
            name="redis",
            factory=create_redis_cache,
            description="Cache in Redis (REDIS_URL), shared by every worker and instance; "
            "pub/sub through Redis channels.",
            shared=True,
        )
    )
