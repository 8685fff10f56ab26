"""Header values that are not UTF-8 are refused at the front door with a 400 JSON answer
naming the header, on every kind of route, instead of failing wherever a header is read."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import Client, GatewayFactory, make_token
from tests.support.raw_http import raw_answer

PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


async def exchange(client: Client, method: str, path: str, header: bytes, body: bytes) -> bytes:
    """The raw answer to a request whose `header` line is sent as given."""
    token = make_token("root", ("admin",)).encode()
    head, body = await raw_answer(
        client.port,
        f"{method} {path} HTTP/1.1\r\n".encode()
        + b"Host: 127.0.0.1\r\nAuthorization: Bearer "
        + token
        + b"\r\n"
        + b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        + header
        + b"\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("method", "path", "header"),
    [
        ("POST", "/mcp", b"MCP-Protocol-Version: \xe9\xff"),
        ("POST", "/mcp", b"Mcp-Session-Id: \xe9\xff"),
        ("GET", "/mcp", b"Last-Event-ID: \xff"),
        ("POST", "/rpc", b"Authorization2: \xc3"),
        ("GET", "/tools", b"X-Anything: ok \xfe"),
        ("POST", "/admin/signin", b"Origin: http://127.0.0.1\xe9"),
        ("POST", "/admin/signin", b"Sec-Fetch-Site: \xe9"),
    ],
)
async def test_a_header_that_is_not_utf8_is_400_json_naming_it(
    gateway: GatewayFactory, method: str, path: str, header: bytes
) -> None:
    client = await gateway()
    answer = await exchange(client, method, path, header, PING if method == "POST" else b"")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"application/json" in head
    name = header.split(b":")[0].decode()
    assert orjson.loads(body)["error"]["message"] == f"header {name} is not valid UTF-8"


async def test_utf8_header_values_still_pass(gateway: GatewayFactory) -> None:
    client = await gateway()
    answer = await exchange(client, "POST", "/rpc", "X-Note: café ☃".encode(), PING)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert orjson.loads(body) == {"jsonrpc": "2.0", "id": 1, "result": {}}
