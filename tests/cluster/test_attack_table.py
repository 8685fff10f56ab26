"""The attack table of "safe to expose", run against live gateways: each attack that once
worked is refused, and each test is named after the refusal it proves.

Two gateways under gunicorn (one worker each, so the per-worker bounds count every request;
SQLite): `open_gw` without auth, bound to loopback, as a desktop install runs; `guarded`
with JWT, LOG_LEVEL=debug and small limits, serving our test upstream through URL
credentials and a secret header it requires. Beside them runs an upstream that misbehaves
on purpose (tests/upstreams/misbehaving.py). Every caller of `guarded` is a token subject of
its own, so one test's counts never reach another's bounds.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import jwt
import orjson
import pytest

from gateway_plugins.jwt_tokens import create_token
from tests.conftest import TEST_SECRET, error_message, free_port
from tests.support.gunicorn_process import ADMIN, GunicornGateway, gunicorn_env, start_together
from tests.support.proc import status_kib
from tests.transports.conftest import EventReader
from tests.upstreams.misbehaving import BODY_SECRET
from tests.upstreams.processes import (
    HERE,
    RunningUpstream,
    start_own,
    start_upstream,
    stop_upstream,
)

pytestmark = pytest.mark.timeout(180)

ENCRYPTION_SECRET = "attack-table-encryption-secret-6c0e"
HEADER_SECRET = "upstream-header-secret-1a7f"
URL_USER, URL_PASSWORD = "relay", "url-password-93b2"
LIMITS = {
    "MAX_SESSIONS_PER_SUBJECT": "5",
    "MAX_STREAMS_PER_SESSION": "2",
    "MAX_STREAMS_PER_SUBJECT": "4",
    "MAX_INFLIGHT_PER_SESSION": "4",
    "MAX_RESPONSE_BYTES": "65536",
    "RATE_LIMIT_PER_MINUTE": "1000",
    "UPSTREAM_DENY_CIDRS": "10.0.0.0/8",
    "MAX_UPSTREAM_RESPONSE_BYTES": "1048576",
    "MAX_SSE_LINE_BYTES": "262144",
}
ACCEPT_BOTH = "application/json, text/event-stream"
RATE_LIMITED, INVALID_REQUEST, INVALID_PARAMS = -32029, -32600, -32602


# --- the deployment -----------------------------------------------------------------------


@dataclass
class Deployed:
    open_gw: GunicornGateway
    guarded: GunicornGateway
    upstream: RunningUpstream
    misbehaving: RunningUpstream
    shown_secrets: list[str] = field(default_factory=list)
    """Every token and session id the tests used: none may appear in the debug log."""

    def token(self, *scopes: str, servers: tuple[str, ...] = ()) -> dict[str, str]:
        """The bearer header of a subject of its own."""
        subject = f"caller-{uuid.uuid4().hex[:8]}"
        token = create_token(TEST_SECRET, subject, scopes, 30, servers=servers)
        self.shown_secrets.append(token)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    workdir = tmp_path_factory.mktemp("attacks")
    upstream = start_own("--require-header", f"X-Api-Key={HEADER_SECRET}")
    misbehaving = start_upstream(HERE / "misbehaving.py")
    open_gw = GunicornGateway(
        gunicorn_env(f"sqlite:///{workdir / 'open.db'}", AUTH_REQUIRED="false"),
        free_port(),
        workdir,
        workers=1,
    )
    guarded_env = gunicorn_env(
        f"sqlite:///{workdir / 'guarded.db'}",
        AUTH_ENCRYPTION_SECRET=ENCRYPTION_SECRET,
        LOG_LEVEL="debug",
        TOOL_TIMEOUT="20",
        CATALOGUE_POLL_INTERVAL="0.5",
        **LIMITS,
    )
    guarded = GunicornGateway(guarded_env, free_port(), workdir, workers=1)
    try:
        start_together(open_gw, guarded)
        deployed = Deployed(open_gw, guarded, upstream, misbehaving)
        register_own(open_gw, upstream.url, {"X-Api-Key": HEADER_SECRET})
        with_credentials = upstream.url.replace("://", f"://{URL_USER}:{URL_PASSWORD}@", 1)
        register_own(guarded, with_credentials, {"X-Api-Key": HEADER_SECRET})
        for name in ("huge", "endless"):
            flooding = {"name": name, "url": f"{misbehaving.base_url}/{name}/mcp"}
            response = post_json(guarded.url, "/upstreams", flooding, ADMIN)
            assert response.status_code == 201, response.text
        yield deployed
    finally:
        for gateway in (guarded, open_gw):
            gateway.stop()
        for server in (misbehaving, upstream):
            stop_upstream(server)


def register_own(gateway: GunicornGateway, url: str, headers: dict[str, str]) -> None:
    body = {"name": "own", "url": url, "transport": "streamable-http", "headers": headers}
    response = httpx2.post(f"{gateway.url}/upstreams", json=body, headers=ADMIN, timeout=15.0)
    assert response.status_code == 201, response.text


# --- the client side ----------------------------------------------------------------------


def post_json(
    base: str, path: str, body: Any, headers: dict[str, str], timeout: float = 15.0
) -> httpx2.Response:
    sent = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, **headers}
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx2.post(f"{base}{path}", content=raw, headers=sent, timeout=timeout)


def error_of(response: httpx2.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def init_message(version: str = "2025-06-18", client_info: Any = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": client_info or {"name": "attacker", "version": "1"},
        },
    }


def open_session(
    deployed: Deployed, auth: dict[str, str], version: str = "2025-06-18"
) -> dict[str, str]:
    """An initialised session on `guarded`: the headers its later requests carry."""
    response = post_json(deployed.guarded.url, "/mcp", init_message(version), auth)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    deployed.shown_secrets.append(session)
    headers = {**auth, "Mcp-Session-Id": session, "MCP-Protocol-Version": version}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post_json(deployed.guarded.url, "/mcp", initialized, headers).status_code == 202
    return headers


def call(name: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def upstream_calls(upstream: RunningUpstream) -> int:
    stats = httpx2.get(f"{upstream.base_url}/admin/stats", timeout=5.0).json()
    return int(stats["tools_call"])


def listed(gateway: GunicornGateway, path: str) -> str:
    response = httpx2.get(f"{gateway.url}{path}", headers=ADMIN, timeout=15.0)
    assert response.status_code == 200, response.text
    return response.text


def seen_by_misbehaving(deployed: Deployed) -> list[dict[str, Any]]:
    reply = httpx2.get(f"{deployed.misbehaving.base_url}/admin/seen", timeout=5.0)
    requests: list[dict[str, Any]] = reply.json()["requests"]
    return requests


# --- DNS rebinding and cross-site requests --------------------------------------------------

REBOUND = {"Host": "evil.example", "Origin": "http://evil.example"}


def test_dns_rebinding_host_and_origin_on_mcp_get_421_and_no_session(deployed: Deployed) -> None:
    response = post_json(deployed.open_gw.url, "/mcp", init_message(), REBOUND)
    assert response.status_code == 421
    assert "mcp-session-id" not in response.headers
    assert "ALLOWED_HOSTS" in error_of(response)["message"]


def test_a_foreign_origin_with_a_loopback_host_gets_403_and_no_session(deployed: Deployed) -> None:
    response = post_json(
        deployed.open_gw.url, "/mcp", init_message(), {"Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert "mcp-session-id" not in response.headers
    assert error_of(response)["message"] == "Forbidden: Origin is not allowed"


@pytest.mark.parametrize("origin", ["http://evil.example", None])
def test_cross_site_text_plain_posts_run_no_tool_and_register_nothing(
    deployed: Deployed, origin: str | None
) -> None:
    gateway = deployed.open_gw
    headers = {"Content-Type": "text/plain"} | ({"Origin": origin} if origin else {})
    before = upstream_calls(deployed.upstream)
    attempts = [
        ("/rpc", call("own__echo", {"text": "pwned"})),
        ("/upstreams", {"name": "evil", "url": deployed.upstream.url}),
        ("/servers", {"id": "evil", "name": "evil", "tools": ["own__echo"]}),
    ]
    for path, body in attempts:
        response = httpx2.post(
            f"{gateway.url}{path}", content=orjson.dumps(body), headers=headers, timeout=15.0
        )
        assert response.status_code == (403 if origin else 415), (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
    assert upstream_calls(deployed.upstream) == before
    assert "evil" not in listed(gateway, "/upstreams")
    assert "evil" not in listed(gateway, "/servers")


# --- secrets at rest --------------------------------------------------------------------------


def test_secrets_at_rest_are_not_in_the_0600_database_and_url_credentials_are_not_shown(
    deployed: Deployed,
) -> None:
    shown = httpx2.get(f"{deployed.guarded.url}/upstreams/own", headers=ADMIN, timeout=15.0)
    assert shown.status_code == 200
    assert URL_PASSWORD not in shown.text and HEADER_SECRET not in shown.text
    assert shown.json()["url"] == deployed.upstream.url
    assert sorted(shown.json()["headers"]) == ["Authorization", "X-Api-Key"]
    echoed = post_json(deployed.guarded.url, "/rpc", call("own__echo", {"text": "hi"}), ADMIN)
    assert echoed.json()["result"]["isError"] is False, echoed.text

    database = Path(deployed.guarded.workdir / "guarded.db")
    files = [database, *(database.with_name(database.name + tail) for tail in ("-wal", "-shm"))]
    present = [file for file in files if file.exists()]
    assert database in present
    assert {stat.S_IMODE(file.stat().st_mode) for file in present} == {0o600}
    stored = b"".join(file.read_bytes() for file in present)
    basic = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode())
    for secret in (TEST_SECRET, ENCRYPTION_SECRET, HEADER_SECRET, URL_PASSWORD):
        assert secret.encode() not in stored, secret
    assert basic not in stored


# --- floods of sessions, batches and notifications ------------------------------------------


def test_a_session_flood_is_refused_past_max_sessions_per_subject_with_429(
    deployed: Deployed,
) -> None:
    auth = deployed.token()
    for _ in range(5):
        open_session(deployed, auth)
    refused = post_json(deployed.guarded.url, "/mcp", init_message(), auth)
    assert refused.status_code == 429
    assert "mcp-session-id" not in refused.headers
    error = error_of(refused)
    assert error["code"] == RATE_LIMITED
    assert "MAX_SESSIONS_PER_SUBJECT (5)" in error["message"]
    assert open_session(deployed, deployed.token())


def test_an_initialize_with_a_large_client_info_is_refused_with_32602_and_no_session(
    deployed: Deployed,
) -> None:
    big = {"name": "x" * 100_000, "version": "1"}
    response = post_json(
        deployed.guarded.url, "/mcp", init_message(client_info=big), deployed.token()
    )
    assert response.status_code == 400
    assert "mcp-session-id" not in response.headers
    error = error_of(response)
    assert error["code"] == INVALID_PARAMS
    assert "MAX_INITIALIZE_BYTES" in error["message"]


def tools_lists(count: int) -> bytes:
    return orjson.dumps([{"jsonrpc": "2.0", "id": n, "method": "tools/list"} for n in range(count)])


def test_a_batch_of_22310_tools_list_is_refused_with_413_before_running_any(
    deployed: Deployed,
) -> None:
    session = open_session(deployed, deployed.token(), version="2025-03-26")
    # 22,310 of them are over MAX_REQUEST_BYTES before they are over MAX_BATCH.
    for count, setting in ((22_310, "MAX_REQUEST_BYTES"), (101, "MAX_BATCH (100)")):
        response = post_json(deployed.guarded.url, "/mcp", tools_lists(count), session)
        assert response.status_code == 413, count
        assert error_of(response)["code"] == INVALID_REQUEST
        assert setting in error_of(response)["message"]


def test_a_batch_whose_answers_pass_max_response_bytes_runs_no_further_request(
    deployed: Deployed,
) -> None:
    session = open_session(deployed, deployed.token(), version="2025-03-26")
    big = [call("own__big", {"n": 20_000}, n) for n in range(10)]
    response = post_json(deployed.guarded.url, "/mcp", orjson.dumps(big), session)
    assert response.status_code == 200
    answers = response.json()
    assert len(answers) == 10
    assert len(response.content) < 65536 + 2 * 20_000
    refused = [a for a in answers if "error" in a]
    assert refused, "every request ran although the answers passed MAX_RESPONSE_BYTES"
    assert all("MAX_RESPONSE_BYTES" in a["error"]["message"] for a in refused)


def cancellations(count: int, start: int = 0) -> bytes:
    return orjson.dumps(
        [
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": n}}
            for n in range(start, start + count)
        ]
    )


def test_a_batch_of_13273_cancellations_is_refused_with_413(deployed: Deployed) -> None:
    session = open_session(deployed, deployed.token(), version="2025-03-26")
    # So many are over MAX_REQUEST_BYTES before they are over MAX_BATCH.
    for count, setting in ((13_273, "MAX_REQUEST_BYTES"), (101, "MAX_BATCH (100)")):
        response = post_json(deployed.guarded.url, "/mcp", cancellations(count), session)
        assert response.status_code == 413, count
        assert error_of(response)["code"] == INVALID_REQUEST
        assert setting in error_of(response)["message"]


def cancel_messages_since(deployed: Deployed, last_id: int) -> tuple[int, int]:
    """(the newest cache message id, how many after `last_id` announce a cancellation), read
    from the guarded gateway's SQLite file, where its database cache publishes."""
    database = deployed.guarded.workdir / "guarded.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        rows = connection.execute(
            "SELECT id, payload FROM cache_messages WHERE id > ?", (last_id,)
        ).fetchall()
        newest = connection.execute("SELECT COALESCE(MAX(id), 0) FROM cache_messages").fetchone()
    cancels = [row for row in rows if b'"cancel"' in bytes(row[1])]
    return int(newest[0]), len(cancels)


