"""AUTH_TYPE=oauth on 2 instances of 2 gunicorn workers sharing PostgreSQL and Redis, against
a real authorization server (oidc-provider): every worker fetches the issuer's keys itself
and accepts its tokens, refuses bad ones with 401 and a challenge naming the metadata,
keeps accepting tokens once the authorization server is down, and refuses a token revoked
through one instance everywhere within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.cluster.deployment import Instance, Reply, burst, fetch, redis_env, worker_views
from tests.conftest import free_port, fresh_schema
from tests.support import oidc
from tests.support.gunicorn_process import start_together
from tests.support.oidc import AuthorizationServer, SigningKey

pytestmark = pytest.mark.timeout(300)

authorization_server = oidc.authorization_server
oidc_provider_modules = oidc.oidc_provider_modules

AUDIENCE = "urn:aio-mcp-gateway:cluster-test"
WORKERS = 2
SPREAD = 8
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


@pytest.fixture
def instances(
    authorization_server: AuthorizationServer,
    postgres_base_url: str,
    redis_base_url: str,
    tmp_path: Path,
) -> Iterator[list[Instance]]:
    with fresh_schema(postgres_base_url) as database_url:
        env = redis_env(
            database_url,
            redis_base_url,
            AUTH_TYPE="oauth",
            OAUTH_ISSUER=authorization_server.issuer,
            OAUTH_AUDIENCE=AUDIENCE,
            OAUTH_REQUIRED_SCOPES="mcp",
            OAUTH_JWKS_MIN_REFRESH="0.5",
        )
        running = [Instance(dict(env), free_port(), tmp_path, workers=WORKERS) for _ in "ab"]
        start_together(*running)
        try:
            yield running
        finally:
            for instance in running:
                instance.stop()


async def everywhere(instances: list[Instance], token: str) -> list[Reply]:
    headers = {"Authorization": f"Bearer {token}"}
    return await burst(
        fetch("POST", f"{instance.url}/rpc", LIST, headers)
        for instance in instances
        for _ in range(SPREAD)
    )


async def test_every_worker_of_every_instance_checks_oauth_tokens_alone(
    instances: list[Instance], authorization_server: AuthorizationServer
) -> None:
    for instance in instances:
        assert len(await worker_views(instance.url, WORKERS)) == WORKERS
    issued = await authorization_server.client_credentials(AUDIENCE, ["mcp"], "EdDSA")
    assert {reply.status for reply in await everywhere(instances, issued)} == {200}

    stranger = SigningKey.new("RS256")
    forged = jwt.encode(
        authorization_server.claims(AUDIENCE), stranger.private, "RS256", {"kid": stranger.kid}
    )
    replies = await everywhere(instances, forged)
    assert {reply.status for reply in replies} == {401}
    for reply, instance in zip(replies, [i for i in instances for _ in range(SPREAD)], strict=True):
        challenge = reply.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in challenge
        assert f'resource_metadata="{instance.url}/.well-known/oauth-protected-resource"' in (
            challenge
        )
    document = await fetch("GET", f"{instances[1].url}/.well-known/oauth-protected-resource")
    assert document.body["authorization_servers"] == [authorization_server.issuer]

    # The authorization server goes away: tokens signed with its keys still pass everywhere.
    authorization_server.stop()
    later = authorization_server.sign(authorization_server.claims(AUDIENCE), "ES256")
    assert {reply.status for reply in await everywhere(instances, later)} == {200}


async def test_a_token_revoked_on_one_instance_is_refused_by_every_worker_within_a_second(
    instances: list[Instance], authorization_server: AuthorizationServer
) -> None:
    admin = await authorization_server.client_credentials(AUDIENCE, ["mcp", "admin"])
    leaked = await authorization_server.client_credentials(AUDIENCE, ["mcp"])
    assert {reply.status for reply in await everywhere(instances, leaked)} == {200}
    revoked = await fetch(
        "POST",
        f"{instances[0].url}/tokens/revoke",
        {"token": leaked},
        {"Authorization": f"Bearer {admin}"},
    )
    assert revoked.status == 200, revoked
    started = time.monotonic()
    while True:
        replies = await everywhere(instances, leaked)
        if {reply.status for reply in replies} == {401}:
            break
        assert time.monotonic() - started < 1.0, [r.status for r in replies]
        await asyncio.sleep(0.05)
    assert {r.body["error"]["message"] for r in replies} == {"token has been revoked"}
