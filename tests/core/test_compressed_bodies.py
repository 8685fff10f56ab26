"""Request bodies sent with a `Content-Encoding`: one that is not valid data of its coding
(gzip, deflate) is the client's fault, a 400 JSON answer naming the coding on every route
that reads a body, logged as one INFO line without a traceback; a coding aiohttp does not
decode is a 415 JSON answer saying which it does; a body that decodes past
`MAX_REQUEST_BYTES` is the 413 of an uncompressed one, read no further than the limit."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from structlog.testing import capture_logs

from tests.conftest import TEST_SECRET, Client, GatewayFactory, make_token
from tests.support.gateway_process import serving, status_of
from tests.support.proc import status_kib
from tests.support.raw_http import raw_answer

TOKEN = make_token("root", ("admin",))
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
NOT_GZIP = b"this is not gzip data"
NOT_DEFLATE = b"\x78\x9cthis is not deflate data"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


def request_bytes(
    path: str,
    coding: str | None,
    body: bytes,
    content_type: str = JSON_TYPE,
    token: str | None = TOKEN,
    method: str = "POST",
    connection: str = "close",
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {len(body)}",
        f"Connection: {connection}",
        *(["Origin: http://127.0.0.1"] if content_type == FORM_TYPE else []),
        *([f"Authorization: Bearer {token}"] if token else []),
        *([f"Content-Encoding: {coding}"] if coding is not None else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send(client: Client, path: str, coding: str | None, body: bytes, **kw: Any) -> Answer:
    assert client.port is not None
    head, payload = await raw_answer(client.port, request_bytes(path, coding, body, **kw))
    return Answer(head, payload)


class Answer:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body
        self.status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None

    def error(self, status: int) -> dict[str, Any]:
        """The front door's JSON error, which must have `status`."""
        assert self.status == status, self.head + self.body
        assert (self.header("Content-Type") or "").startswith(JSON_TYPE), self.head
        assert self.header("X-Request-ID"), self.head
        error: dict[str, Any] = orjson.loads(self.body)["error"]
        return error


@contextmanager
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[MutableMapping[str, Any]]]:
    """The gateway's own log events inside; on leaving, checks that neither it nor aiohttp
    logged an error or a traceback meanwhile."""
    with caplog.at_level(logging.INFO), capture_logs() as events:
        yield events
    assert not [e for e in events if e["log_level"] in ("error", "critical")], events
    assert not [e for e in events if "exc_info" in e or "exception" in e], events
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


def refusals(events: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e["event"] == "malformed HTTP request body refused"]


BODY_ROUTES = [
    ("/rpc", JSON_TYPE),
    ("/mcp", JSON_TYPE),
    ("/upstreams", JSON_TYPE),
    ("/roles", JSON_TYPE),
    ("/tokens", JSON_TYPE),
    ("/tokens/revoke", JSON_TYPE),
    ("/admin/signin", FORM_TYPE),
]
"""A route of each kind that reads a body: JSON-RPC, MCP, the admin API (the core's and a
plugin's) and an admin UI form. `/message` has a test of its own (it needs a session)."""


@pytest.mark.parametrize(("path", "content_type"), BODY_ROUTES)
@pytest.mark.parametrize(("coding", "body"), [("gzip", NOT_GZIP), ("deflate", NOT_DEFLATE)])
async def test_a_body_that_is_not_valid_data_of_its_coding_is_400_json_naming_it(
    gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    coding: str,
    body: bytes,
) -> None:
    client = await gateway()
    with logged(caplog) as events:
        answer = await send(client, path, coding, body, content_type=content_type)
    assert answer.error(400) == {"status": 400, "message": f"request body is not valid {coding}"}
    assert len(refusals(events)) == 1, events
    assert refusals(events)[0]["log_level"] == "info"


