"""A request aiohttp's HTTP parser refuses is the client's fault: the gateway's log shows
one INFO line with the reason, not an ERROR with a traceback, and it keeps serving."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson

from tests.support.gateway_process import serving, status_of

MALFORMED = [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: bogus\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Name: x\r\n\r\n",
]


def answer_of(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        return conn.recv(65536)


def test_requests_the_parser_refuses_are_one_info_line_each_without_traceback(
    tmp_path: Path,
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "AUTH_ENCRYPTION_SECRET": "log-test-secret",
        "JWT_SECRET_KEY": "log-test-jwt-secret-0123456789abcdef0123456789abcdef",
    }
    with serving(env, tmp_path) as gateway:
        for request in MALFORMED:
            answer = answer_of(gateway.port, request)
            assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert status_of(f"{gateway.url}/health") == 200
    lines = [orjson.loads(line) for line in gateway.log_path.read_text().splitlines() if line]
    refused = [line for line in lines if "malformed HTTP request" in line["event"]]
    assert len(refused) == len(MALFORMED), lines
    assert all(line["level"] == "info" and "exception" not in line for line in refused)
    assert not [line for line in lines if "Error handling request" in line["event"]]
