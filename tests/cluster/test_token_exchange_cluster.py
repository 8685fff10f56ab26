"""Token exchange (RFC 8693) to an upstream on 2 instances of 2 gunicorn workers sharing
PostgreSQL and Redis, with AUTH_TYPE=oauth against a real authorization server
(oidc-provider) and an upstream that verifies every bearer token and reports its `sub` and
`act`: whichever worker of whichever instance serves a call, it reaches the upstream as the
calling user, exchanged by that worker, never with the user's own token; and an MCP client
session whose requests go to every worker keeps one upstream session, each of its calls
made as the session's user, and ended once, as that user, from the other instance.

Each worker is reached through a keep-alive connection of its own (found with `/version`),
so the test chooses which worker serves each request; users take turns on one connection,
so a worker serving one connection's requests must not carry one user's token over to the
next."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web

from tests.auth.test_token_exchange import CLIENT, Delegated, registration
from tests.backends.conftest import serving_mcp
from tests.cluster.deployment import (
    Instance,
    connection_per_worker,
    fetch,
    redis_env,
    wait_until,
)
from tests.conftest import bearer, free_port
from tests.support import oidc
from tests.support.gunicorn_process import start_together
from tests.support.mcp_session import open_session
from tests.support.oidc import AuthorizationServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

# The fixtures of the in-process tests, for gateways under gunicorn.
oidc_provider_modules = oidc.oidc_provider_modules
authorization_server = oidc.authorization_server

JSON = dict[str, Any]
AUDIENCE = "urn:aio-mcp-gateway:token-exchange-cluster-test"
WORKERS = 2
TOOL = "delegated__whoami"
VERSION = "2025-06-18"
USERS = ("alice", "bob")


@dataclass
class SessionRecording(Delegated):
    """`Delegated`, also noting in each verified request's claims the upstream session
    (`Mcp-Session-Id`) it was sent in, or for an `initialize` the one it opened."""

    ended: list[tuple[str | None, str | None]] = field(default_factory=list)
    """Each DELETE's session, and the `sub` of its token (None: no valid token)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            self.ended.append((request.headers.get("Mcp-Session-Id"), self.subject(request)))
        before = len(self.seen)
        response = await super().handle(request)
        # Nothing is awaited between the parent appending its entry and returning, so a
        # request it verified is the last one seen.
        if len(self.seen) > before:
            sent = request.headers.get("Mcp-Session-Id")
            self.seen[-1]["session"] = sent or response.headers.get("Mcp-Session-Id")
        return response

    def subject(self, request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = self.server.verified(token, self.url)
        except jwt.PyJWTError:
            return None
        return str(claims["sub"])


@pytest.fixture
async def delegated(
    authorization_server: AuthorizationServer,
) -> AsyncIterator[SessionRecording]:
    upstream = SessionRecording(authorization_server)
    async with serving_mcp(upstream.handle) as url:
        upstream.url = url
        yield upstream


@pytest.fixture
async def instances(
    authorization_server: AuthorizationServer,
    delegated: Delegated,
    postgres_url: str,
    redis_base_url: str,
    tmp_path: Path,
) -> AsyncIterator[list[Instance]]:
    """Two gateways of two workers each, the token-exchange upstream registered through
    the first."""
    env = redis_env(
        postgres_url,
        redis_base_url,
        AUTH_TYPE="oauth",
        OAUTH_ISSUER=authorization_server.issuer,
        OAUTH_AUDIENCE=AUDIENCE,
        OAUTH_REQUIRED_SCOPES="mcp",
        # A pinned connection must stay with its worker for the whole test.
        GUNICORN_KEEPALIVE="120",
    )
    running = [Instance(dict(env), free_port(), tmp_path, workers=WORKERS) for _ in "ab"]
    try:
        await asyncio.to_thread(start_together, *running)
        admin = await authorization_server.client_credentials(AUDIENCE, ["mcp", "admin"])
        created = await fetch(
            "POST", f"{running[0].url}/upstreams", registration(delegated), bearer(admin)
        )
        assert created.status == 201, created
        yield running
    finally:
        await asyncio.gather(*(asyncio.to_thread(instance.stop) for instance in running))


def tokens_of(server: AuthorizationServer) -> dict[str, str]:
    """An access token of the authorization server for each user, for the gateways."""
    return {user: server.sign(server.claims(AUDIENCE, sub=user)) for user in USERS}


# --- one connection per worker -----------------------------------------------------------------


def one_connection_per_worker(
    instances: list[Instance], token: str
) -> AbstractAsyncContextManager[list[aiohttp.ClientSession]]:
    """A keep-alive connection to each worker of each instance, each serving the tool
    (registered through one instance, it reaches the others' workers through Redis)."""
    urls = [instance.url for instance in instances]
    serving = functools.partial(serves_tool, token=token)
    return connection_per_worker(urls, WORKERS, serving, f"{TOOL} served")


async def serves_tool(http: aiohttp.ClientSession, token: str) -> bool:
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with http.post("/rpc", json=listing, headers=bearer(token)) as response:
        assert response.status == 200, await response.text()
        tools = (await response.json())["result"]["tools"]
    return TOOL in {tool["name"] for tool in tools}


def halves(turns: list[tuple[str, JSON]]) -> tuple[list[tuple[str, JSON]], ...]:
    middle = len(turns) // 2
    return turns[:middle], turns[middle:]


def seen_by_upstream(result: JSON) -> JSON:
    """The claims the upstream reports having verified, from a whoami call's result."""
    assert not result.get("isError"), result
    seen: JSON = orjson.loads(result["content"][0]["text"])
    return seen


async def rpc_whoami(http: aiohttp.ClientSession, token: str) -> JSON:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": TOOL}}
    async with http.post("/rpc", json=message, headers=bearer(token)) as response:
        assert response.status == 200, await response.text()
        return seen_by_upstream((await response.json())["result"])


def mcp_headers(token: str, session: str | None = None) -> dict[str, str]:
    sent = {
        **bearer(token),
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
    }
    if session is not None:
        sent["Mcp-Session-Id"] = session
    return sent


async def mcp_whoami(http: aiohttp.ClientSession, token: str, session: str) -> JSON:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": TOOL}}
    async with http.post("/mcp", json=message, headers=mcp_headers(token, session)) as response:
        assert response.status == 200, await response.text()
        return seen_by_upstream((await response.json())["result"])


def upstream_session(upstream: SessionRecording, user: str) -> str:
    """The one upstream session opened for `user`."""
    opened = [c for c in upstream.seen if c["method"] == "initialize" and c["sub"] == user]
    assert len(opened) == 1, opened  # one upstream session for the client session
    return str(opened[0]["session"])


def assert_as_user(seen: JSON, user: str) -> None:
    assert seen["sub"] == user, seen
    assert seen["act"] == {"sub": CLIENT.client_id}, seen  # the gateway acts for them


# --- the tests -----------------------------------------------------------------------------------


async def test_every_worker_of_both_instances_calls_the_upstream_as_each_calling_user(
    instances: list[Instance], authorization_server: AuthorizationServer, delegated: Delegated
) -> None:
    tokens = tokens_of(authorization_server)
    async with one_connection_per_worker(instances, tokens["alice"]) as workers:
        assert len(workers) == 2 * WORKERS

        async def turns(http: aiohttp.ClientSession) -> list[tuple[str, JSON]]:
            # alice and bob in turn on one connection, twice over.
            return [
                (user, await rpc_whoami(http, tokens[user])) for _ in range(2) for user in USERS
            ]

        answers = await asyncio.gather(*(turns(http) for http in workers))
    for per_worker in answers:
        for user, seen in per_worker:
            assert_as_user(seen, user)
        # The worker exchanged each user's token once and reused it the second time.
        first, second = ({user: seen["jti"] for user, seen in turn} for turn in halves(per_worker))
        assert first == second and len(set(first.values())) == len(USERS)
    # Each worker exchanged for itself: a token of its own per user, so all four served.
    for user in USERS:
        jtis = {seen["jti"] for per_worker in answers for who, seen in per_worker if who == user}
        assert len(jtis) == 2 * WORKERS, jtis
    # Exchanged, never passed through: the upstream got none of the users' own tokens.
    assert not {f"Bearer {token}" for token in tokens.values()} & set(delegated.headers)
    calls = delegated.calls()
    assert {call["sub"] for call in calls} == set(USERS)
    assert len(calls) == 2 * len(USERS) * 2 * WORKERS


async def test_a_client_session_on_every_worker_keeps_one_upstream_session_as_its_user(
    instances: list[Instance],
    authorization_server: AuthorizationServer,
    delegated: SessionRecording,
) -> None:
    tokens = tokens_of(authorization_server)
    async with one_connection_per_worker(instances, tokens["alice"]) as workers:
        # Each session opens on a different instance, then calls through every worker.
        sessions = {
            "alice": await open_session(workers[0], VERSION, "/mcp", mcp_headers(tokens["alice"])),
            "bob": await open_session(workers[-1], VERSION, "/mcp", mcp_headers(tokens["bob"])),
        }
        answers: list[tuple[str, JSON]] = []
        for http in [*workers, *reversed(workers)]:
            for user in USERS:
                answers.append((user, await mcp_whoami(http, tokens[user], sessions[user])))
        upstream = {user: upstream_session(delegated, user) for user in USERS}
        # alice ends her session on the instance she did not open it on.
        ending = mcp_headers(tokens["alice"], sessions["alice"])
        async with workers[-1].delete("/mcp", headers=ending) as response:
            assert response.status == 204, await response.text()

        async def ended() -> bool:
            return any(session == upstream["alice"] for session, _ in delegated.ended)

        await wait_until(ended, 10.0, "alice's upstream session ended")
        await asyncio.sleep(0.5)  # time for a second DELETE, if one were coming
    for user, seen in answers:
        assert_as_user(seen, user)
    assert not {f"Bearer {token}" for token in tokens.values()} & set(delegated.headers)
    for user in USERS:
        calls = [c for c in delegated.calls() if c["sub"] == user]
        assert len(calls) == 2 * 2 * WORKERS
        assert {call["session"] for call in calls} == {upstream[user]}
        # Every worker sent the session's calls with a token it exchanged itself.
        assert len({call["jti"] for call in calls}) == 2 * WORKERS
    # Ended once, as alice; bob's goes on.
    ends = [end for end in delegated.ended if end[0] in upstream.values()]
    assert ends == [(upstream["alice"], "alice")]
