"""Everything the SQLite and PostgreSQL stores share: the catalogue operations, conflict
checks, record/row mapping, secrets, migrations at start-up and transaction handling.

A dialect subclass only knows how to open connections, which `BEGIN` to use, and how to
turn its driver's exceptions into `StoreError`. All SQL here uses `?` placeholders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson

from gateway.store import (
    Conflict,
    Connection,
    NotFound,
    StoreError,
    ToolRecord,
    UpstreamRecord,
)
from gateway.store.crypto import HeaderCipher
from gateway.store.migrations import migrate

ENCRYPTION_KEY_SECRET = "encryption_key"
"""The stored secret that encrypts headers when `AUTH_ENCRYPTION_SECRET` is empty."""

TOOL_SETTINGS = frozenset({"enabled", "cache_ttl", "rate_limit"})
"""What `update_tool` may change; everything else comes from the upstream."""

UPSTREAM_COLUMNS = "name, transport, url, prefix, headers_enc, builtin, created_at, updated_at"
TOOL_COLUMNS = (
    "name, upstream, original_name, description, title, input_schema, output_schema, "
    "annotations, enabled, cache_ttl, rate_limit"
)
BUMP_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'catalogue_version'"


class DuplicateKey(Conflict):
    """The database itself refused a duplicate: a concurrent writer got there first."""


def one_line(exc: BaseException) -> str:
    """The first line of a driver message, or the exception's class when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode("utf-8")


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def tool_from_row(row: Sequence[Any]) -> ToolRecord:
    return ToolRecord(
        name=row[0],
        upstream=row[1],
        original_name=row[2],
        description=row[3],
        title=row[4],
        input_schema=_unjson(row[5]),
        output_schema=_unjson(row[6]),
        annotations=_unjson(row[7]),
        enabled=bool(row[8]),
        cache_ttl=None if row[9] is None else float(row[9]),
        rate_limit=None if row[10] is None else int(row[10]),
    )


def tool_params(upstream: str, tool: ToolRecord) -> tuple[Any, ...]:
    # The owning upstream comes from the call, not the record, so a record copied from
    # another upstream cannot land under the wrong owner.
    return (
        tool.name,
        upstream,
        tool.original_name,
        tool.description,
        tool.title,
        _json(tool.input_schema),
        _json(tool.output_schema),
        _json(tool.annotations),
        tool.enabled,
        tool.cache_ttl,
        tool.rate_limit,
    )


def check_tool_list(upstream: str, tools: Sequence[ToolRecord]) -> None:
    """Reject a tool list that would clash with itself."""
    names: set[str] = set()
    originals: set[str] = set()
    for tool in tools:
        if tool.name in names:
            raise Conflict(f"tool name {tool.name!r} appears twice in upstream {upstream!r}")
        if tool.original_name in originals:
            raise Conflict(f"tool {tool.original_name!r} appears twice in upstream {upstream!r}")
        names.add(tool.name)
        originals.add(tool.original_name)


async def check_tool_owners(conn: Connection, upstream: str, tools: Sequence[ToolRecord]) -> None:
    """Raise `Conflict` naming both owners if another upstream holds one of the names."""
    if not tools:
        return
    names = [tool.name for tool in tools]
    marks = ", ".join("?" for _ in names)
    row = await conn.fetchone(
        f"SELECT name, upstream FROM tools WHERE name IN ({marks}) AND upstream <> ? "
        "ORDER BY name LIMIT 1",
        (*names, upstream),
    )
    if row is not None:
        raise Conflict(
            f"tool name {row[0]!r} from upstream {upstream!r} clashes with the tool of "
            f"upstream {row[1]!r}"
        )