def test_cancellations_of_ids_running_nowhere_write_nothing_to_the_database(
    deployed: Deployed,
) -> None:
    session = open_session(deployed, deployed.token(), version="2025-03-26")
    newest, _ = cancel_messages_since(deployed, 0)
    for batch in range(3):
        response = post_json(deployed.guarded.url, "/mcp", cancellations(100, batch * 100), session)
        assert response.status_code == 202
    assert cancel_messages_since(deployed, newest)[1] == 0


def test_a_flood_of_notifications_counts_against_the_rate_limit_so_requests_get_32029(
    deployed: Deployed,
) -> None:
    session = open_session(deployed, deployed.token(), version="2025-03-26")
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    # The limit counts fixed one-minute windows; one may end while the batches go out, so
    # more are sent until a ping is refused: 1000 notifications fit in a window, and at
    # most one window ends in the few seconds this takes.
    for batch in range(25):
        response = post_json(deployed.guarded.url, "/mcp", cancellations(100, batch * 100), session)
        assert response.status_code == 202
        answer = post_json(deployed.guarded.url, "/mcp", ping, session).json()
        if "error" in answer:
            break
    assert 9 <= batch < 21, batch
    assert answer["error"]["code"] == RATE_LIMITED
    assert "1000 requests per minute" in answer["error"]["message"]


