"""Token lifetimes and revocation: every token has a jti, none lives longer than
MAX_TOKEN_LIFETIME, and an admin can revoke one by its jti or by the token itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest

from gateway.settings import Settings
from gateway_plugins.jwt_tokens import DEFAULT_MAX_LIFETIME, create_token
from tests.conftest import TEST_SECRET, Client, GatewayFactory, bearer

YEAR_9999 = 253402300799


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    return decoded


async def tools_list_status(client: Client, token: str) -> int:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = await client.post("/rpc", json=message, headers=bearer(token))
    return response.status


async def refusal(client: Client, token: str) -> str:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = await client.post("/rpc", json=message, headers=bearer(token))
    assert response.status == 401
    body = await response.json()
    return str(body["error"]["message"])


def command(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "AUTH_ENCRYPTION_SECRET": settings.auth_encryption_secret,
        "JWT_SECRET_KEY": TEST_SECRET,
        "CACHE_TYPE": "memory",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", "token", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- jti and lifetime --------------------------------------------------------------------


def test_every_minted_token_has_its_own_jti() -> None:
    first, second = (claims(create_token(TEST_SECRET, "alice")) for _ in range(2))
    assert first["jti"] and second["jti"]
    assert first["jti"] != second["jti"]


def test_minted_jti_never_reads_as_a_command_line_option() -> None:
    # A jti starting with "-" made `token revoke --jti <jti>` an argparse error.
    for _ in range(200):
        jti = claims(create_token(TEST_SECRET, "alice"))["jti"]
        assert len(jti) == 32 and all(c in "0123456789abcdef" for c in jti)


def test_create_token_refuses_a_lifetime_over_the_bound() -> None:
    with pytest.raises(ValueError, match="exceeds MAX_TOKEN_LIFETIME"):
        create_token(TEST_SECRET, "alice", expires_minutes=DEFAULT_MAX_LIFETIME / 60 + 1)
    with pytest.raises(ValueError, match="exceeds MAX_TOKEN_LIFETIME"):
        create_token(TEST_SECRET, "alice", expires_minutes=11, max_lifetime=600)


def test_token_create_command_refuses_exp_beyond_max_token_lifetime(
    base_settings: Settings,
) -> None:
    refused = command(
        base_settings, "create", "--sub", "ops", "--exp", "11", MAX_TOKEN_LIFETIME="600"
    )
    assert refused.returncode == 2
    assert "exceeds MAX_TOKEN_LIFETIME (600 seconds)" in refused.stderr
    assert refused.stdout == ""
    allowed = command(base_settings, "create", "--sub", "ops", "--exp", "10")
    assert allowed.returncode == 0, allowed.stderr


async def test_token_living_longer_than_max_token_lifetime_is_401(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugin_values={"MAX_TOKEN_LIFETIME": 3600.0})
    now = int(time.time())
    within = signed({"sub": "a", "iat": now, "exp": now + 3600, "jti": "j1"})
    beyond = signed({"sub": "a", "iat": now, "exp": now + 3601, "jti": "j2"})
    assert await tools_list_status(client, within) == 200
    message = await refusal(client, beyond)
    assert message == "token lifetime (exp - iat) exceeds MAX_TOKEN_LIFETIME (3600 seconds)"


async def test_token_without_iat_is_401(client: Client) -> None:
    token = signed({"sub": "a", "exp": int(time.time()) + 60, "jti": "j"})
    assert await refusal(client, token) == "token has no iat claim, so its lifetime is unknown"


async def test_token_expiring_in_year_9999_is_401(client: Client) -> None:
    token = signed({"sub": "a", "iat": int(time.time()), "exp": YEAR_9999, "jti": "j"})
    assert "exceeds MAX_TOKEN_LIFETIME" in await refusal(client, token)


# --- revocation --------------------------------------------------------------------------


async def test_token_revoked_by_jti_is_401_on_the_next_request(
    client: Client, admin_headers: dict[str, str]
) -> None:
    token = create_token(TEST_SECRET, "alice")
    assert await tools_list_status(client, token) == 200  # now in the verified-token cache
    jti = claims(token)["jti"]
    response = await client.post("/tokens/revoke", json={"jti": jti}, headers=admin_headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["jti"] == jti
    assert await refusal(client, token) == "token has been revoked"
    assert await tools_list_status(client, create_token(TEST_SECRET, "alice")) == 200


async def test_token_revoked_by_itself_is_401_and_listed_with_its_subject_and_expiry(
    client: Client, admin_headers: dict[str, str]
) -> None:
    token = create_token(TEST_SECRET, "bob", expires_minutes=5)
    response = await client.post("/tokens/revoke", json={"token": token}, headers=admin_headers)
    assert response.status == 200, await response.text()
    assert await refusal(client, token) == "token has been revoked"
    listed = await (await client.get("/tokens/revoked", headers=admin_headers)).json()
    [entry] = [e for e in listed if e["jti"] == claims(token)["jti"]]
    assert entry["subject"] == "bob"
    assert entry["expires_at"] == claims(token)["exp"]
    assert entry["revoked_at"] <= time.time()


async def test_revoking_and_listing_need_the_admin_scope(
    client: Client, user_headers: dict[str, str]
) -> None:
    revoke = await client.post("/tokens/revoke", json={"jti": "x"}, headers=user_headers)
    listing = await client.get("/tokens/revoked", headers=user_headers)
    assert (revoke.status, listing.status) == (403, 403)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'request body must be {"jti": "..."} or {"token": "..."}'),
        ({"jti": "a", "token": "b"}, 'request body must be {"jti": "..."} or {"token": "..."}'),
        ({"jti": ""}, "jti must be a non-empty string"),
        ({"jti": "j" * 257}, "jti must be at most 256 characters"),
        ({"token": "garbage"}, "token is not one this gateway signed"),
        (
            {"token": signed({"sub": "a", "iat": 1, "exp": int(time.time()) + 60})},
            "token has no jti claim",
        ),
    ],
)
async def test_a_revocation_that_names_no_token_is_400(
    client: Client, admin_headers: dict[str, str], body: dict[str, Any], message: str
) -> None:
    response = await client.post("/tokens/revoke", json=body, headers=admin_headers)
    assert response.status == 400
    assert message in (await response.json())["error"]["message"]


async def test_token_revoke_command_reaches_a_running_gateway(
    client: Client, base_settings: Settings
) -> None:
    token = create_token(TEST_SECRET, "carol")
    assert await tools_list_status(client, token) == 200
    revoked = await asyncio.to_thread(
        command, base_settings, "revoke", "--jti", claims(token)["jti"]
    )
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {claims(token)['jti']}"
    # The memory cache carries no message between processes: the worker's poll finds it.
    deadline = time.monotonic() + 10
    while await tools_list_status(client, token) == 200:
        assert time.monotonic() < deadline, "the revocation never reached the gateway"
        await asyncio.sleep(0.1)
    assert await refusal(client, token) == "token has been revoked"


async def test_token_revoke_command_takes_a_jti_starting_with_a_dash_in_its_equals_form(
    client: Client, base_settings: Settings
) -> None:
    # Earlier releases minted URL-safe base64 jtis, some starting with "-".
    jti = "-older-release-jti"
    token = signed(
        {"sub": "erin", "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": jti}
    )
    assert await tools_list_status(client, token) == 200
    revoked = await asyncio.to_thread(command, base_settings, "revoke", f"--jti={jti}")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {jti}"
    deadline = time.monotonic() + 10
    while await tools_list_status(client, token) == 200:
        assert time.monotonic() < deadline, "the revocation never reached the gateway"
        await asyncio.sleep(0.1)
    assert await refusal(client, token) == "token has been revoked"


async def test_revocations_survive_a_restart(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    token = create_token(TEST_SECRET, "dave")
    first = await gateway()
    response = await first.post("/tokens/revoke", json={"token": token}, headers=admin_headers)
    assert response.status == 200
    await first.close()
    second = await gateway()
    assert await refusal(second, token) == "token has been revoked"
