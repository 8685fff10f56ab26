"""Schema migrations: ordered, applied once, and safe when many processes start together."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from gateway.contracts import PromptDef, ResourceDef
from gateway.store import Features, PromptRecord, ResourceRecord, ServerRecord, open_store
from gateway.store.migrations import CREATE_SCHEMA_MIGRATIONS, MIGRATIONS
from tests.store.conftest import raw_rows

PROCESSES = 4

# Each process waits for the same wall-clock moment, so all four open the store together
# instead of one after another as their interpreters finish starting.
STARTER = """
import asyncio, sys, time
from gateway.keyfile import ENCRYPTION_KEY_FILE, default_secrets_dir
from gateway.store import open_store
from gateway.store.connections import ENCRYPTION_KEY_SECRET

async def main(url: str, start_at: float) -> None:
    await asyncio.sleep(max(0.0, start_at - time.time()))
    store = open_store(url, "")
    await store.start()
    try:
        path = default_secrets_dir(url) / ENCRYPTION_KEY_FILE
        print(await store.secret_from_file(ENCRYPTION_KEY_SECRET, path))
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""

VERSIONS = [migration.version for migration in MIGRATIONS]


def start_stores_in_processes(database_url: str, cwd: Path) -> list[str]:
    """Start the store in separate interpreters at one moment; return each one's output,
    its key on the last line."""
    start_at = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", STARTER, database_url, str(start_at)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    # Wait for every child before judging any, so none outlives the test's database.
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    return [out.strip() for out, _ in outputs]


def assert_one_key_made_once(outputs: list[str]) -> None:
    """Every process ends with the same key, and exactly one says it generated it."""
    assert len({output.splitlines()[-1] for output in outputs}) == 1
    assert sum("generated into the key file" in output for output in outputs) == 1


def test_migrations_are_numbered_one_up_without_gaps() -> None:
    assert VERSIONS == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.description and m.statements for m in MIGRATIONS)


def test_every_migration_renders_for_both_dialects() -> None:
    for migration in MIGRATIONS:
        for dialect in ("sqlite", "postgresql"):
            assert all("{" not in statement for statement in migration.sql(dialect))


@pytest.mark.cluster
def test_four_processes_migrating_one_sqlite_file_at_once_apply_each_version_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    assert_one_key_made_once(start_stores_in_processes(sqlite_url, tmp_path))
    rows = raw_rows(sqlite_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [version for (version,) in rows] == VERSIONS
    assert raw_rows(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.cluster
def test_four_processes_migrating_one_postgres_schema_at_once_apply_each_version_once(
    postgres_url: str, tmp_path: Path
) -> None:
    assert_one_key_made_once(start_stores_in_processes(postgres_url, tmp_path))
    rows = raw_rows(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [version for (version,) in rows] == VERSIONS


async def test_restarting_a_store_applies_nothing_again(database_url: str) -> None:
    for _ in range(2):
        store = open_store(database_url, "secret")
        await store.start()
        await store.close()
    before = raw_rows(database_url, "SELECT version, applied_at FROM schema_migrations")

    store = open_store(database_url, "secret")
    await store.start()
    await store.close()

    assert raw_rows(database_url, "SELECT version, applied_at FROM schema_migrations") == before
    assert [version for version, _ in before] == VERSIONS


def create_old_database(database_url: str, version: int) -> None:
    """Build the schema an older gateway left behind, with an upstream and a tool in it,
    without going through today's store."""
    dialect = "sqlite" if database_url.startswith("sqlite:") else "postgresql"
    statements = [CREATE_SCHEMA_MIGRATIONS]
    for migration in MIGRATIONS[:version]:
        statements += migration.sql(dialect)
        statements.append(
            "INSERT INTO schema_migrations (version, description, applied_at) "
            f"VALUES ({migration.version}, 'applied by an older gateway', 0)"
        )
    statements += [
        "INSERT INTO upstreams (name, transport, url, prefix, created_at, updated_at) "
        "VALUES ('old', 'streamable_http', 'http://old.example/mcp', 'old', 1, 1)",
        "INSERT INTO tools (name, upstream, original_name, input_schema, enabled) "
        "VALUES ('old__echo', 'old', 'echo', '{\"type\": \"object\"}', FALSE)",
    ]
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as lite, lite:
            for statement in statements:
                lite.execute(statement)
        return
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "old_version", [1, VERSIONS[-2]], ids=["from-version-1", "from-the-previous-version"]
)
async def test_an_older_database_is_brought_up_to_date_keeping_its_catalogue(
    database_url: str, old_version: int
) -> None:
    create_old_database(database_url, old_version)

    store = open_store(database_url, "secret")
    await store.start()
    try:
        data = await store.load_catalogue()
        assert [u.name for u in data.upstreams] == ["old"]
        assert [(t.name, t.upstream, t.enabled) for t in data.tools] == [
            ("old__echo", "old", False)
        ]
        assert (data.resources, data.templates, data.prompts, data.servers) == ([], [], [], [])

        # The new tables work with, and cascade from, the rows the old gateway wrote.
        old = data.upstreams[0]
        await store.update_upstream(
            old,
            features=Features(
                resources=[
                    ResourceRecord(upstream="old", definition=ResourceDef("file:///old", "old"))
                ],
                prompts=[PromptRecord("old__hi", upstream="old", definition=PromptDef("hi"))],
            ),
        )
        await store.create_server(ServerRecord(id="s1", name="Old", tools=("old__echo",)))
        assert [r.definition.uri for r in await store.list_resources()] == ["file:///old"]
        assert await store.delete_upstream("old") is True
        assert (await store.list_resources(), await store.list_prompts()) == ([], [])
        assert [s.id for s in await store.list_servers()] == ["s1"]
    finally:
        await store.close()
    rows = raw_rows(database_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [version for (version,) in rows] == VERSIONS


async def test_postgres_schema_from_the_url_holds_every_table(postgres_url: str) -> None:
    schema = postgres_url.rsplit("%3D", 1)[1]
    tables = {
        "schema_migrations",
        "upstreams",
        "tools",
        "secrets",
        "meta",
        "cache_entries",
        "cache_messages",
        "resources",
        "resource_templates",
        "prompts",
        "servers",
        "revoked_tokens",
        "tool_overrides",
        "config_managed",
        "config_lease",
        "config_applied",
        "roles",
        "managed_tokens",
    }
    store = open_store(postgres_url, "secret")
    await store.start()
    await store.close()
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
            assert {name for (name,) in cur.fetchall()} == tables
    finally:
        conn.close()
