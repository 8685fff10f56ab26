"""What an upstream says on its own reaches the gateway's clients: its `list_changed`
makes the gateway re-discover it and tell every client stream, and its
`notifications/resources/updated` reaches the clients subscribed to the URI, even when
no client has called the upstream yet (its session is opened for listening alone)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Client, GatewayFactory
from tests.transports.conftest import EventReader, call, open_get_stream, open_session
from tests.transports.conftest import streams_attached as client_streams
from tests.upstreams.fixtures import eventually
from tests.upstreams.processes import RunningUpstream

JSON = dict[str, object]
# The gateway's promise is about 2 s; the margin is for a machine busy with other tests.
WITHIN = 4.0


async def registered(
    gateway: GatewayFactory,
    upstream: RunningUpstream,
    admin_headers: dict[str, str],
    transport: str = "streamable-http",
) -> Client:
    client = await gateway()
    url = upstream.sse_url if transport == "sse" else upstream.url
    payload = {"name": "own", "url": url, "transport": transport}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 201, await response.text()
    client.session.headers.update(admin_headers)
    return client


async def upstream_tells(upstream: RunningUpstream, path: str) -> None:
    """Send a notification from the upstream, once the gateway listens to it: until then
    the upstream has no stream to send it on (`notified` is 0)."""

    async def sent() -> bool:
        return int((await upstream.admin("POST", path))["notified"]) >= 1

    await eventually(sent, timeout=10.0, what=f"the gateway listening to the upstream ({path})")


async def client_stream(client: Client) -> tuple[str, EventReader]:
    session = await open_session(client)
    reader = await open_get_stream(client, session)
    await client_streams(client, 1)
    return session, reader


async def next_with(reader: EventReader, method: str) -> JSON:
    deadline = time.monotonic() + WITHIN
    while True:
        message = await reader.message(timeout=max(0.1, deadline - time.monotonic()))
        if message.get("method") == method:
            return message


async def listed(client: Client, session: str, method: str, key: str, field: str) -> list[str]:
    answer = await call(client, session, method)
    return [str(item[field]) for item in answer["result"][key]]


async def test_an_upstreams_tools_list_changed_reaches_a_client_that_never_called_it(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream, admin_headers)
    session, reader = await client_stream(client)
    await own_upstream.admin("POST", "/admin/add-tool?name=late")
    await upstream_tells(own_upstream, "/admin/list-changed?kind=tools")
    started = time.monotonic()
    await next_with(reader, "notifications/tools/list_changed")
    assert time.monotonic() - started < WITHIN
    assert "own__late" in await listed(client, session, "tools/list", "tools", "name")


async def test_a_legacy_sse_upstreams_list_changed_reaches_a_client_that_never_called_it(
    gateway: GatewayFactory, own_upstream_legacy: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream_legacy, admin_headers, "sse")
    session, reader = await client_stream(client)
    await own_upstream_legacy.admin("POST", "/admin/add-tool?name=late")
    await upstream_tells(own_upstream_legacy, "/admin/list-changed?kind=tools")
    await next_with(reader, "notifications/tools/list_changed")
    assert "own__late" in await listed(client, session, "tools/list", "tools", "name")


async def test_an_upstreams_prompts_and_resources_list_changed_reach_the_client(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream, admin_headers)
    session, reader = await client_stream(client)
    await own_upstream.admin("POST", "/admin/add-prompt?name=late")
    await upstream_tells(own_upstream, "/admin/list-changed?kind=prompts")
    await next_with(reader, "notifications/prompts/list_changed")
    assert "own__late" in await listed(client, session, "prompts/list", "prompts", "name")
    await own_upstream.admin("POST", "/admin/add-resource?uri=memo://late")
    await upstream_tells(own_upstream, "/admin/list-changed?kind=resources")
    await next_with(reader, "notifications/resources/list_changed")
    assert "memo://late" in await listed(client, session, "resources/list", "resources", "uri")


async def test_an_upstreams_resource_update_reaches_the_subscribed_client(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream, admin_headers)
    session, reader = await client_stream(client)
    subscribed = await call(client, session, "resources/subscribe", {"uri": "memo://one"})
    assert subscribed["result"] == {}
    await upstream_tells(own_upstream, "/admin/update-resource?uri=memo://one")
    updated = await next_with(reader, "notifications/resources/updated")
    assert updated["params"] == {"uri": "memo://one"}


async def test_a_list_changed_that_changes_nothing_is_not_passed_on(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream, admin_headers)
    _, reader = await client_stream(client)
    before = (await own_upstream.stats())["tools_list"]
    await upstream_tells(own_upstream, "/admin/list-changed?kind=tools")
    await eventually(
        lambda: _grew(own_upstream, "tools_list", before), what="a re-discovery of the upstream"
    )
    with pytest.raises(TimeoutError):
        await reader.message(timeout=1.0)


async def test_a_noisy_upstream_costs_few_re_discoveries_and_the_last_change_is_seen(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await registered(gateway, own_upstream, admin_headers)
    session, reader = await client_stream(client)
    await upstream_tells(own_upstream, "/admin/list-changed?kind=tools")
    await next_with_nothing_changed(own_upstream)
    # Each re-discovery opens a session of its own: one `initialize` each.
    before = (await own_upstream.stats())["initialize"]
    started = time.monotonic()
    for burst in range(10):
        await asyncio.gather(
            *(own_upstream.admin("POST", "/admin/list-changed?kind=tools") for _ in range(50))
        )
        if burst == 5:
            await own_upstream.admin("POST", "/admin/add-tool?name=late")
    await next_with(reader, "notifications/tools/list_changed")
    assert "own__late" in await listed(client, session, "tools/list", "tools", "name")
    await asyncio.sleep(1.0)  # a re-discovery still due would have started by now
    spent = time.monotonic() - started
    discoveries = (await own_upstream.stats())["initialize"] - before
    # 500 notes: one re-discovery at once and at most one per REFRESH_SPACING (0.5 s)
    # after it, not one per note.
    assert 1 <= discoveries <= 2 + spent / 0.5, (discoveries, spent)


async def next_with_nothing_changed(upstream: RunningUpstream) -> None:
    """Let the re-discovery of an unchanged upstream finish: its count stops moving."""
    last = -1
    while (now := (await upstream.stats())["tools_list"]) != last:
        last = now
        await asyncio.sleep(0.7)


async def _grew(upstream: RunningUpstream, key: str, before: int) -> bool:
    return int((await upstream.stats())[key]) > before
