"""OAuth 2.0 Token Exchange (RFC 8693) to an upstream, against a real authorization server
(oidc-provider, whose token-exchange grant checks the subject token it signed) and an
upstream that verifies every bearer token it gets: each user reaches the upstream as
themselves (their `sub`, the gateway named in `act`), never with their own token; the
exchanged token is reused; a refused exchange and a caller without a token are clear
errors; and the registration needs per-client sessions. A REST API (openapi) that verifies
every token likewise sees each user as themselves, with no sessions at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web

from gateway.netguard import AddressPolicy
from gateway.upstream_oauth import Grant, TokenSource
from tests.auth.conftest import OAuthGateway, base_url
from tests.backends.conftest import served, serving_mcp
from tests.conftest import Client, bearer, rpc
from tests.support.oidc import CLIENTS, AuthorizationServer
from tests.transports.conftest import call, open_session

JSON = dict[str, Any]
CLIENT = CLIENTS["RS256"]
REFUSED = "mallory"
"""The subject whose tokens the authorization server will not exchange."""


@pytest.fixture
def authorization_server(
    oidc_provider_modules: Path, tmp_path: Path
) -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(oidc_provider_modules, tmp_path, refused_subjects=(REFUSED,))
    server.start()
    yield server
    server.stop()


@dataclass
class Verifying:
    """An upstream that verifies the bearer token of every request it gets."""

    server: AuthorizationServer
    url: str = ""
    seen: list[JSON] = field(default_factory=list)
    """The verified claims of each request, in order."""
    headers: list[str] = field(default_factory=list)
    """Every Authorization header received."""
    revoked: set[str] = field(default_factory=set)
    """The jtis of tokens it refuses with 401."""

    def verified(self, request: web.Request) -> JSON | web.Response:
        """The claims of the request's token, issued for this upstream; else a 401."""
        header = request.headers.get("Authorization", "")
        self.headers.append(header)
        try:
            claims = self.server.verified(header.removeprefix("Bearer "), self.url)
        except jwt.PyJWTError as exc:
            return web.json_response({"error": str(exc)}, status=401)
        if claims["jti"] in self.revoked:
            return web.json_response({"error": "token revoked"}, status=401)
        return claims


