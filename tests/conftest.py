"""Shared fixtures: real PostgreSQL, Redis and SQLite, never mocks.

Under `CI=true` an unreachable service fails the run; on a laptop it skips with the reason.
PostgreSQL tests get a schema of their own per test, so runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.settings import Settings
from tests.upstreams.processes import free_port as free_port

pytest_plugins = [
    "tests.upstreams.fixtures",
    "tests.support.gunicorn_process",
    "tests.support.npm",
    "tests.tracing.receivers",
]

POSTGRES_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, why: object) -> None:
    """Fail under CI, skip elsewhere, always naming the service and the reason."""
    message = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
    pytest.skip(message)


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(scope="session")
def postgres_base_url() -> str:
    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg2.Error as exc:
        unavailable("PostgreSQL", str(exc).strip())
    return POSTGRES_URL


@contextmanager
def fresh_schema(postgres_base_url: str) -> Iterator[str]:
    """A DATABASE_URL pointing at a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres_base_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(postgres_base_url, schema)
    finally:
        drop_schema(conn, schema)
        conn.close()


def drop_schema(conn: Any, schema: str) -> None:
    """Drop the schema; a connection a test left inside a transaction on one of its tables
    (its event loop no longer runs to end it) is ended first, rather than waited on forever."""
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = '5s'")
        try:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
            return
        except psycopg2.errors.LockNotAvailable:
            pass
        cur.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
            " JOIN pg_class c ON c.oid = l.relation"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND l.pid <> pg_backend_pid()",
            (schema,),
        )
        cur.execute("SET lock_timeout = 0")
        cur.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A DATABASE_URL pointing at a fresh schema, dropped after the test."""
    with fresh_schema(postgres_base_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both stores."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def cache_prefix() -> str:
    """A key namespace of this test's own, so tests sharing one Redis never collide."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def unused_port() -> AsyncIterator[int]:
    yield free_port()


# --- in-process gateways ---------------------------------------------------------------------

TEST_SECRET = "test-secret-with-enough-entropy-0123456789abcdef"
RUN_MINUTES = 24 * 60
"""The life of a test token: longer than any run of the suite, so one made at import time
does not expire before the tests that use it run."""


def make_token(
    subject: str = "tester", scopes: tuple[str, ...] = (), minutes: float = RUN_MINUTES
) -> str:
    from gateway_plugins.jwt_tokens import create_token

    return create_token(TEST_SECRET, subject, list(scopes), minutes)


def bearer(token: str) -> dict[str, str]:
    """The headers that present `token`."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user_headers() -> dict[str, str]:
    return bearer(make_token("user"))


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return bearer(make_token("root", ("admin",)))


@pytest.fixture
def base_settings(sqlite_url: str, cache_prefix: str) -> Settings:
    return Settings(
        database_url=sqlite_url,
        cache_type="memory",
        cache_prefix=cache_prefix,
        jwt_secret_key=TEST_SECRET,
        auth_encryption_secret="test-encryption-secret",
        tool_timeout=2.0,
        log_format="json",
        catalogue_poll_interval=0.2,
    )


Client = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def gateway(base_settings: Settings) -> AsyncIterator[GatewayFactory]:
    """Start in-process gateways: `await gateway(plugins=[module], **setting_overrides)`."""
    from gateway.app import build_app
    from gateway.plugins import Plugins, build_plugin_manager

    clients: list[Client] = []

    async def start(plugins: Iterable[object] = (), **overrides: object) -> Client:
        settings = base_settings.replace(**overrides)
        pm = build_plugin_manager(settings.plugins_blocked)
        for plugin in plugins:
            pm.register(plugin, name=getattr(plugin, "__name__", repr(plugin)))
        app = build_app(settings, Plugins(pm))
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()


async def rpc(
    client: Client,
    method: str,
    params: object = None,
    headers: dict[str, str] | None = None,
    request_id: object = 1,
) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    response = await client.post("/rpc", json=message, headers=headers)
    body: dict[str, Any] = await response.json()
    return body


async def error_message(response: ClientResponse, status: int) -> str:
    """The message of a JSON error answer, which must have `status`."""
    assert response.status == status, await response.text()
    message: str = (await response.json())["error"]["message"]
    return message
