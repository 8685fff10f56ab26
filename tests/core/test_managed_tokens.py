"""Managed tokens: `POST /tokens` mints one and shows it once, `GET /tokens` lists them
without the token, `DELETE /tokens/{id}` revokes one; `token create --name`, `token list`
and `token revoke` do the same from the command line."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.settings import Settings
from tests.conftest import Client, GatewayFactory, bearer, error_message
from tests.core.test_tokens import claims, command, refusal, tools_list_status


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway(catalogue_poll_interval=0.2)


async def mint(client: Client, admin_headers: dict[str, str], **body: object) -> dict[str, object]:
    response = await client.post("/tokens", json=body, headers=admin_headers)
    assert response.status == 201, await response.text()
    minted: dict[str, object] = await response.json()
    return minted


async def test_post_tokens_mints_a_working_token_shown_once_and_listed_without_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    minted = await mint(
        client, admin_headers, name="nightly report", scopes=["reports"], expires_in=600
    )
    token = str(minted["token"])
    assert claims(token)["jti"] == minted["id"]
    assert claims(token)["sub"] == "nightly report"
    assert claims(token)["exp"] - claims(token)["iat"] in (600, 601)
    assert minted["scopes"] == ["reports"] and minted["revoked"] is False
    assert await tools_list_status(client, token) == 200
    listed = await (await client.get("/tokens", headers=admin_headers)).json()
    [entry] = listed["tokens"]
    assert entry["id"] == minted["id"] and entry["name"] == "nightly report"
    assert "token" not in entry and token not in orjson.dumps(listed).decode()


async def test_a_token_minted_for_servers_reaches_only_them(
    client: Client, admin_headers: dict[str, str]
) -> None:
    minted = await mint(client, admin_headers, name="bot", subject="bot-1", servers=["support"])
    assert claims(str(minted["token"]))["servers"] == ["support"]
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=bearer(str(minted["token"])),
    )
    assert response.status == 403


async def test_delete_revokes_the_token_and_the_list_shows_it_revoked(
    client: Client, admin_headers: dict[str, str]
) -> None:
    minted = await mint(client, admin_headers, name="ci")
    token = str(minted["token"])
    assert await tools_list_status(client, token) == 200
    deleted = await client.delete(f"/tokens/{minted['id']}", headers=admin_headers)
    assert deleted.status == 200
    assert (await deleted.json())["revoked"] is True
    assert await refusal(client, token) == "token has been revoked"
    [entry] = (await (await client.get("/tokens", headers=admin_headers)).json())["tokens"]
    assert entry["revoked"] is True and entry["revoked_at"] is not None
    again = await client.delete(f"/tokens/{minted['id']}", headers=admin_headers)
    assert again.status == 200
    unknown = await client.delete("/tokens/no-such-id", headers=admin_headers)
    assert "no managed token" in await error_message(unknown, 404)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "'name'"),
        ({"name": "x", "expires_in": 10**9}, "exceeds MAX_TOKEN_LIFETIME"),
        ({"name": "x", "expires_in": 0}, "positive number"),
        ({"name": "x", "scopes": "admin"}, "'scopes' must be a list"),
        ({"name": "x", "scopes": ["two words"]}, "no spaces"),
        ({"name": "x", "colour": "red"}, "unknown field(s): colour"),
    ],
)
async def test_a_bad_mint_request_is_422_naming_the_problem(
    client: Client, admin_headers: dict[str, str], body: dict[str, object], reason: str
) -> None:
    response = await client.post("/tokens", json=body, headers=admin_headers)
    assert reason in await error_message(response, 422)


async def test_managed_token_routes_need_the_admin_scope(
    client: Client, user_headers: dict[str, str]
) -> None:
    minted = await client.post("/tokens", json={"name": "x"}, headers=user_headers)
    listed = await client.get("/tokens", headers=user_headers)
    deleted = await client.delete("/tokens/x", headers=user_headers)
    assert (minted.status, listed.status, deleted.status) == (403, 403, 403)


async def test_token_commands_create_list_and_revoke_a_managed_token(
    client: Client, base_settings: Settings
) -> None:
    created = await asyncio.to_thread(
        command, base_settings, "create", "--sub", "etl", "--name", "etl job", "--scope", "etl"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert await tools_list_status(client, token) == 200
    listing = await asyncio.to_thread(command, base_settings, "list")
    assert listing.returncode == 0, listing.stderr
    [entry] = [orjson.loads(line) for line in listing.stdout.splitlines()]
    assert entry["name"] == "etl job" and entry["subject"] == "etl"
    assert entry["id"] == claims(token)["jti"] and entry["revoked"] is False
    assert token not in listing.stdout
    revoked = await asyncio.to_thread(command, base_settings, "revoke", "--jti", entry["id"])
    assert revoked.returncode == 0, revoked.stderr
    listing = await asyncio.to_thread(command, base_settings, "list")
    assert orjson.loads(listing.stdout.splitlines()[0])["revoked"] is True

    async def refused() -> bool:
        return await tools_list_status(client, token) == 401

    for _ in range(50):  # the worker's store poll (0.2 s here) brings the revocation
        if await refused():
            break
        await asyncio.sleep(0.1)
    assert await refusal(client, token) == "token has been revoked"
