"""The official MCP SDK's OAuth client (`OAuthClientProvider`) signs in to the gateway as an
MCP client does: a 401 names the gateway's protected-resource metadata, which names the
authorization server (oidc-provider); the client registers itself, goes through
authorization code + PKCE for the gateway's resource, and then lists and calls tools."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from tests.auth.conftest import OAuthGateway, RecordingUpstream, base_url
from tests.support.oidc import AuthorizationServer

REDIRECT_URI = "http://127.0.0.1:1/callback"
MAX_REDIRECTS = 10


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """Follows the authorization server's redirects, with its cookies, as a browser would,
    until it is sent back to the client's redirect URI; the authorization server's login and
    consent approve themselves."""

    def __init__(self) -> None:
        self.visited: list[str] = []
        self.result: AuthorizationCodeResult | None = None

    async def open(self, url: str) -> None:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            for _ in range(MAX_REDIRECTS):
                self.visited.append(url)
                async with http.get(url, allow_redirects=False) as response:
                    location = response.headers.get("Location")
                    assert location, f"{response.status} at {url}: {await response.text()}"
                url = urljoin(url, location)
                if url.startswith(REDIRECT_URI):
                    query = parse_qs(urlsplit(url).query)
                    assert "code" in query, query
                    self.result = AuthorizationCodeResult(
                        code=query["code"][0],
                        state=query.get("state", [None])[0],
                        iss=query.get("iss", [None])[0],
                    )
                    return
        raise AssertionError(f"never sent back to the client: {self.visited}")

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


@pytest.mark.parametrize("path", ["/mcp", "/servers/team/mcp"])
async def test_the_sdk_signs_in_through_the_metadata_with_pkce_and_calls_a_tool(
    oauth_gateway: OAuthGateway,
    authorization_server: AuthorizationServer,
    recording_upstream: tuple[RecordingUpstream, str],
    path: str,
) -> None:
    upstream, upstream_url = recording_upstream
    gateway = await oauth_gateway()
    admin = await authorization_server.client_credentials(base_url(gateway), ["mcp", "admin"])
    response = await gateway.post(
        "/upstreams",
        json={"name": "rec", "url": upstream_url, "transport": "streamable-http"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status == 201, await response.text()
    response = await gateway.post(
        "/servers",
        json={"id": "team", "tools": ["rec__echo"]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status == 201, await response.text()
    endpoint = f"{base_url(gateway)}{path}"

    browser = Browser()
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=endpoint,
        client_metadata=OAuthClientMetadata(
            client_name="sdk test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(15.0)) as http:
        transport = streamable_http_client(endpoint, http_client=http)
        async with Client(transport, mode="legacy") as client:
            tools = await client.list_tools()
            assert "rec__echo" in [tool.name for tool in tools.tools]
            result = await client.call_tool("rec__echo", {"text": "signed in"})
            assert result.content[0].text == "signed in"  # type: ignore[union-attr]

    # It went to the authorization server that the metadata names, asking for the scope the
    # challenge named, with PKCE, for the gateway as the resource.
    query = parse_qs(urlsplit(browser.visited[0]).query)
    assert browser.visited[0].startswith(f"{authorization_server.issuer}/auth")
    assert query["code_challenge_method"] == ["S256"]
    assert "mcp" in query["scope"][0].split()
    # For a virtual server, its own resource (from the metadata's path form).
    resource = base_url(gateway) if path == "/mcp" else endpoint
    assert query["resource"] == [resource]
    assert storage.tokens is not None and storage.client_info is not None
    assert all("Authorization" not in headers for headers in upstream.headers)
