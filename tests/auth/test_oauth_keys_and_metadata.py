"""The issuer's keys as the `oauth` authenticator fetches them (from a JWKS server of our
own that can misbehave), the protected-resource metadata, and what an upstream sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.settings import Settings, SettingsError
from gateway_plugins.auth_oauth import create_oauth_authenticator
from gateway_plugins.oauth.jwks import metadata_urls
from tests.auth.conftest import OAuthGateway, RecordingUpstream, base_url
from tests.conftest import Client
from tests.support.oidc import AuthorizationServer, SigningKey

ISSUER = "http://127.0.0.1:9"
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


class JwksServer:
    """Serves `body` at /jwks and counts the fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.fetches = 0
        self.delay = 0.0
        self.body = b""
        self.publish(*keys)

    def publish(self, *keys: SigningKey) -> None:
        self.body = orjson.dumps({"keys": [key.public_jwk() for key in keys]})

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        return web.Response(body=self.body, content_type="application/json")


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[JwksServer, str]]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", server.jwks)
    running = TestServer(app, host="127.0.0.1")
    await running.start_server()
    yield server, f"http://127.0.0.1:{running.port}/jwks"
    await running.close()


def token(key: SigningKey, audience: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "s", "aud": audience, "iat": now, "exp": now + 300}
    payload |= {"scope": "mcp", **claims}
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid})


async def status(client: Client, bearer: str) -> tuple[int, str]:
    response = await client.post("/rpc", json=LIST, headers={"Authorization": f"Bearer {bearer}"})
    return response.status, (await response.json()).get("error", {}).get("message", "")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"keys": "nope"}',
        b'{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "x"}]}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}',
        b"[]",
    ],
)
async def test_a_malformed_jwks_at_start_means_401_no_keys_never_500(
    oauth_gateway_of: OAuthGateway, jwks_server: tuple[JwksServer, str], body: bytes
) -> None:
    server, url = jwks_server
    server.body = body
    client = await oauth_gateway_of(ISSUER, OAUTH_JWKS_URL=url)
    code, message = await status(client, token(SigningKey.new("RS256"), base_url(client)))
    assert code == 401
    assert "signing keys are not available" in message


async def test_a_jwks_turned_malformed_keeps_the_keys_fetched_before(
    oauth_gateway_of: OAuthGateway, jwks_server: tuple[JwksServer, str]
) -> None:
    known = SigningKey.new("ES256")
    server, url = jwks_server
    server.publish(known)
    client = await oauth_gateway_of(ISSUER, OAUTH_JWKS_URL=url, OAUTH_JWKS_MIN_REFRESH=0.0)
    server.body = b"{oops"
    # An unknown kid makes the worker fetch the broken answer...
    refused = await status(client, token(SigningKey.new("ES256"), base_url(client)))
    assert refused[0] == 401, refused
    assert server.fetches == 2, refused
    # ...which does not replace the keys it had.
    assert (await status(client, token(known, base_url(client))))[0] == 200


async def test_unknown_kids_fetch_the_jwks_once_per_interval_and_a_new_key_is_then_accepted(
    oauth_gateway_of: OAuthGateway, jwks_server: tuple[JwksServer, str]
) -> None:
    old, new = SigningKey.new("RS256"), SigningKey.new("EdDSA")
    server, url = jwks_server
    server.publish(old)
    client = await oauth_gateway_of(ISSUER, OAUTH_JWKS_URL=url, OAUTH_JWKS_MIN_REFRESH=1.5)
    assert server.fetches == 1
    aud = base_url(client)
    # Within the interval after the fetch at start, an unknown kid fetches nothing.
    assert (await status(client, token(new, aud)))[0] == 401
    assert server.fetches == 1
    await asyncio.sleep(1.6)
    server.delay = 0.3
    # Concurrent requests with unknown kids share one fetch.
    results = await asyncio.gather(*(status(client, token(new, aud, n=i)) for i in range(8)))
    assert {code for code, _ in results} == {401}
    assert server.fetches == 2
    # The key appears at the issuer; within the interval no fetch is made for it.
    server.publish(old, new)
    assert (await status(client, token(new, aud)))[0] == 401
    assert server.fetches == 2
    await asyncio.sleep(1.6)
    assert (await status(client, token(new, aud)))[0] == 200
    assert server.fetches == 3
    assert (await status(client, token(old, aud)))[0] == 200


async def test_a_token_whose_alg_is_not_its_keys_is_refused(
    oauth_gateway_of: OAuthGateway, jwks_server: tuple[JwksServer, str]
) -> None:
    rsa_key = SigningKey.new("RS256")
    server, url = jwks_server
    server.publish(rsa_key)
    client = await oauth_gateway_of(ISSUER, OAUTH_JWKS_URL=url)
    forged = jwt.encode(
        {"iss": ISSUER, "sub": "s", "aud": base_url(client), "exp": int(time.time()) + 60},
        rsa_key.private,
        algorithm="PS256",
        headers={"kid": rsa_key.kid},
    )
    code, message = await status(client, forged)
    assert code == 401
    assert "does not match its key" in message


