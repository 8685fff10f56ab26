"""The SQL store on SQLite and PostgreSQL: catalogue writes, conflicts, versions, encryption,
secrets and how failures are reported."""

from __future__ import annotations

import asyncio
import re
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.keyfile import ENCRYPTION_KEY_FILE
from gateway.store import (
    Conflict,
    NotFound,
    ServerRecord,
    Store,
    StoreError,
    Unstorable,
    open_store,
)
from gateway.store.connections import ENCRYPTION_KEY_SECRET
from tests.conftest import free_port
from tests.store.conftest import SECRET, miss_the_next_check, opened, raw_rows, tool, upstream

# --- upstreams and tools -------------------------------------------------------------------


async def test_create_upstream_round_trips_every_field(store: Store) -> None:
    record = upstream("a", headers={"Authorization": "Bearer t0k3n"}, builtin=True)
    echo = tool(
        "a",
        "echo",
        description="Echo text",
        title="Echo",
        output_schema={"type": "object"},
        annotations={"readOnlyHint": True},
        enabled=False,
        cache_ttl=2.5,
        rate_limit=10,
    )
    await store.create_upstream(record, [echo, tool("a", "add")])

    got = await store.get_upstream("a")
    assert got is not None
    assert (got.name, got.transport, got.url, got.prefix) == (
        "a",
        record.transport,
        record.url,
        "a",
    )
    assert got.headers == {"Authorization": "Bearer t0k3n"}
    assert got.builtin is True
    assert got.created_at > 0 and got.updated_at == got.created_at
    assert await store.list_upstreams() == [got]
    assert await store.get_tool("a__echo") == echo
    assert [t.name for t in await store.list_tools()] == ["a__add", "a__echo"]


async def test_get_of_missing_records_returns_none(store: Store) -> None:
    assert await store.get_upstream("nope") is None
    assert await store.get_tool("nope") is None


