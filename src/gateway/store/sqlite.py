"""The store on SQLite through aiosqlite: `DATABASE_URL=sqlite:///path/to/file.db`.

aiosqlite runs every connection on a thread of its own, so the store keeps two: one writer,
used by one transaction at a time under an `asyncio.Lock`, and one reader. WAL mode lets the
reader (and other processes) read while someone writes; `BEGIN IMMEDIATE` takes the write
lock up front so a transaction never fails half-way when upgrading from read to write, and
`busy_timeout` makes other processes wait for that lock instead of failing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store import Connection, StoreError
from gateway.store.base import SQLStore
from gateway.store.connections import DriverConnection, DuplicateKey, one_line

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another process's write lock before failing."""

START_ATTEMPTS = 8
"""Start-up retries on a locked database: a brand-new file can refuse WAL set-up to
processes racing to create it, which `busy_timeout` does not cover."""

PRAGMAS = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}",
    "PRAGMA journal_mode = WAL",
    # In WAL mode NORMAL loses at most the last commits on power loss, never integrity.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)


class DatabaseBusy(StoreError):
    """Another process held the database lock for longer than `BUSY_TIMEOUT`."""


def sqlite_path(database_url: str) -> str:
    """`sqlite:///gateway.db` is relative to the working directory, `sqlite:////srv/g.db`
    absolute."""
    rest = database_url.removeprefix("sqlite://")
    path = rest.removeprefix("/").split("?", 1)[0]
    if rest == database_url or not rest.startswith("/") or not path or path == ":memory:":
        raise StoreError(
            f"SQLite store: {database_url!r} is not a file URL; use sqlite:///path/to/file.db "
            "(workers share the file, so an in-memory database cannot work)"
        )
    return path


def _probe(path: str) -> None:
    # Created readable by its owner only: it holds upstream credentials, sealed but beside
    # everything else. SQLite gives the -wal and -shm files the database file's mode, and
    # reports itself what is wrong with a path that cannot be created.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    sqlite3.connect(path).close()


class SQLiteConnection(DriverConnection[aiosqlite.Connection]):
    """One aiosqlite connection seen through the `Connection` protocol."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._store.translate_errors():
            cursor = await self._raw.execute(sql, params)
            try:
                return int(cursor.rowcount)
            finally:
                await cursor.close()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._store.translate_errors():
            # One trip to the connection's thread instead of execute + fetch + close.
            rows = await self._raw.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]


class SQLiteStore(SQLStore):
    dialect: str = "sqlite"
    begin_write = "BEGIN IMMEDIATE"
    begin_snapshot = "BEGIN"

    def __init__(
        self, database_url: str, encryption_secret: str, secrets_dir: Path | None = None
    ) -> None:
        super().__init__(database_url, encryption_secret, secrets_dir)
        self.path = sqlite_path(database_url)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    @property
    def label(self) -> str:
        return f"SQLite store at {self.path}"

    @property
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        # aiosqlite raises ValueError for a connection that is already closed.
        return (sqlite3.Error, ValueError)

    def store_error(self, exc: BaseException) -> StoreError:
        message = f"{self.label}: {one_line(exc)}"
        if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
            return DuplicateKey(message)
        name = getattr(exc, "sqlite_errorname", "")
        if name in {"SQLITE_BUSY", "SQLITE_LOCKED"} or "locked" in str(exc):
            return DatabaseBusy(message)
        return StoreError(message)

    async def start(self) -> None:
        delay = 0.05
        for attempt in range(START_ATTEMPTS):
            try:
                await super().start()
                return
            except DatabaseBusy:
                if attempt == START_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _open(self) -> None:
        with self.translate_errors():
            # Fail on an unopenable path before aiosqlite is involved: when its own connect
            # fails it stops its thread without waiting, and that thread then outlives
            # (and errors on) a closed event loop.
            await asyncio.to_thread(_probe, self.path)
        self._writer = await self._connect()
        try:
            self._reader = await self._connect()
        except BaseException:
            await self._close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        with self.translate_errors():
            # isolation_level=None: the store issues BEGIN and COMMIT itself.
            raw = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
            try:
                for pragma in PRAGMAS:
                    await raw.execute_fetchall(pragma)
            except BaseException:
                await raw.close()
                raise
        return raw

    async def _close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        for raw in (writer, reader):
            if raw is not None:
                # A connection that fails to close is gone either way.
                with contextlib.suppress(*self.driver_errors):
                    await raw.close()

    def _require(self, raw: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if raw is None:
            raise StoreError(f"{self.label} is not started")
        return raw

    @asynccontextmanager
    async def _write_connection(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            yield SQLiteConnection(self._require(self._writer), self)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        # Locked because a snapshot spans several statements on this one connection.
        async with self._read_lock:
            yield SQLiteConnection(self._require(self._reader), self)
