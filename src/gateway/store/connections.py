"""The part of the SQL store every other part stands on: what a dialect provides, start-up
(connect, migrate, the header cipher), transactions and snapshots, and stored secrets.

A dialect subclass only knows how to open connections, which `BEGIN` to use, and how to
turn its driver's exceptions into `StoreError`. All SQL uses `?` placeholders.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from gateway.keyfile import ENCRYPTION_KEY_FILE, default_secrets_dir, read_or_create_key
from gateway.store import Conflict, Connection, StoreError
from gateway.store.crypto import HeaderCipher, purpose_key
from gateway.store.migrations import migrate
from gateway.store.upgrade import upgrade

Raw = TypeVar("Raw")
"""A driver's own connection type."""

ENCRYPTION_KEY_SECRET = "encryption_key"
"""Where earlier versions kept the key that encrypts headers when `AUTH_ENCRYPTION_SECRET`
is empty; now in a key file, and moved there on first start."""

log = structlog.get_logger(__name__)

BUMP_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'catalogue_version'"
"""Every catalogue write runs this first: on PostgreSQL that row lock queues concurrent
catalogue writers, so the checks that follow see every earlier write committed."""


class DuplicateKey(Conflict):
    """The database itself refused a duplicate: a concurrent writer got there first."""


def one_line(exc: BaseException) -> str:
    """The first line of a driver message, or the exception's class when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class DriverConnection(ABC, Generic[Raw]):
    """A driver's connection seen through the `Connection` protocol, reporting its errors
    through the store that opened it."""

    def __init__(self, raw: Raw, store: SQLBase) -> None:
        self._raw = raw
        self._store = store

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class SQLBase(ABC):
    """Connections, transactions and secrets of a SQL store; the catalogue parts build on it."""

    dialect: str
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN"

    def __init__(
        self, database_url: str, encryption_secret: str, secrets_dir: Path | None = None
    ) -> None:
        self.database_url = database_url
        self._encryption_secret = encryption_secret
        self._key_file = (secrets_dir or default_secrets_dir(database_url)) / ENCRYPTION_KEY_FILE
        self._cipher: HeaderCipher | None = None
        self._secret = ""

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
            secret = self._encryption_secret or await self.secret_from_file(
                ENCRYPTION_KEY_SECRET, self._key_file
            )
            self._cipher = HeaderCipher(secret)
            self._secret = secret
            async with self.transaction() as conn:
                await upgrade(conn, self._cipher)
        except BaseException:
            await self._close()
            raise

    async def close(self) -> None:
        self._cipher = None
        await self._close()

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchone("SELECT 1")

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for `purpose`, from the encryption key (HKDF): every instance that
        can read the store's headers derives the same, and none is stored."""
        if not self._secret:
            raise StoreError(f"{self.label} is not started")
        return purpose_key(self._secret, purpose)

    @property
    def cipher(self) -> HeaderCipher:
        if self._cipher is None:
            raise StoreError(f"{self.label} is not started")
        return self._cipher

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
            # BEGIN inside the try: a caller's timeout may cancel us after the driver ran it,
            # and the (shielded, queued-after) ROLLBACK must then still close it.
            try:
                await conn.execute(self.begin_write)
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """Several reads that see one committed state of the database."""
        async with self.connection() as conn:
            try:
                await conn.execute(self.begin_snapshot)
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

    async def secret_from_file(self, name: str, path: Path) -> str:
        """The secret in the key file `path`, created once if missing; a copy still kept in
        the store under `name` (as earlier versions did) moves to the file and leaves the store."""
        async with self.connection() as conn:
            row = await conn.fetchone("SELECT value FROM secrets WHERE name = ?", (name,))
        stored = None if row is None else str(row[0])
        candidate = stored or secrets.token_urlsafe(48)
        try:
            value, created = await asyncio.to_thread(read_or_create_key, path, candidate)
        except OSError as exc:
            raise StoreError(f"key file {path}: {exc.strerror or exc}") from None
        if created:
            # Only the process that wrote the file says so: once per server.
            how = "moved from the store to" if stored else "generated into"
            log.warning(f"the {name} secret was {how} the key file {path}; back it up")
        if stored is not None and stored == value:
            async with self.transaction() as conn:
                await conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
        return value

    # --- notifications -----------------------------------------------------------------------

    async def listen(self, channel: str) -> AsyncIterator[str]:
        raise StoreError(f"{self.label}: LISTEN/NOTIFY needs PostgreSQL")