# --- streams and hanging calls --------------------------------------------------------------


async def test_streams_past_max_streams_per_session_and_per_subject_get_429(
    deployed: Deployed,
) -> None:
    auth = deployed.token()
    session = await asyncio.to_thread(open_session, deployed, auth)
    base = deployed.guarded.url
    get_headers = {**session, "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        held = [await http.get(f"{base}/mcp", headers=get_headers) for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        third = await http.get(f"{base}/mcp", headers=get_headers)
        assert "MAX_STREAMS_PER_SESSION (2)" in await error_message(third, 429)
        sse_headers = {**auth, "Accept": "text/event-stream"}
        held += [await http.get(f"{base}/sse", headers=sse_headers) for _ in range(2)]
        assert [r.status for r in held] == [200] * 4
        past = await http.get(f"{base}/sse", headers=sse_headers)
        assert past.status == 429
        error = (await past.json())["error"]
        assert error["code"] == RATE_LIMITED
        assert "MAX_STREAMS_PER_SUBJECT (4)" in error["message"]
        other = await http.get(
            f"{base}/sse", headers={**deployed.token(), "Accept": "text/event-stream"}
        )
        assert other.status == 200
        for response in (*held, other):
            response.close()


async def test_hanging_calls_on_one_legacy_connection_stop_at_max_inflight_and_others_are_served(
    deployed: Deployed,
) -> None:
    auth = deployed.token()
    base = deployed.guarded.url
    async with aiohttp.ClientSession() as http:
        stream = await http.get(f"{base}/sse", headers={**auth, "Accept": "text/event-stream"})
        reader = EventReader(stream)
        endpoint = f"{base}{(await reader.next()).data}"
        await http.post(endpoint, json=init_message("2024-11-05"), headers=auth)
        assert "result" in await reader.message()
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await http.post(endpoint, json=initialized, headers=auth)
        for n in range(10):
            sent = await http.post(
                endpoint, json=call("own__sleep", {"seconds": 30}, n), headers=auth
            )
            assert sent.status == 202
        refusals = [await reader.message() for _ in range(6)]
        assert {m["error"]["code"] for m in refusals} == {RATE_LIMITED}
        assert all("MAX_INFLIGHT_PER_SESSION (4)" in m["error"]["message"] for m in refusals)

        started = time.monotonic()
        other = await asyncio.to_thread(
            post_json, base, "/rpc", call("own__echo", {"text": "served"}), deployed.token()
        )
        assert other.json()["result"]["isError"] is False, other.text
        assert time.monotonic() - started < 10.0
        stream.close()


# --- upstream addresses and headers ---------------------------------------------------------


def refused_registration(deployed: Deployed, body: dict[str, Any], status: int) -> str:
    response = post_json(deployed.guarded.url, "/upstreams", body, ADMIN, timeout=30.0)
    assert response.status_code == status, response.text
    assert str(body["name"]) not in listed(deployed.guarded, "/upstreams")
    return str(error_of(response)["message"])


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/mcp", "169.254.0.0/16"),
        ("http://100.100.100.200/mcp", "100.100.100.200"),
        ("http://0.0.0.0:80/mcp", "0.0.0.0/8"),
        ("http://10.1.2.3/mcp", "UPSTREAM_DENY_CIDRS"),
    ],
)
def test_registering_an_internal_address_is_refused_with_422_naming_the_rule(
    deployed: Deployed, url: str, rule: str
) -> None:
    message = refused_registration(deployed, {"name": "internal", "url": url}, 422)
    assert "refused" in message and rule in message


