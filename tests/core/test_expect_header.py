"""The `Expect` header, which aiohttp reads before any middleware: `100-continue` is met
(`100 Continue`, then the answer), any other expectation is a 417 JSON answer from the front
door on every route and on paths no route takes, and bytes that are not UTF-8 are the 400
JSON answer of any such header, never aiohttp's text/plain 417 or 500."""

from __future__ import annotations

import re

import orjson
import pytest

from tests.conftest import Client, GatewayFactory, make_token
from tests.support.raw_http import continued_answer, raw_answer

PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
TOKEN = make_token("root", ("admin",)).encode()
UNMET = {"status": 417, "message": "header Expect: only 100-continue is supported"}


def request_head(method: str, path: str, expect: bytes, length: int, version: bytes) -> bytes:
    return (
        f"{method} {path} ".encode()
        + version
        + b"\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + TOKEN
        + b"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        + b"Expect: "
        + expect
        + f"\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()
    )


async def exchange(
    client: Client,
    method: str,
    path: str,
    expect: bytes,
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> tuple[bytes, bytes]:
    """The head and body of the answer to a request sent whole with `Expect: <expect>`."""
    head = request_head(method, path, expect, len(body), version)
    return await raw_answer(client.port, head + body)


def json_error(head: bytes, body: bytes, status: int) -> dict[str, object]:
    """The error of a JSON answer with `status` that passed the front door (it has a
    request id), whatever aiohttp would have answered instead."""
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head + body
    assert b"application/json" in head, head + body
    assert b"X-Request-ID: " in head, head
    error: dict[str, object] = orjson.loads(body)["error"]
    return error


ROUTES = [
    ("POST", "/rpc"),
    ("POST", "/mcp"),
    ("GET", "/mcp"),
    ("DELETE", "/servers/s1/mcp"),
    ("POST", "/message"),
    ("GET", "/sse"),
    ("GET", "/upstreams"),
    ("PATCH", "/tools/x"),
    ("PUT", "/roles/x"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/admin/signin"),
    ("POST", "/admin/signin"),
    ("GET", "/admin/static/ui.css"),
    ("GET", "/.well-known/oauth-protected-resource"),
    ("POST", "/no/such/route"),
    ("PUT", "/rpc"),
]
"""A route of each kind (JSON-RPC, both MCP transports, admin API, health, metrics, admin
UI, well-known metadata), a path no route takes (404 otherwise) and a method /rpc lacks
(405 otherwise)."""


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_an_expectation_other_than_100_continue_is_417_json(
    gateway: GatewayFactory, method: str, path: str
) -> None:
    client = await gateway()
    head, body = await exchange(client, method, path, b"foo", PING)
    assert json_error(head, body, 417) == UNMET


async def test_every_route_the_app_registers_answers_an_unmet_expectation_with_417_json(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    routes = {
        (route.method, re.sub(r"\{[^}]*\}", "x", resource.canonical))
        for resource in client.app.router.resources()
        for route in resource
        if "unmatched" not in resource.canonical
    }
    assert ("POST", "/admin/tokens/x/revoke") in routes  # the admin UI's and the plugins'
    for method, path in sorted(routes):
        head, body = await exchange(client, "POST" if method == "*" else method, path, b"x")
        if method == "HEAD":
            assert head.startswith(b"HTTP/1.1 417 "), (path, head)
            assert b"application/json" in head, (path, head)
        else:
            assert json_error(head, body, 417) == UNMET, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "expect"),
    [
        ("POST", "/rpc", b"\xe9\xff"),
        ("POST", "/mcp", b"100-continue\xff"),
        ("GET", "/upstreams", b"\xc3"),
        ("POST", "/admin/signin", b"\xfe"),
        ("GET", "/no/such/route", b"\xff"),
    ],
)
async def test_expect_bytes_that_are_not_utf8_are_400_json_naming_the_header(
    gateway: GatewayFactory, method: str, path: str, expect: bytes
) -> None:
    client = await gateway()
    head, body = await exchange(client, method, path, expect, PING if method == "POST" else b"")
    assert json_error(head, body, 400)["message"] == "header Expect is not valid UTF-8"


async def test_100_continue_is_answered_before_the_body_then_the_call_is(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    head = request_head("POST", "/rpc", b"100-Continue", len(PING), b"HTTP/1.1")
    interim, final_head, final_body = await continued_answer(client.port, head, PING)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final_head.startswith(b"HTTP/1.1 200 "), final_head
    assert orjson.loads(final_body) == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_100_continue_on_a_path_no_route_takes_is_answered_then_404_json(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    head = request_head("POST", "/no/such/route", b"100-continue", len(PING), b"HTTP/1.1")
    interim, final_head, final_body = await continued_answer(client.port, head, PING)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert json_error(final_head, final_body, 404)["message"] == "Not Found"


async def test_an_http10_expectation_is_ignored(gateway: GatewayFactory) -> None:
    client = await gateway()
    head, body = await exchange(client, "POST", "/rpc", b"foo", PING, version=b"HTTP/1.0")
    assert head.startswith(b"HTTP/1.0 200 "), head + body
    assert orjson.loads(body) == {"jsonrpc": "2.0", "id": 1, "result": {}}
