"""Who may reach what: JWT on `/rpc`, the `admin` scope on the admin API, open probes,
and anonymous access when `AUTH_REQUIRED=false`."""

from __future__ import annotations

import logging
import time

import jwt
import pytest

from tests.conftest import TEST_SECRET, Client, GatewayFactory, bearer, make_token

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def test_rpc_without_token_is_401_json_with_bearer_challenge(client: Client) -> None:
    response = await client.post("/rpc", json=PING)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["error"]["status"] == 401
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not.a.jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        f"Bearer {jwt.encode({'sub': 'x', 'exp': int(time.time()) + 60}, 'wrong-secret-' * 8)}",
        f"Bearer {jwt.encode({'sub': 'x', 'exp': int(time.time()) - 60}, TEST_SECRET)}",
        f"Bearer {jwt.encode({'sub': 'x'}, TEST_SECRET)}",
    ],
    ids=["garbage", "basic-scheme", "empty", "bad-signature", "expired", "no-exp"],
)
async def test_rpc_with_bad_token_is_401(client: Client, header: str) -> None:
    response = await client.post("/rpc", json=PING, headers={"Authorization": header})
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    assert response.content_type == "application/json"


async def test_bad_token_writes_no_traceback(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/rpc", json=PING, headers=bearer("not.a.jwt"))
    assert not [r for r in caplog.records if r.exc_info]


async def test_rpc_with_valid_token_is_served(client: Client) -> None:
    response = await client.post("/rpc", json=PING, headers=bearer(make_token("alice")))
    assert response.status == 200
    assert (await response.json())["result"] == {}


async def test_admin_api_without_admin_scope_is_403(client: Client) -> None:
    response = await client.get("/upstreams", headers=bearer(make_token("alice")))
    assert response.status == 403
    assert "admin" in (await response.json())["error"]["message"]


async def test_admin_api_with_admin_scope_is_served(client: Client) -> None:
    response = await client.get("/tools", headers=bearer(make_token("root", ("admin",))))
    assert response.status == 200
    assert "tools" in await response.json()


async def test_admin_api_without_token_is_401(client: Client) -> None:
    response = await client.post("/upstreams", json={})
    assert response.status == 401


@pytest.mark.parametrize("path", ["/health", "/ready", "/version"])
async def test_probes_need_no_token(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200


async def test_auth_not_required_makes_requests_anonymous_and_admin_open(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(auth_required=False)
    assert (await client.post("/rpc", json=PING)).status == 200
    assert (await client.get("/upstreams")).status == 200