def test_a_redirect_is_not_followed_so_the_credentials_stay_at_their_origin(
    deployed: Deployed,
) -> None:
    url = f"{deployed.misbehaving.base_url}/redirect/mcp"
    body = {"name": "redirecting", "url": url, "headers": {"X-Api-Key": HEADER_SECRET}}
    message = refused_registration(deployed, body, 502)
    assert "307" in message
    seen = seen_by_misbehaving(deployed)
    asked = [r for r in seen if r["path"] == "/redirect/mcp"]
    assert asked and asked[0]["headers"]["X-Api-Key"] == HEADER_SECRET
    assert not [r for r in seen if r["path"].startswith("/collect")]


def test_a_discovery_error_names_the_status_without_the_upstream_body(deployed: Deployed) -> None:
    body = {"name": "failing", "url": f"{deployed.misbehaving.base_url}/error/mcp"}
    message = refused_registration(deployed, body, 502)
    assert "500" in message
    assert BODY_SECRET not in message and "10.0.0.5" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Token", "a\r\nX-Injected: 1"),
        ("X-Token", "a\nb"),
        ("X-Token", "a\x00b"),
        ("Host", "internal.example"),
        ("Content-Length", "0"),
    ],
)
def test_an_upstream_header_with_cr_lf_nul_or_host_or_content_length_is_refused_with_422(
    deployed: Deployed, name: str, value: str
) -> None:
    body = {"name": "splitting", "url": deployed.upstream.url, "headers": {name: value}}
    message = refused_registration(deployed, body, 422)
    assert repr(name) in message


