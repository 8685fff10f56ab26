"""Stopping a gateway leaves nothing behind: no unclosed connections, no pending tasks.

A retired backend (its upstream deleted or changed) is kept open for `TOOL_TIMEOUT` so calls
in flight can finish; a gateway stopped inside that window must close it at once.
"""

from __future__ import annotations

import gc
import logging

import pytest

from tests.conftest import GatewayFactory, rpc
from tests.upstreams.processes import RunningUpstream

LEAK_MESSAGES = ("Unclosed client session", "Unclosed connector", "Task was destroyed")


async def test_stopping_right_after_deleting_an_upstream_closes_its_backend(
    gateway: GatewayFactory,
    own_upstream: RunningUpstream,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    # Long enough that the retired backend is still waiting when the gateway stops.
    client = await gateway(tool_timeout=60.0)
    registered = await client.post(
        "/upstreams",
        json={"name": "own", "url": own_upstream.url, "transport": "streamable-http"},
        headers=admin_headers,
    )
    assert registered.status == 201, await registered.text()
    # A call opens the backend's connection and its upstream session.
    called = await rpc(
        client, "tools/call", {"name": "own__echo", "arguments": {"text": "hi"}}, user_headers
    )
    assert called["result"]["isError"] is False, called

    deleted = await client.delete("/upstreams/own", headers=admin_headers)
    assert deleted.status == 204, await deleted.text()
    await client.close()
    gc.collect()

    leaks = [r.getMessage() for r in caplog.records if r.getMessage().startswith(LEAK_MESSAGES)]
    assert leaks == []
