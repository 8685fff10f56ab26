"""`notifications/cancelled` for an id that is running nowhere costs nothing shared: no cache
write and no publish. One that is running on another gateway sharing the cache still
reaches it, once the request has run long enough to be announced."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.contracts import Cache, CacheSpec
from gateway.mcp.running import ANNOUNCE_AFTER, RECHECK_AFTER
from gateway.plugin import Registrar, Settings, Store, hookimpl
from gateway_plugins.cache_redis import create_redis_cache
from tests.conftest import Client, GatewayFactory
from tests.plugins import rich
from tests.transports.conftest import backend_of, open_session, session_headers

WRITES = ("set", "delete", "incr", "add", "publish")
HEARTBEATS = ("consistency:", "leader")
"""Each worker's periodic presence in the cache and the leader's lease renewals, written
whatever clients do."""


class CountingCache:
    """The Redis cache, recording every write and publish made through it."""

    def __init__(self, inner: Cache, writes: list[tuple[str, str]]) -> None:
        self._inner = inner
        self.writes = writes

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in WRITES:
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.writes.append((name, str(args[0])))
            return await attribute(*args, **kwargs)

        return counted


class CountingCaches:
    """A fixture plugin offering the counting cache as `CACHE_TYPE=counting`."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.__name__ = f"counting-caches-{id(self)}"

    def since(self, mark: int) -> list[tuple[str, str]]:
        """The writes made after the `mark`-th, workers' heartbeats and lease left out."""
        return [w for w in self.writes[mark:] if not w[1].startswith(HEARTBEATS)]

    def publishes(self) -> int:
        return sum(1 for operation, _ in self.writes if operation == "publish")

    @hookimpl
    def gateway_register_caches(self, register: Registrar[CacheSpec]) -> None:
        def factory(settings: Settings, store: Store) -> Cache:
            return CountingCache(create_redis_cache(settings, store), self.writes)  # type: ignore[return-value]

        register.add(CacheSpec(name="counting", factory=factory))


@pytest.fixture
async def counted(
    gateway: GatewayFactory, redis_base_url: str, user_headers: dict[str, str]
) -> tuple[Client, CountingCaches]:
    caches = CountingCaches()
    client = await gateway(
        plugins=[rich, caches], cache_type="counting", tool_timeout=20.0, max_batch=1000
    )
    client.session.headers.update(user_headers)
    return client, caches


def cancellation(request_id: object) -> dict[str, Any]:
    params = {"requestId": request_id, "reason": "never sent"}
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}


async def test_thousands_of_cancellations_for_ids_not_in_flight_write_and_publish_nothing(
    counted: tuple[Client, CountingCaches],
) -> None:
    client, caches = counted
    session = await open_session(client, "2025-03-26")
    await asyncio.sleep(ANNOUNCE_AFTER * 2)  # what opening the session wrote is done
    mark = len(caches.writes)
    for batch in range(3):
        body = [cancellation(f"unknown-{batch}-{n}") for n in range(1000)]
        response = await client.post(
            "/mcp",
            data=orjson.dumps(body),
            headers={
                **session_headers(session, "2025-03-26"),
                "Content-Type": "application/json",
            },
        )
        assert response.status == 202, await response.text()
    for n in range(50):
        response = await client.post(
            "/mcp", json=cancellation(n), headers=session_headers(session, "2025-03-26")
        )
        assert response.status == 202
    await asyncio.sleep(RECHECK_AFTER * 3)  # every second look has been taken
    assert caches.since(mark) == []


async def test_a_quick_request_writes_nothing_for_cancellation(
    counted: tuple[Client, CountingCaches],
) -> None:
    client, caches = counted
    session = await open_session(client)
    await asyncio.sleep(ANNOUNCE_AFTER * 2)
    mark = len(caches.writes)
    for n in range(20):
        message = {"jsonrpc": "2.0", "id": n, "method": "ping"}
        response = await client.post("/mcp", json=message, headers=session_headers(session))
        assert response.status == 200
    await asyncio.sleep(ANNOUNCE_AFTER * 2)
    assert caches.since(mark) == []


@pytest.mark.parametrize("wait", [ANNOUNCE_AFTER * 3, 0.0])
async def test_a_long_request_on_another_gateway_is_cancelled_through_the_cache(
    gateway: GatewayFactory, redis_base_url: str, user_headers: dict[str, str], wait: float
) -> None:
    """Two gateways on one database and one Redis, like two workers: the request runs on
    the first, its cancellation arrives at the second, late or at once."""
    caches = CountingCaches()
    first = await gateway(plugins=[rich, caches], cache_type="counting", tool_timeout=20.0)
    second = await gateway(plugins=[rich, caches], cache_type="counting", tool_timeout=20.0)
    for client in (first, second):
        client.session.headers.update(user_headers)
    session = await open_session(first)
    backend = backend_of(first)
    message = {
        "jsonrpc": "2.0",
        "id": "long-1",
        "method": "tools/call",
        "params": {"name": "rich_slow", "arguments": {}},
    }
    running = asyncio.create_task(
        first.post(
            "/mcp", json=message, headers=session_headers(session, accept="application/json")
        )
    )
    await asyncio.wait_for(backend.slow_started.wait(), 5)
    # Announced already, or not yet: the cancellation's second look finds it then.
    await asyncio.sleep(wait)
    publishes = caches.publishes()
    response = await second.post(
        "/mcp", json=cancellation("long-1"), headers=session_headers(session)
    )
    assert response.status == 202
    answered = await asyncio.wait_for(running, 5)
    body = await answered.json()
    assert body["error"]["code"] == -32800
    assert backend.cancelled == ["rich_slow"]
    assert caches.publishes() == publishes + 1