# --- bodies, tokens and routes --------------------------------------------------------------


def test_json_nested_1000_deep_on_mcp_gets_400_naming_max_json_depth(deployed: Deployed) -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + b"[" * 1000
    deep += b"]" * 1000 + b"}}"
    for gateway, auth in ((deployed.guarded, deployed.token()), (deployed.open_gw, {})):
        response = post_json(gateway.url, "/mcp", deep, auth)
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == INVALID_REQUEST
        assert "MAX_JSON_DEPTH (64)" in error["message"]


def test_a_token_expiring_in_9999_is_refused_with_401_naming_max_token_lifetime(
    deployed: Deployed,
) -> None:
    now = int(time.time())
    claims = {"sub": "forever", "iat": now, "exp": 253402300799, "jti": uuid.uuid4().hex}
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    deployed.shown_secrets.append(token)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    response = post_json(deployed.guarded.url, "/rpc", ping, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "MAX_TOKEN_LIFETIME" in error_of(response)["message"]


def test_a_revoked_token_is_refused_with_401(deployed: Deployed) -> None:
    auth = deployed.token()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert post_json(deployed.guarded.url, "/rpc", ping, auth).status_code == 200
    token = auth["Authorization"].removeprefix("Bearer ")
    revoked = post_json(deployed.guarded.url, "/tokens/revoke", {"token": token}, ADMIN)
    assert revoked.status_code == 200, revoked.text
    refused = post_json(deployed.guarded.url, "/rpc", ping, auth)
    assert refused.status_code == 401
    assert error_of(refused)["message"] == "token has been revoked"


def test_metrics_with_a_token_limited_to_one_virtual_server_get_403(deployed: Deployed) -> None:
    server = {"id": "support", "name": "Support", "tools": ["own__echo"]}
    created = post_json(deployed.guarded.url, "/servers", server, ADMIN)
    assert created.status_code == 201, created.text
    limited = deployed.token(servers=("support",))
    response = httpx2.get(f"{deployed.guarded.url}/metrics", headers=limited, timeout=15.0)
    assert response.status_code == 403
    assert "own" not in response.text
    scoped = httpx2.get(
        f"{deployed.guarded.url}/metrics", headers=deployed.token("metrics"), timeout=15.0
    )
    assert scoped.status_code == 200


def test_well_known_paths_answer_without_a_token(deployed: Deployed) -> None:
    for path in (
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
    ):
        response = httpx2.get(f"{deployed.guarded.url}{path}", timeout=15.0)
        assert response.status_code != 401, path
        assert response.status_code in (200, 404), path
        assert response.headers["content-type"].startswith("application/json")
    assert httpx2.get(f"{deployed.guarded.url}/upstreams", timeout=15.0).status_code == 401


# --- what an upstream sends -----------------------------------------------------------------


def worker_peak_mib(gateway: GunicornGateway) -> float:
    """The highest resident memory the gateway's one worker has had (VmHWM), in MiB."""
    assert gateway.process is not None
    master = gateway.process.pid
    (worker,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return status_kib(int(worker), "VmHWM") / 1024


@pytest.mark.parametrize(
    ("upstream", "setting"),
    [("huge", "MAX_UPSTREAM_RESPONSE_BYTES"), ("endless", "MAX_SSE_LINE_BYTES")],
)
def test_an_upstream_answering_512_mb_or_an_endless_sse_line_is_cut_off_naming_the_limit(
    deployed: Deployed, upstream: str, setting: str
) -> None:
    started = time.monotonic()
    flood = call(f"{upstream}__flood", {"mb": 512})
    response = post_json(deployed.guarded.url, "/rpc", flood, deployed.token(), timeout=60.0)
    assert response.status_code == 200
    assert len(response.content) < 65536
    result = response.json()["result"]
    assert result["isError"] is True
    assert setting in result["content"][0]["text"]
    assert time.monotonic() - started < 20.0
    assert worker_peak_mib(deployed.guarded) < 400
    echoed = post_json(deployed.guarded.url, "/rpc", call("own__echo", {"text": "on"}), ADMIN)
    assert echoed.json()["result"]["isError"] is False


# --- the debug log, read once every attack above has run -----------------------------------


def test_the_debug_log_of_every_attack_above_holds_no_secret(deployed: Deployed) -> None:
    session = open_session(deployed, deployed.token())
    listed_tools = post_json(
        deployed.guarded.url, "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session
    )
    assert "own__echo" in listed_tools.text
    log = deployed.guarded.log_path.read_text(errors="replace")
    assert '"level":"debug"' in log.replace(" ", "")
    basic = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    secrets = [TEST_SECRET, ENCRYPTION_SECRET, HEADER_SECRET, URL_PASSWORD, basic]
    secrets += [ADMIN["Authorization"].removeprefix("Bearer ")]
    for secret in [*secrets, *deployed.shown_secrets]:
        assert secret not in log, secret
