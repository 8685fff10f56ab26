"""Secrets stay secret: a gateway under gunicorn at LOG_LEVEL=debug never logs one, makes its
key files once (mode 0600) however many workers start together, and keeps its SQLite file
to its owner."""

from __future__ import annotations

import base64
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import structlog

from gateway.logconfig import REDACTED, redact_secrets, short_hash
from gateway_plugins.jwt_tokens import create_token
from tests.support.gunicorn_process import StartGunicorn
from tests.transports.conftest import init_message
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

pytestmark = pytest.mark.timeout(120)

HEADER_VALUE = "header-credential-5f1c9e"
URL_PASSWORD = "url-password-7d2a40"
VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"


def test_fields_named_like_secrets_are_redacted_and_others_kept() -> None:
    event = {"event": "x", "authorization": "Bearer abc", "jwt_secret": "s", "key": "cache:1"}
    assert redact_secrets(None, "info", event) == {
        "event": "x",
        "authorization": REDACTED,
        "jwt_secret": REDACTED,
        "key": "cache:1",
    }


def test_a_session_id_is_logged_as_a_short_hash_that_reveals_none_of_it() -> None:
    session = "0123456789abcdef0123456789abcdef"
    assert len(short_hash(session)) == 8
    assert short_hash(session) not in session
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("opened", session=short_hash(session))
    assert session[:8] not in str(logs)


@pytest.fixture
def upstream() -> Iterator[RunningUpstream]:
    running = start_own()
    yield running
    stop_upstream(running)


def mcp_post(base: str, body: dict[str, Any], headers: dict[str, str]) -> httpx2.Response:
    response = httpx2.post(
        f"{base}/mcp",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Accept": ACCEPT, **headers},
        timeout=15.0,
    )
    assert response.status_code in (200, 202), response.text
    return response


def answer(response: httpx2.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        result: dict[str, Any] = orjson.loads(data[-1])
        return result
    reply: dict[str, Any] = response.json()
    return reply


def one_session(base: str, token: str, upstream: RunningUpstream) -> str:
    """Register an upstream with a header credential, initialize, call a tool, DELETE;
    the session id."""
    auth = {"Authorization": f"Bearer {token}"}
    registered = httpx2.post(
        f"{base}/upstreams",
        json={
            "name": "own",
            "url": upstream.url,
            "transport": "streamable-http",
            "headers": {"X-Api-Key": HEADER_VALUE},
        },
        headers=auth,
        timeout=15.0,
    )
    assert registered.status_code == 201, registered.text
    initialize = init_message(VERSION)
    session = mcp_post(base, initialize, auth).headers["Mcp-Session-Id"]
    in_session = {**auth, "Mcp-Session-Id": session, "MCP-Protocol-Version": VERSION}
    mcp_post(base, {"jsonrpc": "2.0", "method": "notifications/initialized"}, in_session)
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "own__echo", "arguments": {"text": "hello"}},
    }
    assert "hello" in str(answer(mcp_post(base, call, in_session))["result"])
    for number, method in enumerate(("tools/list", "resources/list", "prompts/list"), 3):
        listing = {"jsonrpc": "2.0", "id": number, "method": method}
        assert "result" in answer(mcp_post(base, listing, in_session)), method
    deleted = httpx2.delete(f"{base}/mcp", headers=in_session, timeout=15.0)
    assert deleted.status_code in (200, 204), deleted.text
    return session


def url_credentials_are_taken_out_of_the_url(
    base: str, token: str, upstream: RunningUpstream
) -> None:
    """Register an upstream whose URL holds user:password; what `GET /upstreams` shows."""
    auth = {"Authorization": f"Bearer {token}"}
    # The same server again would clash with `own` over its resources.
    assert httpx2.delete(f"{base}/upstreams/own", headers=auth, timeout=15.0).status_code == 204
    with_credentials = upstream.url.replace("://", f"://admin:{URL_PASSWORD}@", 1)
    registered = httpx2.post(
        f"{base}/upstreams",
        json={"name": "creds", "url": with_credentials, "transport": "streamable-http"},
        headers=auth,
        timeout=15.0,
    )
    assert registered.status_code == 201, registered.text
    listed = httpx2.get(f"{base}/upstreams", headers=auth, timeout=15.0)
    assert URL_PASSWORD not in listed.text and "admin:" not in listed.text
    (shown,) = [item for item in listed.json()["upstreams"] if item["name"] == "creds"]
    assert shown["url"] == upstream.url
    assert shown["headers"] == ["Authorization"]
    # A call through it sends the Basic header, at LOG_LEVEL=debug.
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "creds__echo", "arguments": {"text": "through"}},
    }
    called = httpx2.post(f"{base}/rpc", json=message, headers=auth, timeout=15.0)
    assert called.json()["result"]["isError"] is False, called.text


def a_token_is_revoked(base: str, token: str, revoked: str) -> None:
    """Revoke `revoked` through the API, and see it refused."""
    auth = {"Authorization": f"Bearer {token}"}
    response = httpx2.post(f"{base}/tokens/revoke", json={"token": revoked}, headers=auth)
    assert response.status_code == 200, response.text
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    # Revocation reaches the other workers within a second; give a busy machine three.
    deadline = time.monotonic() + 3
    while True:
        bearer = {"Authorization": f"Bearer {revoked}"}
        refused = httpx2.post(f"{base}/rpc", json=ping, headers=bearer)
        if refused.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refused.status_code == 401


@pytest.mark.cluster
def test_a_debug_log_of_a_whole_session_shows_no_secret_and_keys_are_made_once_0600(
    tmp_path: Path, gunicorn: StartGunicorn, upstream: RunningUpstream
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "JWT_SECRET_KEY": "",
        "AUTH_ENCRYPTION_SECRET": "",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
    }
    gateway = gunicorn(env, workers=2)
    jwt_file, encryption_file = tmp_path / "jwt_secret.key", tmp_path / "encryption.key"
    jwt_secret = jwt_file.read_text().strip()
    encryption_secret = encryption_file.read_text().strip()
    token = create_token(jwt_secret, "root", ["admin"], 5)

    session = one_session(gateway.url, token, upstream)
    url_credentials_are_taken_out_of_the_url(gateway.url, token, upstream)
    revoked = create_token(jwt_secret, "leaked", [], 5)
    a_token_is_revoked(gateway.url, token, revoked)
    # While the gateway runs, so that the -wal and -shm files exist.
    files = [tmp_path / name for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm")]
    assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600] * 3
    database = b"".join(file.read_bytes() for file in files)
    gateway.stop()

    output = gateway.log_path.read_text()
    assert '"level":"debug"' in output.replace(" ", "")
    basic = base64.b64encode(f"admin:{URL_PASSWORD}".encode()).decode()
    secrets = (jwt_secret, encryption_secret, token, revoked, HEADER_VALUE, URL_PASSWORD, basic)
    secrets += (session,)
    for secret in (*secrets, session[:8]):
        assert secret not in output, secret
    for name in (jwt_file, encryption_file):
        assert stat.S_IMODE(name.stat().st_mode) == 0o600
        assert output.count(f"generated into the key file {name}") == 1, output[-3000:]
    for secret in (jwt_secret, encryption_secret, HEADER_VALUE, URL_PASSWORD):
        assert secret.encode() not in database
