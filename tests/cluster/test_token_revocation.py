"""A token revoked through one instance is refused by every worker of every instance within
a second: two instances of 2 workers sharing PostgreSQL and Redis.

The store poll is set to a minute, so only the Redis message can explain that the other
workers refuse the token that soon, although each had verified and cached it before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import jwt
import pytest
import redis

from gateway_plugins.jwt_revocations import REVOCATIONS_CHANNEL
from gateway_plugins.jwt_tokens import create_token
from tests.cluster.deployment import (
    ADMIN,
    Deployment,
    Reply,
    deployed,
    fetch,
    list_everywhere,
    redis_env,
    wait_until,
)
from tests.conftest import TEST_SECRET, fresh_schema

pytestmark = pytest.mark.timeout(300)

WORKERS = 2
SECOND = 1.0


@pytest.fixture(scope="module")
def deployment(
    postgres_base_url: str, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, dict[str, str]]]:
    with fresh_schema(postgres_base_url) as database_url:
        env = redis_env(database_url, redis_base_url)
        with deployed(env, tmp_path_factory.mktemp("revocation"), 2, WORKERS) as running:
            yield running, env


def revocation_listeners(env: dict[str, str]) -> int:
    channel = f"{env['CACHE_PREFIX']}:{REVOCATIONS_CHANNEL}"
    client = redis.Redis.from_url(env["REDIS_URL"], socket_connect_timeout=2)
    try:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
    finally:
        client.close()


async def everywhere(deployment: Deployment, token: str) -> list[Reply]:
    return await list_everywhere(deployment, {"Authorization": f"Bearer {token}"})


async def test_a_token_revoked_on_one_instance_is_refused_by_every_worker_within_a_second(
    deployment: tuple[Deployment, dict[str, str]],
) -> None:
    running, env = deployment

    async def all_listening() -> bool:
        count = await asyncio.to_thread(revocation_listeners, env)
        return count >= 2 * WORKERS

    await wait_until(all_listening, 10.0, "every worker listens for revocations")
    token = create_token(TEST_SECRET, "leaked", expires_minutes=10)
    assert {reply.status for reply in await everywhere(running, token)} == {200}

    revoked = await fetch("POST", f"{running.a.url}/tokens/revoke", {"token": token}, ADMIN)
    assert revoked.status == 200, revoked
    await asyncio.sleep(SECOND)
    replies = await everywhere(running, token)
    assert {reply.status for reply in replies} == {401}, [r.body for r in replies]
    assert {r.body["error"]["message"] for r in replies} == {"token has been revoked"}

    listed = await fetch("GET", f"{running.b.url}/tokens/revoked", headers=ADMIN)
    assert listed.status == 200
    jti = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])["jti"]
    assert [entry["jti"] for entry in listed.body["value"]] == [jti]
    other = create_token(TEST_SECRET, "leaked", expires_minutes=10)
    assert {reply.status for reply in await everywhere(running, other)} == {200}
