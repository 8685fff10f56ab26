"""OAuth client credentials to an upstream, against a real authorization server
(oidc-provider) and an upstream that checks every bearer token it gets (signature, audience,
expiry): the token is fetched, reused, renewed before it expires, fetched afresh once when
the upstream answers 401, and the client secret is kept encrypted and never shown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web

from gateway.config.document import ConfigError, parse
from gateway.config.export import export
from gateway.keys import PLUGINS, REGISTRY, STORE
from gateway_plugins.backend_mcp_http import McpHttpBackend
from tests.backends.conftest import served, serving_mcp
from tests.config.conftest import applier_of
from tests.conftest import Client, GatewayFactory, error_message, rpc
from tests.support import oidc
from tests.support.oidc import CLIENTS, AuthorizationServer
from tests.transports.conftest import call, eventually, open_session

oidc_provider_modules = oidc.oidc_provider_modules

JSON = dict[str, Any]
TOKEN_TTL = 8
"""Seconds the authorization server's access tokens live here."""


@pytest.fixture
def authorization_server(
    oidc_provider_modules: Path, tmp_path: Path
) -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(oidc_provider_modules, tmp_path, access_token_ttl=TOKEN_TTL)
    server.start()
    yield server
    server.stop()


@dataclass
class Guarded:
    """An MCP upstream (JSON replies) that checks the bearer token of every request."""

    server: AuthorizationServer
    url: str = ""
    seen: list[str] = field(default_factory=list)
    """The jti of each token, in the order requests came."""
    refused: list[str] = field(default_factory=list)
    """Why each refused request was refused."""
    revoked: set[str] = field(default_factory=set)
    ended: list[str] = field(default_factory=list)
    """Each DELETE of a session: the jti of its token, or why it was refused."""

    def check(self, request: web.Request) -> JSON:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise ValueError("no bearer token")
        claims = self.server.verified(header.removeprefix("Bearer "), self.url)
        if claims["jti"] in self.revoked:
            raise ValueError("token revoked")
        return claims

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(status=405)
        if request.method == "DELETE":
            try:
                self.ended.append(self.check(request)["jti"])
            except (ValueError, jwt.PyJWTError) as exc:
                self.ended.append(f"refused: {exc}")
                return self.refuse(exc)
            return web.Response(status=200)
        try:
            claims = self.check(request)
        except (ValueError, jwt.PyJWTError) as exc:
            return self.refuse(exc)
        self.seen.append(claims["jti"])
        message = await request.json()
        reply = self.answer(message, claims)
        if reply is None:
            return web.Response(status=202)
        headers = {"Mcp-Session-Id": "s1"} if message["method"] == "initialize" else {}
        return web.json_response(reply, headers=headers)

    def answer(self, message: JSON, claims: JSON) -> JSON | None:
        if "id" not in message:
            return None
        method = message["method"]
        if method == "initialize":
            result: JSON = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "guarded", "version": "1"},
            }
        elif method == "tools/list":
            tool = {"name": "whoami", "inputSchema": {"type": "object"}}
            result = {"tools": [tool]}
        elif method == "tools/call":
            text = orjson.dumps({"client_id": claims.get("client_id"), "sub": claims.get("sub")})
            result = {"content": [{"type": "text", "text": text.decode()}]}
        elif method == "ping":
            result = {}
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            return {"jsonrpc": "2.0", "id": message["id"], "error": error}
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}

    def refuse(self, exc: Exception) -> web.Response:
        self.refused.append(str(exc))
        return web.json_response(
            {"error": str(exc)},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


@dataclass
class GuardedSse(Guarded):
    """The same upstream on the 2024-11-05 HTTP+SSE transport: the stream and every POST
    need a valid bearer token."""

    queues: dict[str, asyncio.Queue[JSON]] = field(default_factory=dict)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        try:
            self.check(request)
        except (ValueError, jwt.PyJWTError) as exc:
            return self.refuse(exc)
        session = f"s{len(self.queues)}"
        queue: asyncio.Queue[JSON] = asyncio.Queue()
        self.queues[session] = queue
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"event: endpoint\ndata: /messages?session_id={session}\n\n".encode())
        while True:
            message = await queue.get()
            await response.write(b"event: message\ndata: " + orjson.dumps(message) + b"\n\n")

    async def post(self, request: web.Request) -> web.Response:
        try:
            claims = self.check(request)
        except (ValueError, jwt.PyJWTError) as exc:
            return self.refuse(exc)
        self.seen.append(claims["jti"])
        reply = self.answer(await request.json(), claims)
        if reply is not None:
            await self.queues[request.query["session_id"]].put(reply)
        return web.Response(status=202)