class SQLStore(ABC):
    """The `Store` protocol on top of a dialect's connections."""

    dialect: str
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN"

    def __init__(self, database_url: str, encryption_secret: str) -> None:
        self.database_url = database_url
        self._encryption_secret = encryption_secret
        self._cipher: HeaderCipher | None = None

    # --- what a dialect provides -----------------------------------------------------------

    @property
    @abstractmethod
    def label(self) -> str:
        """How error messages name this store, without credentials."""

    @abstractmethod
    async def _open(self) -> None:
        """Open connections; raise `StoreError` if the database cannot be reached."""

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _write_connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for one write transaction, outside any transaction on entry."""

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads (autocommit)."""

    @abstractmethod
    def store_error(self, exc: BaseException) -> StoreError:
        """The one-line `StoreError` (or `DuplicateKey`) for a driver exception."""

    @property
    @abstractmethod
    def driver_errors(self) -> tuple[type[BaseException], ...]: ...

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._open()
        try:
            async with self.transaction() as conn:
                await migrate(conn, self.dialect)
            secret = self._encryption_secret or await self.get_or_create_secret(
                ENCRYPTION_KEY_SECRET, lambda: secrets.token_urlsafe(48)
            )
            self._cipher = HeaderCipher(secret)
        except BaseException:
            await self._close()
            raise

    async def close(self) -> None:
        self._cipher = None
        await self._close()

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchone("SELECT 1")

    @contextlib.contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn driver exceptions raised inside the block into `StoreError`."""
        try:
            yield
        except StoreError:
            raise
        except self.driver_errors as exc:
            raise self.store_error(exc) from None

    # --- transactions ------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._write_connection() as conn:
            await conn.execute(self.begin_write)
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """Several reads that see one committed state of the database."""
        async with self.connection() as conn:
            await conn.execute(self.begin_snapshot)
            try:
                yield conn
            finally:
                await self._rollback(conn)

    @staticmethod
    async def _rollback(conn: Connection) -> None:
        # Shielded so that a second cancellation cannot leave the transaction open; a failed
        # rollback means the connection is gone, which the dialect notices when it is
        # handed back, and the original exception is the one worth reporting.
        with contextlib.suppress(StoreError):
            await asyncio.shield(conn.execute("ROLLBACK"))

    # --- secrets -----------------------------------------------------------------------------

    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        async with self.connection() as conn:
            row = await conn.fetchone("SELECT value FROM secrets WHERE name = ?", (name,))
        if row is not None:
            return str(row[0])
        # Every racer inserts its own candidate; the first commit wins and the rest read it.
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, make()),
            )
            row = await conn.fetchone("SELECT value FROM secrets WHERE name = ?", (name,))
        if row is None:
            raise StoreError(f"{self.label}: secret {name!r} vanished while being created")
        return str(row[0])

    # --- catalogue reads ---------------------------------------------------------------------

    @property
    def cipher(self) -> HeaderCipher:
        if self._cipher is None:
            raise StoreError(f"{self.label} is not started")
        return self._cipher

    def _upstream_from_row(self, row: Sequence[Any]) -> UpstreamRecord:
        return UpstreamRecord(
            name=row[0],
            transport=row[1],
            url=row[2],
            prefix=row[3],
            headers=self.cipher.decrypt_headers(row[4]),
            builtin=bool(row[5]),
            created_at=float(row[6]),
            updated_at=float(row[7]),
        )

    async def catalogue_version(self) -> int:
        async with self.connection() as conn:
            return await self._version(conn)

    async def _version(self, conn: Connection) -> int:
        row = await conn.fetchone("SELECT value FROM meta WHERE key = 'catalogue_version'")
        if row is None:
            raise StoreError(f"{self.label}: the catalogue version is missing; run migrations")
        return int(row[0])

    async def load_catalogue(self) -> tuple[int, list[UpstreamRecord], list[ToolRecord]]:
        async with self.snapshot() as conn:
            version = await self._version(conn)
            upstreams = await self._upstreams(conn)
            tools = await self._tools(conn)
        return version, upstreams, tools

    async def _upstreams(self, conn: Connection) -> list[UpstreamRecord]:
        rows = await conn.fetchall(f"SELECT {UPSTREAM_COLUMNS} FROM upstreams ORDER BY name")
        return [self._upstream_from_row(row) for row in rows]

    @staticmethod
    async def _tools(conn: Connection) -> list[ToolRecord]:
        rows = await conn.fetchall(f"SELECT {TOOL_COLUMNS} FROM tools ORDER BY name")
        return [tool_from_row(row) for row in rows]

    async def list_upstreams(self) -> list[UpstreamRecord]:
        async with self.connection() as conn:
            return await self._upstreams(conn)

    async def get_upstream(self, name: str) -> UpstreamRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchone(
                f"SELECT {UPSTREAM_COLUMNS} FROM upstreams WHERE name = ?", (name,)
            )
        return None if row is None else self._upstream_from_row(row)

    async def list_tools(self) -> list[ToolRecord]:
        async with self.connection() as conn:
            return await self._tools(conn)

    async def get_tool(self, name: str) -> ToolRecord | None:
        async with self.connection() as conn:
            return await self._tool(conn, name)

    @staticmethod
    async def _tool(conn: Connection, name: str) -> ToolRecord | None:
        row = await conn.fetchone(f"SELECT {TOOL_COLUMNS} FROM tools WHERE name = ?", (name,))
        return None if row is None else tool_from_row(row)

    # --- catalogue writes --------------------------------------------------------------------
    # Each write bumps the version first: on PostgreSQL that row lock queues concurrent
    # catalogue writers, so the checks that follow see every earlier write committed.

    async def create_upstream(self, upstream: UpstreamRecord, tools: Sequence[ToolRecord]) -> None:
        """See `Store.create_upstream`; `created_at` and `updated_at` are the store's clock."""
        check_tool_list(upstream.name, tools)
        headers_enc = self.cipher.encrypt_headers(upstream.headers)
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                await self._check_new_upstream(conn, upstream, tools)
                now = time.time()
                await conn.execute(
                    f"INSERT INTO upstreams ({UPSTREAM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        upstream.name,
                        upstream.transport,
                        upstream.url,
                        upstream.prefix,
                        headers_enc,
                        upstream.builtin,
                        now,
                        now,
                    ),
                )
                await self._insert_tools(conn, upstream.name, tools)
        except DuplicateKey:
            # A writer outside this process's ordering won the race; explain who.
            async with self.connection() as conn:
                await self._check_new_upstream(conn, upstream, tools)
            raise Conflict(
                f"upstream {upstream.name!r} or one of its tools was created concurrently"
            ) from None

    @staticmethod
    async def _check_new_upstream(
        conn: Connection, upstream: UpstreamRecord, tools: Sequence[ToolRecord]
    ) -> None:
        if await conn.fetchone("SELECT 1 FROM upstreams WHERE name = ?", (upstream.name,)):
            raise Conflict(f"upstream {upstream.name!r} already exists")
        await check_tool_owners(conn, upstream.name, tools)

    @staticmethod
    async def _insert_tools(conn: Connection, upstream: str, tools: Sequence[ToolRecord]) -> None:
        marks = ", ".join("?" for _ in TOOL_COLUMNS.split(","))
        for tool in tools:
            await conn.execute(
                f"INSERT INTO tools ({TOOL_COLUMNS}) VALUES ({marks})", tool_params(upstream, tool)
            )

    async def update_upstream(
        self, upstream: UpstreamRecord, tools: Sequence[ToolRecord] | None = None
    ) -> None:
        """See `Store.update_upstream`; `created_at` is kept and `updated_at` set to now."""
        if tools is not None:
            check_tool_list(upstream.name, tools)
        headers_enc = self.cipher.encrypt_headers(upstream.headers)
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                changed = await conn.execute(
                    "UPDATE upstreams SET transport = ?, url = ?, prefix = ?, headers_enc = ?, "
                    "builtin = ?, updated_at = ? WHERE name = ?",
                    (
                        upstream.transport,
                        upstream.url,
                        upstream.prefix,
                        headers_enc,
                        upstream.builtin,
                        time.time(),
                        upstream.name,
                    ),
                )
                if not changed:
                    raise NotFound(f"upstream {upstream.name!r} does not exist")
                if tools is not None:
                    await self._replace_tools(conn, upstream.name, tools)
        except DuplicateKey:
            if tools is not None:
                async with self.connection() as conn:
                    await check_tool_owners(conn, upstream.name, tools)
            raise Conflict(
                f"a tool of upstream {upstream.name!r} was created concurrently elsewhere"
            ) from None

    async def _replace_tools(
        self, conn: Connection, upstream: str, tools: Sequence[ToolRecord]
    ) -> None:
        await check_tool_owners(conn, upstream, tools)
        kept = {
            row[0]: row[1:]
            for row in await conn.fetchall(
                "SELECT name, enabled, cache_ttl, rate_limit FROM tools WHERE upstream = ?",
                (upstream,),
            )
        }
        await conn.execute("DELETE FROM tools WHERE upstream = ?", (upstream,))
        merged = []
        for tool in tools:
            if tool.name in kept:
                enabled, cache_ttl, rate_limit = kept[tool.name]
                tool = dataclasses.replace(
                    tool, enabled=bool(enabled), cache_ttl=cache_ttl, rate_limit=rate_limit
                )
            merged.append(tool)
        await self._insert_tools(conn, upstream, merged)

    async def delete_upstream(self, name: str) -> bool:
        async with self.transaction() as conn:
            # Tools go with the upstream through ON DELETE CASCADE.
            deleted = await conn.execute("DELETE FROM upstreams WHERE name = ?", (name,))
            if deleted:
                await conn.execute(BUMP_VERSION)
        return bool(deleted)

    async def update_tool(self, name: str, changes: Mapping[str, Any]) -> ToolRecord:
        unknown = set(changes) - TOOL_SETTINGS
        if unknown:
            raise ValueError(
                f"tool fields {sorted(unknown)} cannot be changed; only {sorted(TOOL_SETTINGS)}"
            )
        async with self.transaction() as conn:
            if changes:
                await conn.execute(BUMP_VERSION)
                columns = sorted(changes)
                assignments = ", ".join(f"{column} = ?" for column in columns)
                await conn.execute(
                    f"UPDATE tools SET {assignments} WHERE name = ?",
                    (*(changes[column] for column in columns), name),
                )
            tool = await self._tool(conn, name)
            if tool is None:
                raise NotFound(f"tool {name!r} does not exist")
        return tool

    # --- notifications -----------------------------------------------------------------------

    async def listen(self, channel: str) -> AsyncIterator[str]:
        raise StoreError(f"{self.label}: LISTEN/NOTIFY needs PostgreSQL")