async def test_create_upstream_with_existing_name_raises_conflict_and_writes_nothing(
    store: Store,
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    version = await store.catalogue_version()

    with pytest.raises(Conflict, match="upstream 'a' already exists"):
        await store.create_upstream(upstream("a", url="http://other"), [tool("a", "other")])

    assert (await store.get_upstream("a")).url == "http://a.example/mcp"  # type: ignore[union-attr]
    assert [t.name for t in await store.list_tools()] == ["a__echo"]
    assert await store.catalogue_version() == version


async def test_create_upstream_with_clashing_tool_name_names_both_owners_and_writes_nothing(
    store: Store,
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    version = await store.catalogue_version()
    clashing = tool("b", "echo", name="a__echo")

    with pytest.raises(Conflict) as caught:
        await store.create_upstream(upstream("b"), [tool("b", "add"), clashing])

    assert str(caught.value) == (
        "tool name 'a__echo' from upstream 'b' clashes with the tool of upstream 'a'"
    )
    assert await store.get_upstream("b") is None
    assert await store.get_tool("b__add") is None
    assert (await store.get_tool("a__echo")).upstream == "a"  # type: ignore[union-attr]
    assert await store.catalogue_version() == version


async def test_create_upstream_with_the_same_tool_twice_raises_conflict(store: Store) -> None:
    with pytest.raises(Conflict, match="appears twice in upstream 'a'"):
        await store.create_upstream(upstream("a"), [tool("a", "echo"), tool("a", "echo")])
    assert await store.list_upstreams() == []


async def test_racing_creates_of_one_tool_name_have_exactly_one_winner(
    database_url: str,
) -> None:
    first, second = await opened(database_url), await opened(database_url)
    try:
        results = await asyncio.gather(
            first.create_upstream(upstream("a"), [tool("a", "x", name="shared")]),
            second.create_upstream(upstream("b"), [tool("b", "x", name="shared")]),
            return_exceptions=True,
        )
        conflicts = [r for r in results if isinstance(r, Conflict)]
        assert len(conflicts) == 1 and results.count(None) == 1, results
        assert "tool name 'shared'" in str(conflicts[0])
        assert len(await first.list_upstreams()) == 1
    finally:
        await first.close()
        await second.close()


async def test_unique_violation_from_the_database_still_names_both_owners(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose own check missed a racing commit hits the unique index instead."""
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    checks = miss_the_next_check(monkeypatch)

    with pytest.raises(Conflict) as caught:
        await store.create_upstream(upstream("b"), [tool("b", "echo", name="a__echo")])

    assert type(caught.value) is Conflict
    assert "'a__echo' from upstream 'b' clashes with the tool of upstream 'a'" in str(caught.value)
    assert checks == ["b", "b"]
    assert await store.get_upstream("b") is None


async def test_update_upstream_keeps_settings_of_tools_whose_name_survives(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo"), tool("a", "gone")])
    await store.update_tool("a__echo", {"enabled": False, "cache_ttl": 30.0, "rate_limit": 5})
    created = await store.get_upstream("a")

    await store.update_upstream(
        upstream("a", url="http://moved/mcp", headers={"X-Key": "k"}),
        [tool("a", "echo", description="new text"), tool("a", "fresh", enabled=False)],
    )

    updated = await store.get_upstream("a")
    assert updated is not None and created is not None
    assert updated.url == "http://moved/mcp" and updated.headers == {"X-Key": "k"}
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    echo = await store.get_tool("a__echo")
    assert echo is not None
    assert (echo.definition.description, echo.enabled, echo.cache_ttl, echo.rate_limit) == (
        "new text",
        False,
        30.0,
        5,
    )
    fresh = await store.get_tool("a__fresh")
    assert fresh is not None and fresh.enabled is False
    assert await store.get_tool("a__gone") is None


async def test_update_upstream_without_tools_leaves_its_tools_alone(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    await store.update_upstream(upstream("a", url="http://moved/mcp"))
    assert [t.name for t in await store.list_tools()] == ["a__echo"]


async def test_update_upstream_with_tool_clashing_with_another_upstream_writes_nothing(
    store: Store,
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    await store.create_upstream(upstream("b"), [tool("b", "add")])
    version = await store.catalogue_version()

    with pytest.raises(Conflict, match=r"'a__echo' from upstream 'b' clashes with .* upstream 'a'"):
        await store.update_upstream(
            upstream("b", url="http://changed"), [tool("b", "echo", name="a__echo")]
        )

    assert (await store.get_upstream("b")).url == "http://b.example/mcp"  # type: ignore[union-attr]
    assert [t.name for t in await store.list_tools()] == ["a__echo", "b__add"]
    assert await store.catalogue_version() == version


async def test_update_of_missing_upstream_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="upstream 'ghost' does not exist"):
        await store.update_upstream(upstream("ghost"), [])


async def test_delete_upstream_removes_its_tools(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    await store.create_upstream(upstream("b"), [tool("b", "echo")])

    assert await store.delete_upstream("a") is True

    assert await store.get_upstream("a") is None
    assert [t.name for t in await store.list_tools()] == ["b__echo"]


async def test_delete_of_missing_upstream_returns_false_and_keeps_the_version(
    store: Store,
) -> None:
    version = await store.catalogue_version()
    assert await store.delete_upstream("ghost") is False
    assert await store.catalogue_version() == version


async def test_update_tool_changes_settings_and_returns_the_record(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])

    changed = await store.update_tool("a__echo", {"enabled": False, "rate_limit": 3})

    assert (changed.enabled, changed.rate_limit, changed.cache_ttl) == (False, 3, None)
    assert await store.get_tool("a__echo") == changed
    cleared = await store.update_tool("a__echo", {"rate_limit": None, "cache_ttl": 1.5})
    assert (cleared.rate_limit, cleared.cache_ttl) == (None, 1.5)


async def test_update_tool_refuses_fields_other_than_its_settings(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    with pytest.raises(ValueError, match="description"):
        await store.update_tool("a__echo", {"description": "no"})


async def test_update_of_missing_tool_raises_not_found_and_keeps_the_version(
    store: Store,
) -> None:
    version = await store.catalogue_version()
    with pytest.raises(NotFound, match="tool 'ghost' does not exist"):
        await store.update_tool("ghost", {"enabled": False})
    assert await store.catalogue_version() == version


# --- catalogue version and consistent reads --------------------------------------------------


async def test_every_catalogue_write_increments_the_version(store: Store) -> None:
    versions = [await store.catalogue_version()]
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    versions.append(await store.catalogue_version())
    await store.update_upstream(upstream("a", url="http://moved"))
    versions.append(await store.catalogue_version())
    await store.update_tool("a__echo", {"enabled": False})
    versions.append(await store.catalogue_version())
    await store.delete_upstream("a")
    versions.append(await store.catalogue_version())

    assert versions == list(range(versions[0], versions[0] + 5))


async def test_load_catalogue_returns_version_upstreams_and_tools_together(
    store: Store,
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    await store.create_upstream(upstream("b", headers={"K": "v"}), [tool("b", "add")])

    data = await store.load_catalogue()

    assert data.version == await store.catalogue_version()
    assert data.upstreams == await store.list_upstreams()
    assert [u.headers for u in data.upstreams] == [{}, {"K": "v"}]
    assert data.tools == await store.list_tools()


async def test_load_catalogue_during_writes_always_matches_its_version(store: Store) -> None:
    """Each version has exactly one tool per upstream, so a torn read shows up as a mismatch."""

    async def write() -> None:
        for i in range(15):
            await store.create_upstream(upstream(f"u{i}"), [tool(f"u{i}", "echo")])

    async def read() -> list[tuple[int, int, int]]:
        seen = []
        for _ in range(30):
            data = await store.load_catalogue()
            seen.append((data.version, len(data.upstreams), len(data.tools)))
            await asyncio.sleep(0)
        return seen

    _, seen = await asyncio.gather(write(), read())
    first_version = seen[0][0] - seen[0][1]
    for version, upstream_count, tool_count in seen:
        assert upstream_count == tool_count == version - first_version


# --- encryption ------------------------------------------------------------------------------


async def test_headers_are_returned_decrypted_but_never_stored_in_plain_text(
    database_url: str, store: Store
) -> None:
    headers = {"Authorization": "Bearer very-secret-token"}
    await store.create_upstream(upstream("a", headers=headers), [])

    assert (await store.get_upstream("a")).headers == headers  # type: ignore[union-attr]
    [(stored,)] = raw_rows(database_url, "SELECT headers_enc FROM upstreams")
    assert stored and "very-secret-token" not in stored and "Authorization" not in stored


async def test_reopening_with_a_different_secret_gives_a_clear_store_error(
    database_url: str,
) -> None:
    first = await opened(database_url, "the-original-secret")
    await first.create_upstream(upstream("a", headers={"K": "v"}), [])
    await first.close()

    changed = await opened(database_url, "a-different-secret")
    try:
        with pytest.raises(StoreError, match="AUTH_ENCRYPTION_SECRET changed"):
            await changed.get_upstream("a")
        with pytest.raises(StoreError, match="AUTH_ENCRYPTION_SECRET changed"):
            await changed.load_catalogue()
    finally:
        await changed.close()


async def test_without_a_secret_stores_share_a_key_file_made_0600_and_not_the_database(
    database_url: str, tmp_path: Path
) -> None:
    writer = await opened(database_url, "", tmp_path)
    reader = await opened(database_url, "", tmp_path)
    try:
        await writer.create_upstream(upstream("a", headers={"K": "v"}), [])
        assert (await reader.get_upstream("a")).headers == {"K": "v"}  # type: ignore[union-attr]
        key_file = tmp_path / ENCRYPTION_KEY_FILE
        assert len(key_file.read_text().strip()) >= 64
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert raw_rows(database_url, "SELECT name FROM secrets") == []
    finally:
        await writer.close()
        await reader.close()


async def test_a_key_kept_in_the_store_by_an_earlier_version_moves_to_the_key_file(
    database_url: str, tmp_path: Path
) -> None:
    # What earlier versions did when AUTH_ENCRYPTION_SECRET was empty: keep the key in the
    # store and seal headers with it.
    store = await opened(database_url, "old-key")
    try:
        await store.get_or_create_secret(ENCRYPTION_KEY_SECRET, lambda: "old-key")
        await store.create_upstream(upstream("a", headers={"K": "v"}), [])
    finally:
        await store.close()
    moved = await opened(database_url, "", tmp_path)
    try:
        assert (tmp_path / ENCRYPTION_KEY_FILE).read_text().strip() == "old-key"
        assert (await moved.get_upstream("a")).headers == {"K": "v"}  # type: ignore[union-attr]
        assert raw_rows(database_url, "SELECT name FROM secrets") == []
    finally:
        await moved.close()


async def test_sqlite_database_file_is_created_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.db"
    store = await opened(f"sqlite:///{path}")
    try:
        await store.create_upstream(upstream("a"), [])
        for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()


# --- secrets ---------------------------------------------------------------------------------


async def test_get_or_create_secret_makes_the_value_once(store: Store) -> None:
    made: list[str] = []

    def make() -> str:
        made.append(f"value-{len(made)}")
        return made[-1]

    first = await store.get_or_create_secret("jwt", make)
    second = await store.get_or_create_secret("jwt", make)

    assert first == second == "value-0"
    assert made == ["value-0"]


async def test_concurrent_get_or_create_secret_from_two_stores_agrees(database_url: str) -> None:
    stores = [await opened(database_url), await opened(database_url)]
    try:
        values = await asyncio.gather(
            *(s.get_or_create_secret("shared", secrets.token_hex) for s in stores * 5)
        )
        assert len(set(values)) == 1
    finally:
        for s in stores:
            await s.close()


# --- failures --------------------------------------------------------------------------------


async def test_ping_answers_on_a_started_store(store: Store) -> None:
    await store.ping()


async def test_a_closed_store_raises_store_error(database_url: str) -> None:
    store = await opened(database_url)
    await store.close()
    with pytest.raises(StoreError, match="is not started"):
        await store.ping()


async def test_text_with_a_nul_is_kept_by_sqlite_and_refused_as_unstorable_by_postgres(
    store: Store,
) -> None:
    record = ServerRecord(id="s1", name="a\x00b")
    if store.dialect == "postgresql":
        with pytest.raises(Unstorable, match="NUL"):
            await store.create_server(record)
        with pytest.raises(Unstorable, match="NUL"):
            await store.get_server("a\x00b")
        assert await store.list_servers() == []
    else:
        await store.create_server(record)
        stored = await store.get_server("s1")
        assert stored is not None and stored.name == "a\x00b"


async def test_unreachable_postgres_port_gives_a_one_line_store_error() -> None:
    port = free_port()
    store = open_store(f"postgresql://postgres@127.0.0.1:{port}/test", SECRET)

    with pytest.raises(StoreError) as caught:
        await store.start()

    message = str(caught.value)
    assert message.startswith(f"PostgreSQL store at 127.0.0.1:{port}/test: ")
    assert "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_missing_postgres_database_gives_a_one_line_store_error(
    postgres_base_url: str,
) -> None:
    url = postgres_base_url.rsplit("/", 1)[0] + "/no_such_database_here"
    store = open_store(url, SECRET)

    with pytest.raises(
        StoreError, match='database "no_such_database_here" does not exist'
    ) as caught:
        await store.start()

    assert "\n" not in str(caught.value)


async def test_postgres_error_messages_never_show_the_password() -> None:
    port = free_port()
    store = open_store(f"postgresql://user:hunter2@127.0.0.1:{port}/test", SECRET)
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "sqlite:///"], ids=["memory", "no-slash", "no-path"]
)
def test_sqlite_url_without_a_file_path_is_rejected(url: str) -> None:
    with pytest.raises(StoreError, match=re.escape("sqlite:///path/to/file.db")):
        open_store(url, SECRET)


async def test_sqlite_file_in_a_missing_directory_gives_a_store_error(tmp_path: Any) -> None:
    store = open_store(f"sqlite:///{tmp_path}/missing/dir/gateway.db", SECRET)
    with pytest.raises(StoreError, match=r"SQLite store at .*unable to open database file"):
        await store.start()


# --- LISTEN ----------------------------------------------------------------------------------


async def test_listen_on_sqlite_raises_store_error(sqlite_url: str) -> None:
    store = await opened(sqlite_url)
    try:
        with pytest.raises(StoreError, match="needs PostgreSQL"):
            await store.listen("anything")
    finally:
        await store.close()


async def notify(store: Store, channel: str, payload: str) -> None:
    async with store.connection() as conn:
        await conn.execute("SELECT pg_notify(?, ?)", (channel, payload))


async def test_listen_yields_notify_payloads(postgres_url: str) -> None:
    store = await opened(postgres_url)
    try:
        payloads = await store.listen("Mixed-Case channel")
        await notify(store, "Mixed-Case channel", "one")
        await notify(store, "Mixed-Case channel", "two")
        received = [await asyncio.wait_for(anext(payloads), 2) for _ in range(2)]
        assert received == ["one", "two"]
        await payloads.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_listen_reconnects_after_its_connection_is_killed(postgres_url: str) -> None:
    store = await opened(postgres_url)
    try:
        channel = f"events_{uuid.uuid4().hex}"
        payloads = await store.listen(channel)
        async with store.connection() as conn:
            killed = await conn.fetchall(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = ?",
                (f'LISTEN "{channel}"',),
            )
        assert killed == [(True,)]

        async def keep_notifying() -> None:
            # Notifications sent while the listener reconnects are lost, as with Redis.
            while True:
                await notify(store, channel, "after")
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(keep_notifying())
        try:
            assert await asyncio.wait_for(anext(payloads), 5) == "after"
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await payloads.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_closing_the_store_ends_its_listeners(postgres_url: str) -> None:
    store = await opened(postgres_url)
    payloads = await store.listen("events")
    reader = asyncio.create_task(anext(payloads, "ended"))
    await asyncio.sleep(0.1)
    await store.close()
    assert await asyncio.wait_for(reader, 2) == "ended"
