"""The tool result cache and rate limits, as callers of `/rpc` see them."""

from __future__ import annotations

import pytest

from tests.conftest import RUN_MINUTES, Client, GatewayFactory, make_token, rpc

# Made at import, so they must outlive the whole run, not just this module's tests.
ADMIN = {"Authorization": f"Bearer {make_token('root', ('admin',), minutes=RUN_MINUTES)}"}
ALICE = {"Authorization": f"Bearer {make_token('alice', minutes=RUN_MINUTES)}"}
BOB = {"Authorization": f"Bearer {make_token('bob', minutes=RUN_MINUTES)}"}


async def set_tool(client: Client, name: str, **changes: object) -> None:
    response = await client.patch(f"/tools/{name}", json=changes, headers=ADMIN)
    assert response.status == 200, await response.text()


def text(body: dict[str, object]) -> str:
    result = body["result"]
    assert isinstance(result, dict)
    return str(result["content"][0]["text"])


def cache_mark(body: dict[str, object]) -> str | None:
    result = body["result"]
    assert isinstance(result, dict)
    return result.get("_meta", {}).get("aio-mcp-gateway/cache")


async def test_uncached_tool_reaches_the_upstream_every_time(client: Client) -> None:
    first = await rpc(client, "faulty_tick", {}, ALICE)
    second = await rpc(client, "faulty_tick", {}, ALICE)
    assert text(first) != text(second)
    assert cache_mark(first) is None


async def test_identical_call_within_ttl_is_a_hit_marked_in_meta(client: Client) -> None:
    await set_tool(client, "faulty_tick", cache_ttl=30)
    first = await rpc(client, "faulty_tick", {"n": 1}, ALICE)
    second = await rpc(client, "tools/call", {"name": "faulty_tick", "arguments": {"n": 1}}, ALICE)
    assert (cache_mark(first), cache_mark(second)) == ("miss", "hit")
    assert text(first) == text(second)


async def test_different_arguments_or_callers_do_not_share_results(client: Client) -> None:
    await set_tool(client, "faulty_tick", cache_ttl=30)
    alice = await rpc(client, "faulty_tick", {"n": 1}, ALICE)
    other_args = await rpc(client, "faulty_tick", {"n": 2}, ALICE)
    bob = await rpc(client, "faulty_tick", {"n": 1}, BOB)
    assert len({text(alice), text(other_args), text(bob)}) == 3
    assert cache_mark(bob) == "miss"


async def test_error_results_are_never_cached(client: Client) -> None:
    await set_tool(client, "faulty_error", cache_ttl=30)
    first = await rpc(client, "faulty_error", {}, ALICE)
    second = await rpc(client, "faulty_error", {}, ALICE)
    assert cache_mark(first) is None and cache_mark(second) is None


async def test_cache_ttl_is_shown_and_can_be_cleared(client: Client) -> None:
    await set_tool(client, "faulty_tick", cache_ttl=5)
    shown = await (await client.get("/tools/faulty_tick", headers=ADMIN)).json()
    assert shown["cache_ttl"] == 5
    await set_tool(client, "faulty_tick", cache_ttl=None)
    body = await rpc(client, "faulty_tick", {}, ALICE)
    assert cache_mark(body) is None


@pytest.mark.parametrize(
    "changes",
    [{"cache_ttl": -1}, {"cache_ttl": "soon"}, {"rate_limit": 0}, {"enabled": "yes"}, {"nope": 1}],
)
async def test_bad_tool_changes_are_refused_with_422(
    client: Client, changes: dict[str, object]
) -> None:
    response = await client.patch("/tools/faulty_tick", json=changes, headers=ADMIN)
    assert response.status == 422
    assert (await response.json())["error"]["message"]


@pytest.mark.parametrize("field", ["cache_ttl", "rate_limit"])
@pytest.mark.parametrize("value", [2**31, 2**63, 2**64 - 1, 1e308])
async def test_tool_settings_too_large_for_the_store_are_refused_with_422_and_change_nothing(
    client: Client, field: str, value: float
) -> None:
    await set_tool(client, "faulty_tick", cache_ttl=5, rate_limit=100)
    response = await client.patch("/tools/faulty_tick", json={field: value}, headers=ADMIN)
    assert response.status == 422, await response.text()
    assert field in (await response.json())["error"]["message"]
    shown = await (await client.get("/tools/faulty_tick", headers=ADMIN)).json()
    assert (shown["cache_ttl"], shown["rate_limit"]) == (5, 100)


async def test_tool_rate_limit_refuses_calls_past_it_with_retry_after(client: Client) -> None:
    await set_tool(client, "faulty_count", rate_limit=3)
    bodies = [await rpc(client, "faulty_count", {"n": 1}, ALICE) for _ in range(3)]
    assert all("result" in body for body in bodies)
    response = await client.post(
        "/rpc",
        json={"jsonrpc": "2.0", "id": 9, "method": "faulty_count", "params": {}},
        headers=BOB,
    )
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.json()
    assert body["error"]["code"] == -32029
    assert body["error"]["data"]["retryAfter"] >= 1


async def test_caller_rate_limit_counts_each_token_apart(gateway: GatewayFactory) -> None:
    client = await gateway(rate_limit_per_minute=2)
    for _ in range(2):
        assert "result" in await rpc(client, "ping", {}, ALICE)
    limited = await rpc(client, "ping", {}, ALICE)
    assert limited["error"]["code"] == -32029
    assert "result" in await rpc(client, "ping", {}, BOB)
