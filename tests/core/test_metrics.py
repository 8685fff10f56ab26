"""What `/metrics` counts in one process: rate-limit refusals and the cache operations
behind them, MCP requests by method and outcome, and the sampled gauges (catalogue,
upstream health, open streams). The registry is the process's own, so every check reads
the difference a test's requests made."""

from __future__ import annotations

import asyncio
import math
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Observations, Tally, _KnownUpstreams
from tests.conftest import RUN_MINUTES, Client, GatewayFactory, make_token, rpc
from tests.tracing.receivers import RecordingUpstream
from tests.upstreams.processes import RunningUpstream

Series = tuple[str, tuple[tuple[str, str], ...]]
ADMIN = {"Authorization": f"Bearer {make_token('root', ('admin',), minutes=RUN_MINUTES)}"}


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


async def scrape(client: Client) -> dict[Series, float]:
    reply = await client.get("/metrics", headers=ADMIN)
    assert reply.status == 200
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(await reply.text()):
        for sample in family.samples:
            found[series(sample.name, **sample.labels)] = sample.value
    return found


def grew(after: dict[Series, float], before: dict[Series, float], key: Series) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_rate_limit_refusals_and_the_cache_operations_behind_them_are_counted(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(rate_limit_per_minute=3)
    headers = {"Authorization": f"Bearer {make_token('limited-caller')}"}
    before = await scrape(client)
    replies = [await rpc(client, "tools/list", {}, headers=headers) for _ in range(5)]
    assert [r.get("error", {}).get("code") for r in replies] == [None, None, None, -32029, -32029]
    after = await scrape(client)
    assert grew(after, before, series("gateway_rate_limited_total", limit="caller")) == 2
    limits = {"cache": "memory", "use": "limits"}
    timed = series("gateway_cache_operation_duration_seconds_count", **limits)
    assert grew(after, before, timed) == 5
    limited = series("gateway_cache_operations_total", outcome="limited", **limits)
    assert grew(after, before, limited) == 2
    mcp = "gateway_mcp_requests_total"
    assert grew(after, before, series(mcp, method="tools/list", outcome="ok")) == 3
    assert grew(after, before, series(mcp, method="tools/list", outcome="error")) == 2


async def test_unknown_methods_are_counted_as_other_never_by_their_name(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway()
    before = await scrape(client)
    for n in range(3):
        reply = await rpc(client, f"made/up/{n}", {}, headers=user_headers)
        assert reply["error"]["code"] == -32601
    after = await scrape(client)
    other = series("gateway_mcp_requests_total", method="other", outcome="error")
    assert grew(after, before, other) == 3
    assert not [key for key in after if any("made/up" in value for _, value in key[1])]


async def test_sampled_gauges_show_the_catalogue_and_upstream_health(
    gateway: GatewayFactory, own_upstream: RunningUpstream
) -> None:
    client = await gateway(upstream_health_interval=0.3)
    body = {"name": "own", "url": own_upstream.url, "transport": "streamable-http"}
    response = await client.post("/upstreams", json=body, headers=ADMIN)
    assert response.status == 201
    tools = len((await rpc(client, "tools/list", {}, headers=ADMIN))["result"]["tools"])
    assert tools >= 5
    deadline = time.monotonic() + 15
    while True:
        found = await scrape(client)
        if (
            found.get(series("gateway_catalogue_tools")) == tools
            and found.get(series("gateway_upstream_up", upstream="own")) == 1
        ):
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.3)
    assert found[series("gateway_catalogue_version")] >= 1
    assert found[series("gateway_client_streams_open")] == 0


async def test_a_deleted_upstream_takes_its_series_with_it(
    gateway: GatewayFactory, own_upstream: RunningUpstream
) -> None:
    client = await gateway(upstream_health_interval=0.3)
    other = RecordingUpstream()
    try:
        for name, url in (("gone", own_upstream.url), ("stays", other.url)):
            body = {"name": name, "url": url, "transport": "streamable-http"}
            created = await client.post("/upstreams", json=body, headers=ADMIN)
            assert created.status == 201, await created.text()
            call = {"name": f"{name}__echo", "arguments": {"text": "hi"}}
            assert "result" in await rpc(client, "tools/call", call, headers=ADMIN)
        await deleted_upstream_goes(client)
    finally:
        other.close()


async def deleted_upstream_goes(client: Client) -> None:
    def naming(found: dict[Series, float], upstream: str) -> set[str]:
        return {name for name, labels in found if ("upstream", upstream) in labels}

    deadline = time.monotonic() + 15
    while "gateway_upstream_up" not in naming(found := await scrape(client), "gone"):
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.3)
    per_upstream = {
        "gateway_upstream_up",
        "gateway_tool_calls_total",
        "gateway_tool_call_duration_seconds_count",
    }
    assert per_upstream <= naming(found, "gone")
    assert (await client.delete("/upstreams/gone", headers=ADMIN)).status == 204
    await asyncio.sleep(1.0)  # health checks that were under way when it went
    after = await scrape(client)
    assert naming(after, "gone") == set()
    assert {"gateway_tool_calls_total", "gateway_tool_call_duration_seconds_count"} <= (
        naming(after, "stays")
    )


def test_served_multiprocess_series_leave_out_upstreams_the_catalogue_no_longer_holds() -> None:
    registry = CollectorRegistry()
    calls = Counter("calls", "c", ["upstream", "tool"], registry=registry)
    plain = Counter("plain", "p", ["route"], registry=registry)
    calls.labels("gone", "a").inc()
    calls.labels("stays", "b").inc()
    plain.labels("/rpc").inc()
    served = CollectorRegistry(auto_describe=False)
    served.register(_KnownUpstreams(registry, {"stays"}))
    text = generate_latest(served).decode()
    assert 'calls_total{tool="b",upstream="stays"} 1.0' in text
    assert 'plain_total{route="/rpc"} 1.0' in text
    assert "gone" not in text


def test_a_flushed_tally_exposes_what_prometheus_client_would_have_counted() -> None:
    registry = CollectorRegistry()
    bounds = [0.01, 0.1, 1.0, math.inf]
    direct = Histogram("direct_seconds", "d", ["route"], buckets=bounds, registry=registry)
    tallied = Histogram("tallied_seconds", "d", ["route"], buckets=bounds, registry=registry)
    tally = Tally(tallied, lambda: Observations(bounds))
    values = [0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 0.01]
    for value in values[:5]:
        direct.labels("/a").observe(value)
        tally("/a").observe(value)
    tally.flush()
    for value in values[5:]:
        direct.labels("/a").observe(value)
        tally("/a").observe(value)
    tally.flush()
    tally.flush()  # nothing new: nothing added

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        [family] = [f for f in registry.collect() if f.name == name]
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples("tallied_seconds") == samples("direct_seconds")
    assert samples("tallied_seconds")[-2:] == [
        ("_count", {"route": "/a"}, 8.0),
        ("_sum", {"route": "/a"}, sum(values)),
    ]
