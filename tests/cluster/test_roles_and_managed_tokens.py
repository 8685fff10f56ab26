"""Roles and managed tokens across two instances of 2 workers sharing PostgreSQL and Redis:
a role written through one instance holds on every worker when the write returns, and a
managed token deleted through one instance is refused by every worker within a second.

The store poll is set to a minute, so only the change barrier (roles) and the Redis
message (revocations) can explain that the other workers follow that soon.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests.cluster import test_token_revocation
from tests.cluster.deployment import (
    ADMIN,
    Deployment,
    fetch,
    list_everywhere,
)
from tests.cluster.test_token_revocation import WORKERS, revocation_listeners
from tests.conftest import TEST_SECRET

pytestmark = [pytest.mark.timeout(300), pytest.mark.cluster]

# Two instances of two workers sharing a PostgreSQL schema and Redis, as the revocation
# test deploys them (one deployment per module).
deployment = test_token_revocation.deployment


def bearer(subject: str) -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": subject, "iat": now, "exp": now + 600}, TEST_SECRET)
    return {"Authorization": f"Bearer {token}"}


async def statuses(deployment: Deployment, headers: dict[str, str]) -> set[int]:
    return {reply.status for reply in await list_everywhere(deployment, headers)}


async def test_a_role_change_holds_on_every_worker_of_every_instance_when_it_returns(
    deployment: tuple[Deployment, dict[str, str]],
) -> None:
    running, _ = deployment
    dan = bearer("dan")
    assert await statuses(running, dan) == {200}  # no role anywhere: not limited
    others = {"name": "others", "match": {"scopes": ["other"]}, "servers": ["*"]}
    created = await fetch("POST", f"{running.a.url}/roles", others, ADMIN)
    assert created.status == 201, created
    assert await statuses(running, dan) == {403}  # roles exist, none applies to dan
    dans = {"name": "dans", "match": {"subjects": ["dan"]}, "servers": ["*"]}
    created = await fetch("POST", f"{running.b.url}/roles", dans, ADMIN)
    assert created.status == 201, created
    assert await statuses(running, dan) == {200}
    for name in ("dans", "others"):
        deleted = await fetch("DELETE", f"{running.a.url}/roles/{name}", headers=ADMIN)
        assert deleted.status == 204, deleted
    assert await statuses(running, bearer("erin")) == {200}
    listed = await fetch("GET", f"{running.b.url}/roles", headers=ADMIN)
    assert listed.body == {"roles": []}


async def test_a_managed_token_deleted_on_one_instance_is_refused_everywhere_within_a_second(
    deployment: tuple[Deployment, dict[str, str]],
) -> None:
    running, env = deployment
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(revocation_listeners, env) < 2 * WORKERS:
        assert time.monotonic() < deadline, "every worker listens for revocations"
        await asyncio.sleep(0.1)
    minted = await fetch("POST", f"{running.a.url}/tokens", {"name": "script"}, ADMIN)
    assert minted.status == 201, minted
    headers = {"Authorization": f"Bearer {minted.body['token']}"}
    assert await statuses(running, headers) == {200}
    listed = await fetch("GET", f"{running.b.url}/tokens", headers=ADMIN)
    assert [t["name"] for t in listed.body["tokens"]] == ["script"]
    assert "token" not in listed.body["tokens"][0]

    deleted = await fetch("DELETE", f"{running.a.url}/tokens/{minted.body['id']}", headers=ADMIN)
    assert deleted.status == 200, deleted
    await asyncio.sleep(1.0)
    replies = await list_everywhere(running, headers)
    assert {r.status for r in replies} == {401}, [r.body for r in replies]
    listed = await fetch("GET", f"{running.b.url}/tokens", headers=ADMIN)
    assert listed.body["tokens"][0]["revoked"] is True