async def test_on_message_the_answer_is_400_json_not_an_error_on_the_stream(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway()
    stream = await client.get(
        "/sse", headers={"Accept": "text/event-stream", "Authorization": f"Bearer {TOKEN}"}
    )
    assert stream.status == 200
    endpoint = ""
    while not endpoint.startswith("/message"):
        line = (await stream.content.readline()).decode().strip()
        endpoint = line.removeprefix("data:").strip()
    with logged(caplog) as events:
        answer = await send(client, endpoint, "gzip", NOT_GZIP)
    assert answer.error(400)["message"] == "request body is not valid gzip"
    assert len(refusals(events)) == 1, events
    stream.close()


async def test_the_refusal_closes_the_connection_whose_parser_stopped_at_the_fault(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    answer = await send(client, "/rpc", "gzip", NOT_GZIP, connection="keep-alive")
    assert answer.error(400)["message"] == "request body is not valid gzip"
    assert answer.header("Connection") == "close"


async def test_a_gzip_stream_cut_short_is_a_json_400(gateway: GatewayFactory) -> None:
    client = await gateway()
    cut = gzip.compress(PING)[:20]
    rpc = await send(client, "/rpc", "gzip", cut)
    assert rpc.status == 400 and orjson.loads(rpc.body)["error"]["code"] == -32700
    admin = await send(client, "/upstreams", "gzip", cut)
    assert admin.error(400)["message"].startswith("request body is not valid JSON")


@pytest.mark.parametrize("coding", ["foo", "gzip, gzip", "identity, gzip", "x-gzip"])
async def test_a_coding_aiohttp_does_not_decode_is_415_json_with_accept_encoding(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, coding: str
) -> None:
    client = await gateway()
    with logged(caplog):
        for path in ("/rpc", "/mcp", "/upstreams", "/no/such/route"):
            answer = await send(client, path, coding, PING)
            message = answer.error(415)["message"]
            assert message.startswith("header Content-Encoding: only gzip"), message
            if not (HAS_BROTLI or HAS_ZSTD):
                assert message == "header Content-Encoding: only gzip and deflate are supported"
            assert (answer.header("Accept-Encoding") or "").startswith("gzip, deflate"), path


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(PING)),
        ("GZip", gzip.compress(PING)),
        ("deflate", zlib.compress(PING)),
        ("identity", PING),
        ("", PING),
        (None, PING),
    ],
)
async def test_bodies_in_a_coding_it_decodes_or_none_are_served(
    gateway: GatewayFactory, coding: str | None, body: bytes
) -> None:
    client = await gateway()
    answer = await send(client, "/rpc", coding, body)
    assert answer.status == 200, answer.head + answer.body
    assert orjson.loads(answer.body) == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_a_coding_header_on_a_request_without_a_body_is_no_fault(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    answer = await send(client, "/upstreams", "foo", b"", method="GET")
    assert answer.status == 200, answer.head + answer.body


def bomb(size: int) -> bytes:
    """A gzip stream of `size` zero bytes, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()


async def test_a_body_decoding_past_max_request_bytes_is_the_413_of_an_uncompressed_one(
    gateway: GatewayFactory,
) -> None:
    limit = 64 * 1024
    client = await gateway(max_request_bytes=limit)
    oversized = b" " * (limit + 1)
    for path in ("/rpc", "/mcp", "/upstreams"):
        plain = await send(client, path, None, oversized)
        packed = await send(client, path, "gzip", gzip.compress(oversized))
        assert len(gzip.compress(oversized)) < limit
        assert plain.status == packed.status == 413, (path, plain.body, packed.body)
        assert packed.body == plain.body, path


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_served_gateway_logs_each_bad_body_as_one_info_line_without_traceback(
    tmp_path: Path,
) -> None:
    """In a real process with the real logging: a bad body the app reads, one it never
    reads (refused 401 first, or on a path no route takes), a coding it does not decode,
    a `deflate` stream cut short and `br` without Brotli installed (both refused by
    aiohttp's parser with a plain 400 before the app runs), and a 256 MiB gzip bomb, which
    costs the process no memory near its size."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "AUTH_ENCRYPTION_SECRET": "log-test-secret",
        "JWT_SECRET_KEY": TEST_SECRET,
    }
    packed = bomb(256 << 20)
    with serving(env, tmp_path) as gateway:

        async def answer(path: str, coding: str, body: bytes, who: str | None = TOKEN) -> Answer:
            head, payload = await raw_answer(
                gateway.port, request_bytes(path, coding, body, token=who)
            )
            return Answer(head, payload)

        async def exchanges() -> None:
            read = await answer("/rpc", "gzip", NOT_GZIP)
            assert read.error(400)["message"] == "request body is not valid gzip"
            unread = await answer("/rpc", "gzip", NOT_GZIP, who=None)
            assert unread.error(401)
            nowhere = await answer("/no/such/route", "deflate", NOT_DEFLATE)
            assert nowhere.error(404)
            assert (await answer("/rpc", "foo", PING)).error(415)
            cut = await answer("/rpc", "deflate", zlib.compress(PING)[:-4])
            assert cut.status == 400 and cut.body == b"deflate", cut.head
            if not HAS_BROTLI:
                refused = await answer("/rpc", "br", PING)
                assert refused.status == 400 and b"brotli" in refused.body, refused.head
            assert gateway.process is not None
            before = status_kib(gateway.process.pid, "VmHWM")
            assert (await answer("/rpc", "gzip", packed)).status == 413
            assert (await answer("/upstreams", "gzip", packed)).error(413)
            assert status_kib(gateway.process.pid, "VmHWM") - before < 64 * 1024

        asyncio.run(exchanges())
        assert status_of(f"{gateway.url}/health") == 200
    lines = log_lines(gateway.log_path)
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    assert not [line for line in lines if "exception" in line], lines
    malformed = [line for line in lines if "malformed HTTP request" in line["event"]]
    assert all(line["level"] == "info" for line in malformed), malformed
    events = [line["event"] for line in malformed]
    refused = [e for e in events if e == "malformed HTTP request body refused"]
    discarded = [e for e in events if e.startswith("malformed HTTP request body discarded")]
    assert len(refused) == 1 and len(discarded) == 2, events
    assert len(events) == 4 + (0 if HAS_BROTLI else 1), events
    assert "gzip" in discarded[0] and "deflate" in discarded[1], events
