"""Events between workers travel over the cache's channel; those too big for a channel
(PostgreSQL's NOTIFY carries under 8 KB) are parked in the cache and still arrive whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.keys import HUB
from gateway.mcp.hub import INLINE_MAX, ClientStream
from tests.conftest import GatewayFactory


class Recorder(ClientStream):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def deliver(self, message: dict[str, Any]) -> None:
        await self.got.put(message)


@pytest.mark.parametrize("size", [100, INLINE_MAX * 20], ids=["small", "parked"])
@pytest.mark.parametrize("cache_type", ["database", "redis"])
async def test_a_delivered_message_arrives_whole_through_the_cache(
    gateway: GatewayFactory,
    postgres_url: str,
    redis_base_url: str,
    cache_type: str,
    size: int,
) -> None:
    client = await gateway(
        database_url=postgres_url,
        cache_type=cache_type,
        plugin_values={"REDIS_URL": redis_base_url},
    )
    hub = client.app[HUB]
    stream = Recorder("s-1")
    hub.attach("s-1", stream)
    message = {"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * size}}
    # Published, not handed over locally: as when another worker holds the stream.
    with capture_logs() as logs:
        for _ in range(50):
            await hub.publish({"kind": "deliver", "session": "s-1", "message": message})
            try:
                got = await asyncio.wait_for(stream.got.get(), 0.2)
                break
            except TimeoutError:
                continue  # the subscription may not be listening yet
        else:
            pytest.fail("the published message never arrived")
    assert got == message
    # It came through the channel: publishing did not fail over to local delivery.
    assert not [e for e in logs if "not published" in e["event"]], logs