@pytest.fixture
async def guarded(authorization_server: AuthorizationServer) -> AsyncIterator[Guarded]:
    upstream = Guarded(authorization_server)
    async with serving_mcp(upstream.handle) as url:
        upstream.url = url
        yield upstream


def registration(guarded: Guarded, secret: str | None = None) -> JSON:
    client = CLIENTS["RS256"]
    return {
        "name": "secured",
        "url": guarded.url,
        "oauth": {
            "token_url": f"{guarded.server.issuer}/token",
            "client_id": client.client_id,
            "client_secret": secret or client.client_secret,
            "scopes": ["mcp"],
            "resource": guarded.url,
        },
    }


async def gateway_serving(
    gateway: GatewayFactory, body: JSON, admin_headers: dict[str, str]
) -> Client:
    """A gateway with the upstream `body` registered."""
    client = await gateway()
    created = await client.post("/upstreams", json=body, headers=admin_headers)
    assert created.status == 201, await created.text()
    return client


async def refused_registration(
    client: Client, body: JSON, admin_headers: dict[str, str], status: int
) -> str:
    """The error message of registering `body`, refused with `status`."""
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert response.status == status, await response.text()
    message: str = (await response.json())["error"]["message"]
    return message


@pytest.fixture
async def gateway_with_upstream(
    gateway: GatewayFactory, guarded: Guarded, admin_headers: dict[str, str]
) -> Client:
    return await gateway_serving(gateway, registration(guarded), admin_headers)


async def whoami(client: Client, headers: dict[str, str]) -> JSON:
    answer = await rpc(client, "tools/call", {"name": "secured__whoami"}, headers=headers)
    assert "result" in answer, answer
    text: JSON = orjson.loads(answer["result"]["content"][0]["text"])
    return text


async def assert_a_401_gets_one_retry_with_a_fresh_token(
    client: Client, upstream: Guarded, user_headers: dict[str, str]
) -> None:
    assert (await whoami(client, user_headers))["client_id"] == CLIENTS["RS256"].client_id
    first = upstream.seen[-1]
    upstream.revoked.add(first)
    assert (await whoami(client, user_headers))["client_id"]
    assert upstream.refused == ["token revoked"]
    assert upstream.seen[-1] != first


def backend(client: Client) -> McpHttpBackend:
    found = client.app[REGISTRY].backends["secured"]
    assert isinstance(found, McpHttpBackend)
    return found


async def test_the_upstream_gets_the_gateways_client_token_never_the_callers(
    gateway_with_upstream: Client, guarded: Guarded, user_headers: dict[str, str]
) -> None:
    answer = await whoami(gateway_with_upstream, user_headers)
    assert answer["client_id"] == CLIENTS["RS256"].client_id
    assert guarded.refused == []


