"""What the store tests share: one open `store` per test on SQLite and PostgreSQL, records to
write into it, and a way to read its tables behind its back."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from gateway.contracts import ToolDef
from gateway.store import Features, Offered, Store, ToolRecord, UpstreamRecord, open_store
from gateway.store.base import SQLStore

SECRET = "store-test-secret"


def upstream(name: str = "a", **changes: Any) -> UpstreamRecord:
    fields: dict[str, Any] = {
        "name": name,
        "transport": "streamable_http",
        "url": f"http://{name}.example/mcp",
        "prefix": name,
    }
    fields.update(changes)
    return UpstreamRecord(**fields)


def changed(record: Offered, **changes: Any) -> Offered:
    """`record` with changes to its own fields, or else to its definition's."""
    own = {f.name for f in dataclasses.fields(record)}
    inner = {key: value for key, value in changes.items() if key not in own}
    mine = {key: value for key, value in changes.items() if key in own}
    definition = dataclasses.replace(record.definition, **inner)
    return dataclasses.replace(record, definition=definition, **mine)


def tool(upstream_name: str, original: str, **changes: Any) -> ToolRecord:
    definition = ToolDef(
        name=original,
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    )
    record = ToolRecord(
        name=f"{upstream_name}__{original}", upstream=upstream_name, definition=definition
    )
    return changed(record, **changes)


async def opened(database_url: str, secret: str = SECRET, secrets_dir: Path | None = None) -> Store:
    store = open_store(database_url, secret, secrets_dir)
    await store.start()
    return store


def raw_rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Read the database behind the store's back, as an operator with a SQL shell would."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(sql).fetchall())
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await opened(database_url)
    try:
        yield store
    finally:
        await store.close()


def miss_the_next_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store's own conflict check skips its next run, as when a racing writer commits
    between the check and the insert; the list names each upstream the check was asked about."""
    real_check = SQLStore._check_new_upstream
    checks: list[str] = []

    async def miss_the_first_time(
        conn: Any, record: UpstreamRecord, tools: Any, offer: Features
    ) -> None:
        checks.append(record.name)
        if len(checks) > 1:
            await real_check(conn, record, tools, offer)

    monkeypatch.setattr(SQLStore, "_check_new_upstream", staticmethod(miss_the_first_time))
    return checks