async def test_the_protected_resource_metadata_documents(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_REQUIRED_SCOPES=("mcp",), OAUTH_ADMIN_SCOPE="other")
    root = await client.get("/.well-known/oauth-protected-resource")
    assert root.status == 200
    assert root.headers["Access-Control-Allow-Origin"] == "*"
    document = await root.json()
    assert document == {
        "resource": base_url(client),
        "authorization_servers": [authorization_server.issuer],
        "scopes_supported": ["mcp", "other", "metrics"],
        "bearer_methods_supported": ["header"],
        "resource_name": "aio-mcp-gateway",
    }
    path_form = await client.get("/.well-known/oauth-protected-resource/servers/team/mcp")
    assert (await path_form.json())["resource"] == f"{base_url(client)}/servers/team/mcp"


async def test_tokens_never_reach_the_upstream(
    oauth_gateway: OAuthGateway,
    authorization_server: AuthorizationServer,
    recording_upstream: tuple[RecordingUpstream, str],
) -> None:
    upstream, url = recording_upstream
    client = await oauth_gateway()
    aud = base_url(client)
    admin = await authorization_server.client_credentials(aud, ["mcp", "admin"])
    user = await authorization_server.client_credentials(aud, ["mcp"])
    registration = {"name": "rec", "url": url, "transport": "streamable-http"}
    response = await client.post(
        "/upstreams", json=registration, headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status == 201, await response.text()
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "rec__echo", "arguments": {"text": "hi"}},
    }
    response = await client.post("/rpc", json=call, headers={"Authorization": f"Bearer {user}"})
    body = await response.json()
    assert body["result"]["content"][0]["text"] == "hi", body
    assert upstream.headers
    for headers in upstream.headers:
        assert "Authorization" not in headers
        assert not any(admin in v or user in v for v in headers.values())


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({}, "OAUTH_ISSUER"),
        ({"OAUTH_ISSUER": ISSUER}, "OAUTH_AUDIENCE or PUBLIC_URL"),
    ],
)
def test_missing_issuer_or_audience_is_a_settings_error(
    base_settings: Settings, values: dict[str, str], problem: str
) -> None:
    settings = base_settings.replace(auth_type="oauth", plugin_values=values)
    with pytest.raises(SettingsError, match=problem):
        create_oauth_authenticator(settings, "")


def test_an_http_issuer_off_loopback_is_refused_by_the_settings() -> None:
    from gateway.settings import load_settings

    environ = {"AUTH_TYPE": "oauth", "OAUTH_ISSUER": "http://idp.example.com"}
    with pytest.raises(SettingsError, match="https"):
        load_settings(environ, env_file=None)


def test_metadata_is_looked_for_at_the_rfc_8414_place_then_the_openid_one() -> None:
    assert metadata_urls("https://login.example.com/realms/tools") == [
        "https://login.example.com/.well-known/oauth-authorization-server/realms/tools",
        "https://login.example.com/realms/tools/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://login.example.com") == [
        "https://login.example.com/.well-known/oauth-authorization-server",
        "https://login.example.com/.well-known/openid-configuration",
    ]


@pytest.fixture
async def issuer_server() -> AsyncIterator[tuple[dict[str, Any], JwksServer, str]]:
    """An issuer at `<url>/tenant` answering RFC 8414 metadata (its body is the dict, which
    the test fills) and a JWKS."""
    metadata: dict[str, Any] = {}
    keys = JwksServer()

    async def well_known(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(metadata), content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server/tenant", well_known)
    app.router.add_get("/tenant/jwks", keys.jwks)
    running = TestServer(app, host="127.0.0.1")
    await running.start_server()
    yield metadata, keys, f"http://127.0.0.1:{running.port}/tenant"
    await running.close()


async def test_the_jwks_is_found_through_the_issuers_rfc_8414_metadata(
    oauth_gateway_of: OAuthGateway, issuer_server: tuple[dict[str, Any], JwksServer, str]
) -> None:
    metadata, keys, issuer = issuer_server
    metadata.update(issuer=issuer, jwks_uri=f"{issuer}/jwks")
    key = SigningKey.new("ES256")
    keys.publish(key)
    client = await oauth_gateway_of(issuer)
    now = int(time.time())
    claims = {"iss": issuer, "sub": "s", "aud": base_url(client), "exp": now + 60, "scope": "mcp"}
    signed = jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid})
    assert (await status(client, signed))[0] == 200


async def test_metadata_naming_another_issuer_is_not_trusted(
    oauth_gateway_of: OAuthGateway, issuer_server: tuple[dict[str, Any], JwksServer, str]
) -> None:
    metadata, keys, issuer = issuer_server
    metadata.update(issuer="https://elsewhere.example", jwks_uri=f"{issuer}/jwks")
    key = SigningKey.new("RS256")
    keys.publish(key)
    client = await oauth_gateway_of(issuer)
    now = int(time.time())
    claims = {"iss": issuer, "sub": "s", "aud": base_url(client), "exp": now + 60, "scope": "mcp"}
    signed = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
    code, message = await status(client, signed)
    assert code == 401
    assert "signing keys are not available" in message
    assert keys.fetches == 0


def test_the_leeway_may_be_zero_and_at_most_ten_minutes() -> None:
    from gateway.settings import load_settings
    from gateway_plugins.auth_oauth import LEEWAY

    environ = {"AUTH_TYPE": "oauth", "OAUTH_ISSUER": ISSUER, "OAUTH_LEEWAY": "0"}
    assert load_settings(environ, env_file=None).plugin_value(LEEWAY) == 0.0
    with pytest.raises(SettingsError, match="between 0 and 600"):
        load_settings({**environ, "OAUTH_LEEWAY": "601"}, env_file=None)