async def test_one_token_serves_many_calls_fetched_once_for_concurrent_callers(
    gateway: GatewayFactory,
    guarded: Guarded,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    client = await gateway_serving(gateway, registration(guarded), admin_headers)
    # Registration discovered the tools with a backend (and token) of its own.
    start = len(guarded.seen)
    await asyncio.gather(*(whoami(client, user_headers) for _ in range(20)))
    assert len(guarded.seen) - start >= 20
    assert len(set(guarded.seen[start:])) == 1
    assert guarded.refused == []


async def test_the_token_is_renewed_before_it_expires(
    gateway_with_upstream: Client, guarded: Guarded, user_headers: dict[str, str]
) -> None:
    ends = time.monotonic() + TOKEN_TTL * 2
    while time.monotonic() < ends:
        await whoami(gateway_with_upstream, user_headers)
        await asyncio.sleep(0.25)
    assert len(set(guarded.seen)) >= 2
    assert guarded.refused == []  # never sent an expired token


async def test_a_401_gets_one_retry_with_a_fresh_token(
    gateway_with_upstream: Client, guarded: Guarded, user_headers: dict[str, str]
) -> None:
    await assert_a_401_gets_one_retry_with_a_fresh_token(
        gateway_with_upstream, guarded, user_headers
    )


async def test_the_client_secret_is_encrypted_at_rest_and_never_shown(
    gateway_with_upstream: Client, admin_headers: dict[str, str], sqlite_url: str
) -> None:
    secret = CLIENTS["RS256"].client_secret
    response = await gateway_with_upstream.get("/upstreams/secured", headers=admin_headers)
    text = await response.text()
    assert secret not in text
    shown = orjson.loads(text)
    assert shown["options"]["oauth"]["client_secret"] == "(encrypted, not shown)"
    assert shown["headers"] == []
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    for path in database.parent.glob(f"{database.name}*"):
        assert secret.encode() not in path.read_bytes()


async def test_refused_client_credentials_fail_registration_naming_the_token_endpoint(
    gateway: GatewayFactory, guarded: Guarded, admin_headers: dict[str, str]
) -> None:
    body = registration(guarded, secret="wrong")
    message = await refused_registration(await gateway(), body, admin_headers, 502)
    assert "OAuth token endpoint" in message and "refused the client credentials" in message


async def test_an_unreachable_token_endpoint_is_a_clear_error(
    gateway: GatewayFactory, guarded: Guarded, admin_headers: dict[str, str]
) -> None:
    body = registration(guarded)
    body["oauth"]["token_url"] = "http://127.0.0.1:9/token"
    message = await refused_registration(await gateway(), body, admin_headers, 502)
    assert "could not be reached" in message


@pytest.mark.parametrize(
    ("oauth", "reason"),
    [
        ({"client_id": "a", "client_secret": "b"}, "token_url"),
        ({"token_url": "ftp://x", "client_id": "a", "client_secret": "b"}, "token_url"),
        ({"token_url": "http://x/t", "client_secret": "b"}, "client_id"),
        ({"token_url": "http://x/t", "client_id": "a"}, "client_secret"),
        ({"token_url": "http://x/t", "client_id": "a", "client_secret": ""}, "client_secret"),
        ({"token_url": "http://x/t", "client_id": "a", "client_secret": "b", "x": 1}, "unknown"),
        (
            {"token_url": "http://x/t", "client_id": "a", "client_secret": "b", "scopes": [1]},
            "scopes",
        ),
    ],
)
async def test_a_bad_oauth_field_is_422_naming_it(
    gateway: GatewayFactory, admin_headers: dict[str, str], oauth: JSON, reason: str
) -> None:
    body = {"name": "bad", "url": "http://127.0.0.1:9/mcp", "oauth": oauth}
    assert reason in await refused_registration(await gateway(), body, admin_headers, 422)


async def test_a_patch_without_the_secret_keeps_it_and_one_dropping_oauth_is_refused(
    gateway_with_upstream: Client,
    guarded: Guarded,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    oauth = {k: v for k, v in registration(guarded)["oauth"].items() if k != "client_secret"}
    patched = await gateway_with_upstream.patch(
        "/upstreams/secured", json={"oauth": oauth}, headers=admin_headers
    )
    assert patched.status == 200, await patched.text()
    assert (await whoami(gateway_with_upstream, user_headers))["client_id"]
    # Without oauth the upstream refuses discovery, so the change is not made.
    removed = await gateway_with_upstream.patch(
        "/upstreams/secured", json={"oauth": None}, headers=admin_headers
    )
    assert "HTTP 401" in await error_message(removed, 502)
    assert guarded.refused[-1] == "no bearer token"
    assert (await whoami(gateway_with_upstream, user_headers))["client_id"]


def oauth_config(guarded: Guarded, secret: str) -> str:
    return f"""\
upstreams:
  - name: secured
    url: {guarded.url}
    oauth:
      token_url: {guarded.server.issuer}/token
      client_id: {CLIENTS["RS256"].client_id}
      client_secret: {secret}
      scopes: [mcp]
      resource: {guarded.url}
"""


async def test_a_configuration_file_declares_oauth_with_a_secret_reference_and_exports_one(
    gateway: GatewayFactory, guarded: Guarded, user_headers: dict[str, str]
) -> None:
    client = await gateway()
    app = client.server.app
    applier = applier_of(client)
    secret = CLIENTS["RS256"].client_secret
    with pytest.raises(ConfigError, match=r"oauth\.client_secret is written in clear"):
        await applier.apply(parse(oauth_config(guarded, secret), "gateway.yaml", {}))
    environ = {"CRM_SECRET": secret}
    desired = parse(oauth_config(guarded, "${CRM_SECRET}"), "gateway.yaml", environ)
    plan = await applier.apply(desired)
    assert [c.describe().split(":")[0] for c in plan.changes] == ["+ upstream secured"]
    assert (await whoami(client, user_headers))["client_id"] == CLIENTS["RS256"].client_id
    again = parse(oauth_config(guarded, "${CRM_SECRET}"), "gateway.yaml", environ)
    assert (await applier.apply(again)).changes == ()
    text = await export(app[STORE], app[PLUGINS])
    assert secret not in text and "oauth:client_secret" not in text
    assert "client_secret: ${UPSTREAM_SECURED_OAUTH_CLIENT_SECRET}" in text
    back = parse(text, "exported.yaml", {"UPSTREAM_SECURED_OAUTH_CLIENT_SECRET": secret})
    assert (await applier.apply(back, dry_run=True)).changes == ()


@pytest.fixture
async def guarded_sse(authorization_server: AuthorizationServer) -> AsyncIterator[GuardedSse]:
    upstream = GuardedSse(authorization_server)
    app = web.Application()
    app.router.add_get("/sse", upstream.stream)
    app.router.add_post("/messages", upstream.post)
    async with served(app) as base:
        upstream.url = f"{base}/sse"
        yield upstream


async def test_an_sse_upstream_gets_tokens_on_its_stream_and_posts_with_a_401_retry(
    gateway: GatewayFactory,
    guarded_sse: GuardedSse,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    body = {**registration(guarded_sse), "transport": "sse"}
    client = await gateway_serving(gateway, body, admin_headers)
    await assert_a_401_gets_one_retry_with_a_fresh_token(client, guarded_sse, user_headers)


@pytest.fixture
async def guarded_api(authorization_server: AuthorizationServer) -> AsyncIterator[Guarded]:
    """A REST API whose one operation, GET /whoami, checks the bearer token."""
    upstream = Guarded(authorization_server)

    async def whoami(request: web.Request) -> web.Response:
        try:
            claims = upstream.check(request)
        except (ValueError, jwt.PyJWTError) as exc:
            return upstream.refuse(exc)
        upstream.seen.append(claims["jti"])
        return web.json_response({"client_id": claims.get("client_id"), "sub": claims["sub"]})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    async with served(app) as base:
        upstream.url = base
        yield upstream


async def test_an_openapi_upstream_gets_tokens_with_a_401_retry(
    gateway: GatewayFactory,
    guarded_api: Guarded,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "who", "version": "1"},
        "paths": {
            "/whoami": {
                "get": {"operationId": "whoami", "responses": {"200": {"description": "ok"}}}
            }
        },
    }
    body = {
        **registration(guarded_api),
        "transport": "openapi",
        "spec": spec,
        "base_url": guarded_api.url,
    }
    del body["url"]
    client = await gateway_serving(gateway, body, admin_headers)
    await assert_a_401_gets_one_retry_with_a_fresh_token(client, guarded_api, user_headers)


async def test_per_client_sessions_share_their_workers_token(
    gateway: GatewayFactory,
    guarded: Guarded,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    body = {**registration(guarded), "session": "per-client"}
    client = await gateway_serving(gateway, body, admin_headers)
    discovered = len(guarded.seen)
    sessions = [await open_session(client, headers=user_headers) for _ in range(3)]
    for session in sessions:
        answer = await call(
            client,
            session,
            "tools/call",
            {"name": "secured__whoami", "arguments": {}},
            headers=user_headers,
        )
        assert "result" in answer and not answer["result"].get("isError"), answer
    # Each client session has an upstream session of its own (an initialize each)...
    assert len(guarded.seen) - discovered >= 6
    # ...and all of them use the one token of the worker.
    assert len(set(guarded.seen[discovered:])) == 1


async def test_ending_a_per_client_session_after_its_token_expired_sends_a_current_token(
    gateway: GatewayFactory,
    guarded: Guarded,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> None:
    body = {**registration(guarded), "session": "per-client"}
    client = await gateway_serving(gateway, body, admin_headers)
    session = await open_session(client, headers=user_headers)
    params = {"name": "secured__whoami", "arguments": {}}
    answer = await call(client, session, "tools/call", params, headers=user_headers)
    assert "result" in answer and not answer["result"].get("isError"), answer
    used = guarded.seen[-1]
    await asyncio.sleep(TOKEN_TTL + 1)  # the token the session last sent has expired
    headers = {**user_headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    before = len(guarded.ended)  # discovery's own session ended long ago
    ended = await client.delete("/mcp", headers=headers)
    assert ended.status == 204
    await eventually(lambda: len(guarded.ended) > before, what="the upstream session's DELETE")
    assert len(guarded.ended) == before + 1, guarded.ended
    assert not guarded.ended[-1].startswith("refused"), guarded.ended[-1]
    assert guarded.ended[-1] != used
