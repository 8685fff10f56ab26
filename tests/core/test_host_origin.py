"""Host and Origin checks, JSON-only state changes, and which routes are public: a browser
page must not drive a gateway through DNS rebinding or a cross-site POST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from gateway.keys import CACHE
from gateway_plugins.cache_redis import RedisCacheError
from tests.conftest import Client, GatewayFactory, bearer, error_message, make_token
from tests.plugins import faulty
from tests.support.gunicorn_process import StartGunicorn, gunicorn_env
from tests.transports.conftest import init_message

INIT = init_message("2025-06-18")
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
REBOUND = {"Host": "evil.example", "Origin": "http://evil.example"}


def tick_call(request_id: int = 1) -> dict[str, Any]:
    params = {"name": "faulty_tick", "arguments": {}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def open_gateway(gateway: GatewayFactory, **settings: Any) -> Client:
    """A gateway without auth, so only the checks under test stand in the way."""
    return await gateway(plugins=[faulty], auth_required=False, **settings)


async def ticks_so_far(client: Client) -> int:
    """`faulty_tick` answers how many times it has run, this call included."""
    response = await client.post("/rpc", json=tick_call())
    body = await response.json()
    return int(body["result"]["content"][0]["text"]) - 1


# --- Host ------------------------------------------------------------------------------------


async def test_a_rebound_host_on_a_loopback_gateway_is_refused_without_a_session(
    gateway: GatewayFactory,
) -> None:
    client = await open_gateway(gateway, host="127.0.0.1")
    response = await client.post("/mcp", json=INIT, headers={**MCP_ACCEPT, **REBOUND})
    assert response.status == 421
    assert "Mcp-Session-Id" not in response.headers
    assert (await response.json())["error"]["status"] == 421
    without_origin = await client.post(
        "/mcp", json=INIT, headers={**MCP_ACCEPT, "Host": "evil.example"}
    )
    assert without_origin.status == 421


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:4444", "[::1]:8080", "LOCALHOST:1"])
async def test_a_loopback_gateway_answers_loopback_names_on_any_port(
    gateway: GatewayFactory, host: str
) -> None:
    client = await open_gateway(gateway, host="127.0.0.1")
    response = await client.post("/mcp", json=INIT, headers={**MCP_ACCEPT, "Host": host})
    assert response.status == 200
    assert "Mcp-Session-Id" in response.headers


async def test_a_loopback_gateway_answers_the_host_of_public_url(gateway: GatewayFactory) -> None:
    client = await open_gateway(gateway, host="::1", public_url="https://gw.example:8443")
    assert (await client.get("/health", headers={"Host": "gw.example"})).status == 200
    assert (await client.get("/health", headers={"Host": "evil.example"})).status == 421


async def test_a_gateway_bound_to_all_addresses_answers_any_host_unless_told(
    gateway: GatewayFactory,
) -> None:
    open_to_all = await open_gateway(gateway, host="0.0.0.0")
    assert (await open_to_all.get("/health", headers={"Host": "gw.example"})).status == 200
    restricted = await open_gateway(gateway, host="0.0.0.0", allowed_hosts=("gw.example",))
    assert (await restricted.get("/health", headers={"Host": "gw.example:80"})).status == 200
    assert (await restricted.get("/health", headers={"Host": "localhost"})).status == 421


# --- Origin ----------------------------------------------------------------------------------


async def test_an_origin_equal_to_the_host_is_still_foreign(gateway: GatewayFactory) -> None:
    client = await open_gateway(gateway, host="0.0.0.0")
    headers = {**MCP_ACCEPT, **REBOUND}
    response = await client.post("/mcp", json=INIT, headers=headers)
    assert response.status == 403
    assert "Mcp-Session-Id" not in response.headers


async def test_an_allowed_origin_passes_and_others_are_refused(gateway: GatewayFactory) -> None:
    client = await open_gateway(gateway, allowed_origins=("https://app.example",))
    allowed = await client.post("/rpc", json=tick_call(), headers={"Origin": "https://APP.example"})
    assert allowed.status == 200
    refused = await client.post("/rpc", json=tick_call(), headers={"Origin": "https://x.example"})
    assert refused.status == 403
    assert (await refused.json())["error"]["message"] == "Forbidden: Origin is not allowed"
    assert await ticks_so_far(client) == 1


# --- cross-site bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "http://evil.example"])
async def test_a_cross_site_text_plain_post_runs_no_tool_and_registers_nothing(
    gateway: GatewayFactory, origin: str | None
) -> None:
    client = await open_gateway(gateway)
    headers = {"Content-Type": "text/plain"}
    if origin is not None:
        headers["Origin"] = origin
    upstream = b'{"name": "evil", "url": "http://127.0.0.1:9/mcp", "transport": "faulty"}'
    server = b'{"name": "evil", "tools": []}'
    for path, body in [("/rpc", b""), ("/upstreams", upstream), ("/servers", server)]:
        data = body or orjson.dumps(tick_call())
        response = await client.post(path, data=data, headers=headers)
        assert response.status == (403 if origin else 415), path
    form = await client.post("/rpc", data={"a": "b"})
    assert form.status == 415
    assert await ticks_so_far(client) == 0
    upstreams = await (await client.get("/upstreams")).json()
    assert "evil" not in str(upstreams)
    servers = await (await client.get("/servers")).json()
    assert "evil" not in str(servers)


async def test_a_bodiless_delete_needs_no_content_type(gateway: GatewayFactory) -> None:
    client = await open_gateway(gateway)
    response = await client.delete("/servers/none-such")
    assert response.status == 404


# --- public and private routes ---------------------------------------------------------------


async def test_metrics_need_the_metrics_or_admin_scope(gateway: GatewayFactory) -> None:
    client = await gateway(plugins=[faulty])
    assert (await client.get("/metrics")).status == 401
    plain = await client.get("/metrics", headers=bearer(make_token("alice")))
    assert "metrics" in await error_message(plain, 403)
    scoped = await client.get("/metrics", headers=bearer(make_token("prom", ("metrics",))))
    assert scoped.status == 200
    admin = await client.get("/metrics", headers=bearer(make_token("root", ("admin",))))
    assert admin.status == 200


async def test_an_unknown_well_known_path_is_404_json_without_a_token(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugins=[faulty])
    response = await client.get("/.well-known/oauth-protected-resource")
    assert response.status == 404
    assert (await response.json())["error"]["status"] == 404
    assert (await client.get("/elsewhere")).status == 401


async def test_ready_names_what_fails_only_to_a_caller_with_a_token(
    gateway: GatewayFactory, redis_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await gateway(
        plugins=[faulty], cache_type="redis", plugin_values={"REDIS_URL": redis_base_url}
    )
    # The cache's health check fails, as when Redis has gone: /ready reports the cache.
    # (Closing the cache under the running gateway instead left its background work to
    # reconnect, and a connection nobody closed.)
    cache = client.app[CACHE]

    async def unreachable() -> None:
        raise RedisCacheError("Redis at 127.0.0.1:6379 cannot be reached")

    monkeypatch.setattr(cache, "health", unreachable)
    anonymous = await client.get("/ready")
    assert anonymous.status == 503
    assert await anonymous.json() == {"status": "unavailable"}
    told = await client.get("/ready", headers=bearer(make_token("alice")))
    assert told.status == 503
    assert "cache" in (await told.json())["failing"]
    bad_token = await client.get("/ready", headers=bearer("not.a.jwt"))
    assert await bad_token.json() == {"status": "unavailable"}


# --- under gunicorn --------------------------------------------------------------------------


@pytest.mark.cluster
def test_gunicorn_on_loopback_refuses_dns_rebinding_and_cross_site_posts(
    gunicorn: StartGunicorn, tmp_path: Path
) -> None:
    env = gunicorn_env(f"sqlite:///{tmp_path / 'gateway.db'}", AUTH_REQUIRED="false")
    gateway = gunicorn(env, workers=1)
    rebound = httpx2.post(f"{gateway.url}/mcp", json=INIT, headers={**MCP_ACCEPT, **REBOUND})
    assert rebound.status_code == 421
    assert "mcp-session-id" not in rebound.headers
    upstream = {"name": "evil", "url": "http://127.0.0.1:9/mcp"}
    cross_site = httpx2.post(
        f"{gateway.url}/upstreams",
        content=orjson.dumps(upstream),
        headers={"Content-Type": "text/plain"},
    )
    assert cross_site.status_code == 415
    assert "evil" not in httpx2.get(f"{gateway.url}/upstreams").text
    served = httpx2.post(f"{gateway.url}/mcp", json=INIT, headers=MCP_ACCEPT)
    assert served.status_code == 200
    assert "mcp-session-id" in served.headers