@dataclass
class Delegated(Verifying):
    """An MCP upstream (JSON replies) that answers `whoami` with the claims it verified;
    `seen` holds them with each request's JSON-RPC method."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(status=405)
        if request.method == "DELETE":
            return web.Response(status=200)
        claims = self.verified(request)
        if isinstance(claims, web.Response):
            return claims
        message = await request.json()
        self.seen.append({**claims, "method": message.get("method")})
        if "id" not in message:
            return web.Response(status=202)
        method = message["method"]
        headers = {}
        if method == "initialize":
            headers["Mcp-Session-Id"] = f"s{len(self.seen)}"
            result: JSON = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}, "resources": {}},
                "serverInfo": {"name": "delegated", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [{"name": "whoami", "inputSchema": {"type": "object"}}]}
        elif method == "resources/list":
            result = {"resources": [{"uri": "whoami://me", "name": "me"}]}
        elif method in {"tools/call", "resources/read"}:
            who = orjson.dumps({k: claims.get(k) for k in ("sub", "act", "client_id", "jti")})
            if method == "tools/call":
                result = {"content": [{"type": "text", "text": who.decode()}]}
            else:
                result = {"contents": [{"uri": "whoami://me", "text": who.decode()}]}
        else:
            result = {}
        return web.json_response(
            {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers=headers
        )

    def calls(self) -> list[JSON]:
        return [claims for claims in self.seen if claims["method"] == "tools/call"]


@pytest.fixture
async def delegated(authorization_server: AuthorizationServer) -> AsyncIterator[Delegated]:
    upstream = Delegated(authorization_server)
    async with serving_mcp(upstream.handle) as url:
        upstream.url = url
        yield upstream


def exchanging(server: AuthorizationServer, resource: str) -> JSON:
    """The `oauth` field of an upstream that exchanges its callers' tokens at `server` for
    tokens for `resource`."""
    return {
        "grant": "token_exchange",
        "token_url": f"{server.issuer}/token",
        "client_id": CLIENT.client_id,
        "client_secret": CLIENT.client_secret,
        "scopes": ["mcp"],
        "resource": resource,
    }


def registration(upstream: Delegated, **changes: Any) -> JSON:
    body: JSON = {
        "name": "delegated",
        "url": upstream.url,
        "session": "per-client",
        "oauth": exchanging(upstream.server, upstream.url),
    }
    return {**body, **changes}


@dataclass
class Setup:
    client: Client
    server: AuthorizationServer

    def token_of(self, subject: str) -> str:
        """An access token of the authorization server for `subject`, for the gateway."""
        return self.server.sign(self.server.claims(base_url(self.client), sub=subject))


@pytest.fixture
async def setup(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer, delegated: Delegated
) -> Setup:
    """A gateway (AUTH_TYPE=oauth) with the token-exchange upstream registered."""
    client = await oauth_gateway()
    admin = await authorization_server.client_credentials(base_url(client), ["mcp", "admin"])
    created = await client.post("/upstreams", json=registration(delegated), headers=bearer(admin))
    assert created.status == 201, await created.text()
    return Setup(client, authorization_server)


async def whoami(client: Client, headers: dict[str, str]) -> JSON:
    answer = await rpc(client, "tools/call", {"name": "delegated__whoami"}, headers=headers)
    result = answer["result"]
    assert not result.get("isError"), result
    found: JSON = orjson.loads(result["content"][0]["text"])
    return found


async def test_two_users_calling_one_tool_each_reach_the_upstream_as_themselves(
    setup: Setup, delegated: Delegated
) -> None:
    alice, bob = setup.token_of("alice"), setup.token_of("bob")
    seen_alice, seen_bob = await asyncio.gather(
        whoami(setup.client, bearer(alice)), whoami(setup.client, bearer(bob))
    )
    assert seen_alice["sub"] == "alice" and seen_bob["sub"] == "bob"
    for seen in (seen_alice, seen_bob):
        assert seen["act"] == {"sub": CLIENT.client_id}  # the gateway acts for them
        assert seen["client_id"] == CLIENT.client_id
    # Exchanged, never passed through: the upstream got none of the users' own tokens.
    assert not {f"Bearer {alice}", f"Bearer {bob}"} & set(delegated.headers)
    # Discovery at registration was the gateway's own traffic, under its client's token.
    assert delegated.seen[0]["sub"] == CLIENT.client_id and "act" not in delegated.seen[0]


async def test_a_users_exchanged_token_is_reused_and_exchanged_once_for_concurrent_calls(
    setup: Setup, delegated: Delegated
) -> None:
    carol = bearer(setup.token_of("carol"))
    first = await asyncio.gather(*(whoami(setup.client, carol) for _ in range(5)))
    later = await whoami(setup.client, carol)
    # Each exchange issues a token with a new jti: one jti means one exchange.
    assert {seen["jti"] for seen in [*first, later]} == {later["jti"]}
    assert {seen["sub"] for seen in delegated.calls()} == {"carol"}
    # Another token of the same user is another subject token: exchanged anew.
    again = await whoami(setup.client, bearer(setup.token_of("carol")))
    assert again["sub"] == "carol" and again["jti"] != later["jti"]


async def test_a_resource_read_reaches_the_upstream_as_the_caller(setup: Setup) -> None:
    erin = bearer(setup.token_of("erin"))
    answer = await rpc(setup.client, "resources/read", {"uri": "whoami://me"}, erin)
    assert orjson.loads(answer["result"]["contents"][0]["text"])["sub"] == "erin"


async def test_an_exchanged_token_the_upstream_refuses_is_exchanged_afresh_once(
    setup: Setup, delegated: Delegated
) -> None:
    frank = bearer(setup.token_of("frank"))
    first = await whoami(setup.client, frank)
    delegated.revoked.add(first["jti"])
    second = await whoami(setup.client, frank)
    assert second["sub"] == "frank" and second["jti"] != first["jti"]
    assert (await whoami(setup.client, frank))["jti"] == second["jti"]


async def test_a_workers_exchanged_tokens_are_bounded_the_least_recently_used_out_first(
    authorization_server: AuthorizationServer,
) -> None:
    server = authorization_server
    grant = Grant(
        f"{server.issuer}/token",
        CLIENT.client_id,
        CLIENT.client_secret,
        ("mcp",),
        resource="http://127.0.0.1:9/mcp",
        exchange=True,
    )
    source = TokenSource("bounded", grant, AddressPolicy(), exchanged_max=2)
    assert source.on_behalf is not None
    tokens = source.on_behalf
    subjects = [server.sign(server.claims("http://gateway", sub=f"u{n}")) for n in range(3)]
    try:
        first = [await tokens.header(subject) for subject in subjects[:2]]
        assert await tokens.header(subjects[0]) == first[0]  # u0 is now the most recent
        await tokens.header(subjects[2])  # past the bound: u1 goes
        assert len(tokens) == 2
        assert await tokens.header(subjects[0]) == first[0]
        assert await tokens.header(subjects[1]) != first[1]  # exchanged again
    finally:
        await source.close()


async def test_calls_in_a_client_session_reach_the_upstream_as_its_user(
    setup: Setup, delegated: Delegated
) -> None:
    dave = bearer(setup.token_of("dave"))
    session = await open_session(setup.client, headers=dave)
    for request_id in (1, 2):
        answer = await call(
            setup.client,
            session,
            "tools/call",
            {"name": "delegated__whoami"},
            request_id=request_id,
            headers=dave,
        )
        assert orjson.loads(answer["result"]["content"][0]["text"])["sub"] == "dave"
    initialised = [c for c in delegated.seen if c["method"] == "initialize" and c["sub"] == "dave"]
    assert len(initialised) == 1  # one upstream session for the client session


async def test_a_refused_exchange_is_a_clear_tool_error_without_token_or_secret(
    setup: Setup, delegated: Delegated
) -> None:
    token = setup.token_of(REFUSED)
    answer = await rpc(setup.client, "tools/call", {"name": "delegated__whoami"}, bearer(token))
    result = answer["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "refused the token exchange" in text and "invalid_grant" in text
    assert token not in text and CLIENT.client_secret not in text
    assert not [c for c in delegated.seen if c["sub"] == REFUSED]


async def test_a_caller_without_a_token_gets_an_error_naming_the_callers_identity(
    oauth_gateway: OAuthGateway, delegated: Delegated
) -> None:
    client = await oauth_gateway(auth_required=False)
    created = await client.post("/upstreams", json=registration(delegated))
    assert created.status == 201, await created.text()
    answer = await rpc(client, "tools/call", {"name": "delegated__whoami"})
    result = answer["result"]
    assert result["isError"] is True
    assert "needs the caller's identity" in result["content"][0]["text"]
    read = await rpc(client, "resources/read", {"uri": "whoami://me"})
    assert "needs the caller's identity" in read["error"]["message"]
    assert delegated.calls() == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"session": "shared"}, 'needs "session": "per-client"'),
        ({"oauth": {"grant": "password"}}, "'oauth.grant' must be one of"),
    ],
)
async def test_a_token_exchange_registration_needing_more_is_422_naming_it(
    oauth_gateway: OAuthGateway, delegated: Delegated, changes: JSON, reason: str
) -> None:
    client = await oauth_gateway(auth_required=False)
    body = registration(delegated, **changes)
    if "oauth" in changes:
        body["oauth"] = {**registration(delegated)["oauth"], **changes["oauth"]}
    response = await client.post("/upstreams", json=body)
    assert response.status == 422, await response.text()
    assert reason in (await response.json())["error"]["message"]


# --- a REST API (openapi), which holds no session ------------------------------------------

WHOAMI_SPEC: JSON = {
    "openapi": "3.0.3",
    "info": {"title": "Delegated API", "version": "1"},
    "paths": {
        "/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "The caller the API sees.",
                "responses": {"200": {"description": "the verified claims"}},
            }
        }
    },
}


@dataclass
class DelegatedApi(Verifying):
    """A REST API that answers `GET /whoami` with the claims it verified, and serves its
    own document to verified callers."""

    documents: list[JSON] = field(default_factory=list)
    """The verified claims of each fetch of the document."""

    async def whoami(self, request: web.Request) -> web.Response:
        claims = self.verified(request)
        if isinstance(claims, web.Response):
            return claims
        self.seen.append(claims)
        return web.json_response({k: claims.get(k) for k in ("sub", "act", "client_id", "jti")})

    async def document(self, request: web.Request) -> web.Response:
        claims = self.verified(request)
        if isinstance(claims, web.Response):
            return claims
        self.documents.append(claims)
        return web.json_response(WHOAMI_SPEC)

    def registration(self) -> JSON:
        return {
            "name": "api",
            "transport": "openapi",
            "spec": WHOAMI_SPEC,
            "base_url": self.url,
            "oauth": exchanging(self.server, self.url),
        }


@pytest.fixture
async def delegated_api(authorization_server: AuthorizationServer) -> AsyncIterator[DelegatedApi]:
    api = DelegatedApi(authorization_server)
    app = web.Application()
    app.router.add_get("/whoami", api.whoami)
    app.router.add_get("/openapi.json", api.document)
    async with served(app) as url:
        api.url = url
        yield api


@pytest.fixture
async def api_setup(
    oauth_gateway: OAuthGateway,
    authorization_server: AuthorizationServer,
    delegated_api: DelegatedApi,
) -> Setup:
    """A gateway (AUTH_TYPE=oauth) with the token-exchange REST API registered: no
    `session` given, and none needed."""
    client = await oauth_gateway()
    admin = await authorization_server.client_credentials(base_url(client), ["mcp", "admin"])
    body = delegated_api.registration()
    created = await client.post("/upstreams", json=body, headers=bearer(admin))
    assert created.status == 201, await created.text()
    return Setup(client, authorization_server)


async def api_whoami(client: Client, headers: dict[str, str]) -> JSON:
    answer = await rpc(client, "tools/call", {"name": "api__whoami"}, headers=headers)
    result = answer["result"]
    assert not result.get("isError"), result
    found: JSON = result["structuredContent"]
    return found


async def test_two_users_calling_a_rest_api_tool_each_reach_the_api_as_themselves(
    api_setup: Setup, delegated_api: DelegatedApi
) -> None:
    alice, bob = api_setup.token_of("alice"), api_setup.token_of("bob")
    seen_alice, seen_bob = await asyncio.gather(
        api_whoami(api_setup.client, bearer(alice)), api_whoami(api_setup.client, bearer(bob))
    )
    assert seen_alice["sub"] == "alice" and seen_bob["sub"] == "bob"
    for seen in (seen_alice, seen_bob):
        assert seen["act"] == {"sub": CLIENT.client_id}
    assert not {f"Bearer {alice}", f"Bearer {bob}"} & set(delegated_api.headers)
    # Each user's token was exchanged once and is reused.
    again = await api_whoami(api_setup.client, bearer(alice))
    assert again["jti"] == seen_alice["jti"]


async def test_the_rest_apis_document_is_fetched_as_the_gateway_and_calls_as_the_caller(
    oauth_gateway: OAuthGateway,
    authorization_server: AuthorizationServer,
    delegated_api: DelegatedApi,
) -> None:
    client = await oauth_gateway()
    admin = await authorization_server.client_credentials(base_url(client), ["mcp", "admin"])
    body = {**delegated_api.registration(), "url": f"{delegated_api.url}/openapi.json"}
    del body["spec"]
    created = await client.post("/upstreams", json=body, headers=bearer(admin))
    assert created.status == 201, await created.text()
    [fetched] = delegated_api.documents  # the gateway's own traffic: its client's token
    assert fetched["sub"] == CLIENT.client_id and "act" not in fetched
    setup = Setup(client, authorization_server)
    assert (await api_whoami(client, bearer(setup.token_of("heidi"))))["sub"] == "heidi"


async def test_an_exchanged_token_the_rest_api_refuses_is_exchanged_afresh_once(
    api_setup: Setup, delegated_api: DelegatedApi
) -> None:
    grace = bearer(api_setup.token_of("grace"))
    first = await api_whoami(api_setup.client, grace)
    delegated_api.revoked.add(first["jti"])
    second = await api_whoami(api_setup.client, grace)
    assert second["sub"] == "grace" and second["jti"] != first["jti"]


async def test_a_rest_api_caller_without_a_token_gets_an_error_naming_the_callers_identity(
    oauth_gateway: OAuthGateway, delegated_api: DelegatedApi
) -> None:
    client = await oauth_gateway(auth_required=False)
    created = await client.post("/upstreams", json=delegated_api.registration())
    assert created.status == 201, await created.text()
    answer = await rpc(client, "tools/call", {"name": "api__whoami"})
    result = answer["result"]
    assert result["isError"] is True
    assert "needs the caller's identity" in result["content"][0]["text"]
    assert delegated_api.seen == []
