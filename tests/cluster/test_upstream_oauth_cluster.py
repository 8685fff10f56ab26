"""OAuth to an upstream under gunicorn with 2 workers, against a real authorization server
(oidc-provider): each worker fetches one token for all its calls, and when the upstream
stops accepting the tokens every worker fetches a fresh one once and its calls go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.backends import test_upstream_oauth
from tests.backends.test_upstream_oauth import Guarded, registration
from tests.cluster.deployment import ADMIN, USER, burst, fetch
from tests.support import oidc
from tests.support.gunicorn_process import StartGunicorn, gunicorn_env
from tests.support.oidc import CLIENTS

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

# The fixtures of the in-process tests, for a gateway under gunicorn.
oidc_provider_modules = oidc.oidc_provider_modules
authorization_server = oidc.authorization_server
guarded = test_upstream_oauth.guarded

WORKERS = 2
CALLS = 24


async def calls(base_url: str) -> list[str]:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "secured__whoami"},
    }
    replies = await burst(fetch("POST", f"{base_url}/rpc", message, USER) for _ in range(CALLS))
    answers = []
    for reply in replies:
        assert reply.status == 200 and "result" in reply.body, reply
        answers.append(orjson.loads(reply.body["result"]["content"][0]["text"])["client_id"])
    return answers


async def test_every_worker_holds_one_token_and_renews_it_once_when_refused(
    gunicorn: StartGunicorn, guarded: Guarded, tmp_path: Path
) -> None:
    env = gunicorn_env(f"sqlite:///{tmp_path / 'gateway.db'}")
    gateway = await asyncio.to_thread(gunicorn, env, WORKERS)
    created = await fetch("POST", f"{gateway.url}/upstreams", registration(guarded), ADMIN)
    assert created.status == 201, created
    discovered = len(guarded.seen)

    assert set(await calls(gateway.url)) == {CLIENTS["RS256"].client_id}
    tokens = set(guarded.seen[discovered:])
    assert 1 <= len(tokens) <= WORKERS  # one per worker, not one per call

    guarded.revoked.update(guarded.seen)
    assert set(await calls(gateway.url)) == {CLIENTS["RS256"].client_id}
    assert 1 <= len(guarded.refused) <= CALLS  # each refused call was retried once
    fresh = {jti for jti in guarded.seen if jti not in guarded.revoked}
    assert 1 <= len(fresh) <= WORKERS
