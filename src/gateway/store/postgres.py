"""The store on PostgreSQL through aiopg: `DATABASE_URL=postgresql://user:pass@host:port/db`.

The URL goes to libpq untouched, so its query parameters work as documented there; for
example `?options=-csearch_path%3Dgateway` keeps every table in the schema `gateway`.
aiopg connections are always in autocommit mode, so transactions are explicit `BEGIN` /
`COMMIT` / `ROLLBACK`. `listen()` holds a dedicated connection per listener, outside the
pool, and reconnects when it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import structlog

from gateway.store import Connection, StoreError, Unstorable
from gateway.store.base import SQLStore
from gateway.store.connections import DriverConnection, DuplicateKey, one_line

POOL_SIZE = 10
TIMEOUT = 30.0
"""Seconds to wait for a connection or a statement before giving up."""
RECONNECT_DELAY_MAX = 5.0

log = structlog.get_logger(__name__)


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """The store's `?` placeholders in psycopg2's style; a literal `%` must then be doubled.

    The store never writes `?` inside string literals, so a plain replacement is exact.
    """
    return sql.replace("%", "%%").replace("?", "%s")


def _statement(sql: str, params: Sequence[Any]) -> tuple[str, tuple[Any, ...] | None]:
    # Without parameters psycopg2 sends the text as it is, `%` included.
    return (to_pyformat(sql), tuple(params)) if params else (sql, None)


def _row(row: Sequence[Any]) -> tuple[Any, ...]:
    # BYTEA arrives as memoryview; callers of both stores expect bytes.
    return tuple(bytes(value) if isinstance(value, memoryview) else value for value in row)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe_url(database_url: str) -> str:
    """`host:port/dbname` without user or password, for error messages."""
    try:
        parts = urlsplit(database_url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "an unparsable URL"
    return f"{host}:{port}{parts.path}"


NUL_IN_TEXT = "text with a NUL character (\\u0000) cannot be stored in PostgreSQL"


class PostgresConnection(DriverConnection[aiopg.Connection]):
    """One aiopg connection seen through the `Connection` protocol."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._store.translate_errors(), _storable():
            async with self._raw.cursor() as cursor:
                await cursor.execute(*_statement(sql, params))
                return int(cursor.rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._store.translate_errors(), _storable():
            async with self._raw.cursor() as cursor:
                await cursor.execute(*_statement(sql, params))
                rows = await cursor.fetchall()
        return [_row(row) for row in rows]


@contextlib.contextmanager
def _storable() -> Iterator[None]:
    """psycopg2 refuses a parameter holding NUL with a ValueError before sending anything;
    that is the caller's input, which no PostgreSQL text column can hold."""
    try:
        yield
    except ValueError as exc:
        if "NUL" not in str(exc):
            raise
        raise Unstorable(NUL_IN_TEXT) from None


class PostgresStore(SQLStore):
    dialect: str = "postgresql"
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(
        self, database_url: str, encryption_secret: str, secrets_dir: Path | None = None
    ) -> None:
        super().__init__(database_url, encryption_secret, secrets_dir)
        self._pool: aiopg.Pool | None = None
        self._listeners: set[aiopg.Connection] = set()

    @property
    def label(self) -> str:
        return f"PostgreSQL store at {describe_url(self.database_url)}"

    @property
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        # TimeoutError is aiopg's answer to a statement or connect that outlived TIMEOUT.
        return (psycopg2.Error, OSError, asyncio.TimeoutError)

    def store_error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, asyncio.TimeoutError):
            return StoreError(f"{self.label}: no answer within {TIMEOUT:g} s")
        message = f"{self.label}: {one_line(exc)}"
        if isinstance(exc, psycopg2.errors.UniqueViolation):
            return DuplicateKey(message)
        return StoreError(message)

    async def _open(self) -> None:
        with self.translate_errors():
            self._pool = await aiopg.create_pool(
                dsn=self.database_url, minsize=1, maxsize=POOL_SIZE, **self._connect_options()
            )

    def _connect_options(self) -> dict[str, Any]:
        # The store decodes JSON itself and uses no hstore or uuid columns; skipping them
        # saves a catalogue query on every new connection.
        options: dict[str, Any] = {
            "timeout": TIMEOUT,
            "enable_json": False,
            "enable_hstore": False,
            "enable_uuid": False,
        }
        if "application_name=" not in self.database_url:
            # Operators can tell the gateway's connections apart in pg_stat_activity; a
            # name given in DATABASE_URL wins.
            options["application_name"] = f"aio-mcp-gateway:{os.getpid()}"
        return options

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        for conn in list(self._listeners):
            self._forget(conn)
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    def _require_pool(self) -> aiopg.Pool:
        if self._pool is None:
            raise StoreError(f"{self.label} is not started")
        return self._pool

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        pool = self._require_pool()
        with self.translate_errors():
            raw = await pool.acquire()
        try:
            yield PostgresConnection(raw, self)
        finally:
            # A connection still inside a transaction (a failed rollback, a cancelled
            # statement) must not be reused; closing it first makes the pool drop it.
            status = None if raw.closed else raw.raw.get_transaction_status()
            if status not in (None, psycopg2.extensions.TRANSACTION_STATUS_IDLE):
                raw.close()
            await pool.release(raw)

    def _write_connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        return self._acquire()

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        return self._acquire()

    # --- LISTEN ------------------------------------------------------------------------------

    async def listen(self, channel: str) -> AsyncIterator[str]:
        """Start listening on `channel` and return the iterator of its payloads.

        Listening has begun when this returns, so nothing notified afterwards is missed
        (except while reconnecting). The iterator ends when the store is closed.
        """
        conn = await self._listener(channel)
        return self._notifications(channel, conn)

    async def _listener(self, channel: str) -> aiopg.Connection:
        self._require_pool()
        with self.translate_errors():
            conn = await aiopg.connect(self.database_url, **self._connect_options())
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(f"LISTEN {quote_ident(channel)}")
            except BaseException:
                conn.close()
                raise
        self._listeners.add(conn)
        return conn

    def _forget(self, conn: aiopg.Connection) -> None:
        self._listeners.discard(conn)
        if not conn.closed:
            conn.close()

    async def _notifications(
        self, channel: str, conn: aiopg.Connection
    ) -> AsyncGenerator[str, None]:
        current: aiopg.Connection | None = conn
        try:
            while current is not None:
                try:
                    notify = await current.notifies.get()
                except psycopg2.Error as exc:
                    self._forget(current)
                    current = await self._reconnect(channel, exc)
                    continue
                yield str(notify.payload)
        finally:
            if current is not None:
                self._forget(current)

    async def _reconnect(self, channel: str, cause: BaseException) -> aiopg.Connection | None:
        """A new listening connection, retried with backoff; None once the store is closed."""
        delay = 0.1
        while self._pool is not None:
            log.warning("store.listen.reconnecting", channel=channel, error=one_line(cause))
            try:
                return await self._listener(channel)
            except StoreError as exc:
                cause = exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)
        return None
