"""The `oauth` authenticator against a real authorization server (oidc-provider): tokens it
issues are accepted, and every bad token of the issue is refused with 401 or 403 and a
`WWW-Authenticate` challenge, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest

from tests.auth.conftest import OAuthGateway, base_url
from tests.conftest import Client, bearer, error_message
from tests.support.oidc import AuthorizationServer, SigningKey
from tests.support.raw_http import NOT_UTF8_AUTHORIZATION, raw_answer
from tests.transports.conftest import init_message

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def list_tools(client: Client, token: str | None, path: str = "/rpc") -> Any:
    headers = bearer(token) if token is not None else {}
    return await client.post(path, json=LIST, headers=headers)


async def refused(client: Client, token: str | None, status: int = 401) -> tuple[str, str]:
    """The message and the WWW-Authenticate of a refused tools/list."""
    response = await list_tools(client, token)
    body = await response.json()
    assert response.status == status, body
    return body["error"]["message"], response.headers["WWW-Authenticate"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_a_client_credentials_token_of_each_algorithm_lists_tools(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer, alg: str
) -> None:
    client = await oauth_gateway()
    token = await authorization_server.client_credentials(base_url(client), ["mcp"], alg)
    response = await list_tools(client, token)
    assert response.status == 200
    assert isinstance((await response.json())["result"]["tools"], list)


async def test_the_admin_scope_opens_admin_routes_and_its_lack_is_insufficient_scope(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_ADMIN_SCOPE="admin")
    admin = await authorization_server.client_credentials(base_url(client), ["mcp", "admin"])
    user = await authorization_server.client_credentials(base_url(client), ["mcp"])
    assert (await client.get("/upstreams", headers=bearer(admin))).status == 200
    response = await client.get("/upstreams", headers=bearer(user))
    assert response.status == 403
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge


async def test_an_admin_scope_of_another_name_is_the_gateway_admin_and_a_bare_admin_is_not(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_ADMIN_SCOPE="other")
    other = await authorization_server.client_credentials(base_url(client), ["mcp", "other"])
    bare = await authorization_server.client_credentials(base_url(client), ["mcp", "admin"])
    assert (await client.get("/upstreams", headers=bearer(other))).status == 200
    response = await client.get("/upstreams", headers=bearer(bare))
    assert response.status == 403
    assert 'scope="other"' in response.headers["WWW-Authenticate"]


async def test_a_token_without_the_required_scope_is_403_insufficient_scope_naming_it(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway()
    token = await authorization_server.client_credentials(base_url(client), ["metrics"])
    message, challenge = await refused(client, token, 403)
    assert "mcp" in message
    assert challenge.startswith('Bearer error="insufficient_scope", scope="mcp"')
    assert f'resource_metadata="{base_url(client)}/.well-known/oauth-protected-resource"' in (
        challenge
    )


async def test_no_token_is_401_with_the_resource_metadata_and_the_scope_but_no_error(
    oauth_gateway: OAuthGateway,
) -> None:
    client = await oauth_gateway()
    message, challenge = await refused(client, None)
    assert "missing token" in message
    metadata = f"{base_url(client)}/.well-known/oauth-protected-resource"
    assert challenge.startswith(f'Bearer scope="mcp", resource_metadata="{metadata}"')
    assert "error=" not in challenge.replace("error_description", "")


def expired(server: AuthorizationServer, aud: str) -> str:
    now = int(time.time())
    return server.sign(server.claims(aud, iat=now - 600, exp=now - 120))


def not_yet_valid(server: AuthorizationServer, aud: str) -> str:
    return server.sign(server.claims(aud, nbf=int(time.time()) + 300))


def other_issuer(server: AuthorizationServer, aud: str) -> str:
    return server.sign(server.claims(aud, iss="http://127.0.0.1:1"))


def other_audience(server: AuthorizationServer, aud: str) -> str:
    return server.sign(server.claims("http://127.0.0.1:1"))


def unknown_kid(server: AuthorizationServer, aud: str) -> str:
    stranger = SigningKey.new("RS256")
    return __import__("jwt").encode(
        server.claims(aud), stranger.private, algorithm="RS256", headers={"kid": stranger.kid}
    )


def alg_none(server: AuthorizationServer, aud: str) -> str:
    header = b64(orjson.dumps({"alg": "none", "typ": "at+jwt", "kid": server.keys["RS256"].kid}))
    return f"{header}.{b64(orjson.dumps(server.claims(aud)))}."


def hs256_with_the_public_key(server: AuthorizationServer, aud: str) -> str:
    key = server.keys["RS256"]
    header = b64(orjson.dumps({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}))
    signed = f"{header}.{b64(orjson.dumps(server.claims(aud)))}"
    mac = hmac.new(key.public_pem(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(mac)}"


def signature_of_another_key(server: AuthorizationServer, aud: str) -> str:
    stranger = SigningKey.new("RS256")
    return __import__("jwt").encode(
        server.claims(aud),
        stranger.private,
        algorithm="RS256",
        headers={"kid": server.keys["RS256"].kid},
    )


def not_a_jwt(server: AuthorizationServer, aud: str) -> str:
    return "not-a-jwt"


def jti_not_a_string(server: AuthorizationServer, aud: str) -> str:
    return server.sign(server.claims(aud, jti=["a", "list"]))


def scope_not_a_string(server: AuthorizationServer, aud: str) -> str:
    return server.sign(server.claims(aud, scope={"mcp": True}))


def no_subject(server: AuthorizationServer, aud: str) -> str:
    claims = server.claims(aud)
    del claims["sub"], claims["client_id"]
    return server.sign(claims)


def no_exp(server: AuthorizationServer, aud: str) -> str:
    claims = server.claims(aud)
    del claims["exp"]
    return server.sign(claims)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (expired, "expired"),
        (not_yet_valid, "not yet valid"),
        (other_issuer, "another issuer"),
        (other_audience, "not for this resource"),
        (unknown_kid, "unknown key"),
        (alg_none, "algorithm 'none' is not allowed"),
        (hs256_with_the_public_key, "algorithm 'HS256' is not allowed"),
        (signature_of_another_key, "invalid signature"),
        (not_a_jwt, "malformed token"),
        (jti_not_a_string, "must be a string"),
        (scope_not_a_string, "scope claim must be"),
        (no_subject, "no sub claim"),
        (no_exp, "no exp claim"),
    ],
)
async def test_a_bad_token_is_401_invalid_token_with_its_reason(
    oauth_gateway: OAuthGateway,
    authorization_server: AuthorizationServer,
    make: Any,
    reason: str,
) -> None:
    client = await oauth_gateway(OAUTH_LEEWAY=5.0)
    message, challenge = await refused(client, make(authorization_server, base_url(client)))
    assert reason in message
    assert challenge.startswith('Bearer error="invalid_token", resource_metadata="')


async def test_an_authorization_of_bytes_that_are_not_utf8_is_400_json_not_500(
    oauth_gateway: OAuthGateway,
) -> None:
    client = await oauth_gateway()
    head, body = await raw_answer(client.port, NOT_UTF8_AUTHORIZATION)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert orjson.loads(body)["error"]["message"] == "header Authorization is not valid UTF-8"


async def test_a_crafted_token_with_good_claims_signed_by_the_issuer_is_accepted(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    # The control for the table above: only the one thing each row changes is wrong.
    client = await oauth_gateway()
    token = authorization_server.sign(authorization_server.claims(base_url(client)))
    assert (await list_tools(client, token)).status == 200


async def test_a_token_within_the_leeway_of_its_expiry_is_accepted(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_LEEWAY=60.0)
    now = int(time.time())
    claims = authorization_server.claims(base_url(client), iat=now - 600, exp=now - 10)
    assert (await list_tools(client, authorization_server.sign(claims))).status == 200


async def test_a_revoked_token_is_refused_on_its_next_use(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway()
    aud = base_url(client)
    admin = await authorization_server.client_credentials(aud, ["mcp", "admin"])
    token = await authorization_server.client_credentials(aud, ["mcp"])
    assert (await list_tools(client, token)).status == 200
    response = await client.post("/tokens/revoke", json={"token": token}, headers=bearer(admin))
    assert response.status == 200, await response.text()
    message, challenge = await refused(client, token)
    assert message == "token has been revoked"
    assert 'error="invalid_token"' in challenge


async def test_the_authorization_server_down_leaves_tokens_of_known_keys_working(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_JWKS_MIN_REFRESH=0.0)
    aud = base_url(client)
    issued = await authorization_server.client_credentials(aud, ["mcp"], "ES256")
    authorization_server.stop()
    assert (await list_tools(client, issued)).status == 200
    # A token never seen before, signed with a known key: checked, not fetched.
    fresh = authorization_server.sign(authorization_server.claims(aud), "EdDSA")
    assert (await list_tools(client, fresh)).status == 200
    # An unknown kid tries the JWKS, which is down: 401, not 500.
    message, _ = await refused(client, unknown_kid(authorization_server, aud))
    assert "unknown key" in message


async def test_tokens_issued_by_the_server_are_accepted_for_the_resource_they_name(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway()
    server_resource = f"{base_url(client)}/servers/team/mcp"
    token = await authorization_server.client_credentials(server_resource, ["mcp"])
    # Accepted at that server's endpoint (which does not exist: 404, past authentication)...
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    response = await client.post(
        "/servers/team/mcp",
        json=initialize,
        headers={**bearer(token), "Accept": "application/json, text/event-stream"},
    )
    assert response.status == 404, await response.text()
    # ...and nowhere else.
    message, _ = await refused(client, token)
    assert "not for this resource" in message
    response = await client.post("/servers/other/mcp", json=initialize, headers=bearer(token))
    assert response.status == 401
    assert (
        f'resource_metadata="{base_url(client)}/.well-known/oauth-protected-resource/servers/other/mcp"'
        in response.headers["WWW-Authenticate"]
    )


async def test_without_public_url_a_token_for_a_server_resource_of_the_request_host_is_refused(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    # The resource would be built from Host, which the caller writes: only the configured
    # audience counts.
    client = await oauth_gateway(public_url="", OAUTH_AUDIENCE="urn:gateway")
    token = await authorization_server.client_credentials(
        f"{base_url(client)}/servers/team/mcp", ["mcp"]
    )
    response = await client.post("/servers/team/mcp", json=LIST, headers=bearer(token))
    assert "not for this resource" in await error_message(response, 401)
    good = await authorization_server.client_credentials("urn:gateway", ["mcp"])
    assert (await list_tools(client, good)).status == 200


async def test_the_servers_claim_named_by_the_setting_limits_the_token_to_those_servers(
    oauth_gateway: OAuthGateway, authorization_server: AuthorizationServer
) -> None:
    client = await oauth_gateway(OAUTH_SERVERS_CLAIM="teams")
    aud = base_url(client)
    initialize = init_message("2025-06-18")
    mcp_headers = {"Accept": "application/json, text/event-stream"}
    limited = authorization_server.sign(authorization_server.claims(aud, teams=["team"]))
    response = await client.post(
        "/mcp", json=initialize, headers={**bearer(limited), **mcp_headers}
    )
    assert response.status == 403
    assert "may not reach the whole gateway" in await response.text()
    # A `servers` claim means nothing when the setting names another claim.
    other = authorization_server.sign(authorization_server.claims(aud, servers=["team"]))
    response = await client.post("/mcp", json=initialize, headers={**bearer(other), **mcp_headers})
    assert response.status == 200, await response.text()
