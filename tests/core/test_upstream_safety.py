"""Registering an upstream is refused, naming the rule, when its headers would split or
misroute the gateway's requests to it."""

from __future__ import annotations

import pytest

from tests.conftest import Client, GatewayFactory
from tests.upstreams.processes import RunningUpstream


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway()


async def refusal(client: Client, admin: dict[str, str], payload: dict[str, object]) -> str:
    response = await client.post("/upstreams", json=payload, headers=admin)
    assert response.status == 422, await response.text()
    body = await response.json()
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("X-Token", "a\r\nX-Injected: 1", "CR, LF or NUL"),
        ("X-Token", "a\nb", "CR, LF or NUL"),
        ("X-Token", "a\0b", "CR, LF or NUL"),
        ("X Token", "a", "token"),
        ("X-Token\r\n", "a", "token"),
        ("Host", "internal.example", "cannot be given"),
        ("Content-Length", "0", "cannot be given"),
        ("Connection", "close", "cannot be given"),
        ("Transfer-Encoding", "chunked", "cannot be given"),
        ("Proxy-Authorization", "Basic eA==", "cannot be given"),
        ("te", "trailers", "cannot be given"),
    ],
)
async def test_register_with_an_unsafe_header_returns_422_naming_it(
    client: Client, admin_headers: dict[str, str], name: str, value: str, rule: str
) -> None:
    payload = {"name": "up", "url": "http://127.0.0.1:9/mcp", "headers": {name: value}}
    error = await refusal(client, admin_headers, payload)
    assert repr(name) in error
    assert rule in error


async def test_patch_with_an_unsafe_header_returns_422_naming_it(
    client: Client, admin_headers: dict[str, str], own_upstream: RunningUpstream
) -> None:
    payload = {"name": "own", "url": own_upstream.url}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 201, await response.text()
    response = await client.patch(
        "/upstreams/own", json={"headers": {"Host": "internal.example"}}, headers=admin_headers
    )
    assert response.status == 422, await response.text()
    assert "'Host'" in (await response.json())["error"]["message"]
