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
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from gateway.store import (
    CatalogueData,
    Conflict,
    Connection,
    Features,
    NotFound,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
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
FEATURE_SETTINGS = frozenset({"enabled"})
"""What may be changed on a resource, resource template or prompt."""

NO_FEATURES = Features()
"""An upstream that offers nothing besides tools."""

UPSTREAM_COLUMNS = "name, transport, url, prefix, headers_enc, builtin, created_at, updated_at"
SERVER_COLUMNS = "id, name, description, tools, resources, prompts, created_at, updated_at"
BUMP_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'catalogue_version'"

Owned = TypeVar("Owned", ToolRecord, ResourceRecord, ResourceTemplateRecord, PromptRecord)
"""A record that belongs to an upstream and goes with it."""


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


# --- records and rows ------------------------------------------------------------------------
# The owning upstream in a row comes from the call, not the record, so a record copied from
# another upstream cannot land under the wrong owner.


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


def resource_from_row(row: Sequence[Any]) -> ResourceRecord:
    return ResourceRecord(
        uri=row[0],
        upstream=row[1],
        name=row[2],
        description=row[3],
        title=row[4],
        mime_type=row[5],
        size=None if row[6] is None else int(row[6]),
        annotations=_unjson(row[7]),
        enabled=bool(row[8]),
    )


def resource_params(upstream: str, resource: ResourceRecord) -> tuple[Any, ...]:
    return (
        resource.uri,
        upstream,
        resource.name,
        resource.description,
        resource.title,
        resource.mime_type,
        resource.size,
        _json(resource.annotations),
        resource.enabled,
    )


def template_from_row(row: Sequence[Any]) -> ResourceTemplateRecord:
    return ResourceTemplateRecord(
        uri_template=row[0],
        upstream=row[1],
        name=row[2],
        description=row[3],
        title=row[4],
        mime_type=row[5],
        annotations=_unjson(row[6]),
        enabled=bool(row[7]),
    )


def template_params(upstream: str, template: ResourceTemplateRecord) -> tuple[Any, ...]:
    return (
        template.uri_template,
        upstream,
        template.name,
        template.description,
        template.title,
        template.mime_type,
        _json(template.annotations),
        template.enabled,
    )


def prompt_from_row(row: Sequence[Any]) -> PromptRecord:
    return PromptRecord(
        name=row[0],
        upstream=row[1],
        original_name=row[2],
        description=row[3],
        title=row[4],
        arguments=tuple(orjson.loads(row[5])),
        enabled=bool(row[6]),
    )


def prompt_params(upstream: str, prompt: PromptRecord) -> tuple[Any, ...]:
    return (
        prompt.name,
        upstream,
        prompt.original_name,
        prompt.description,
        prompt.title,
        _json(prompt.arguments),
        prompt.enabled,
    )


def server_from_row(row: Sequence[Any]) -> ServerRecord:
    return ServerRecord(
        id=row[0],
        name=row[1],
        description=row[2],
        tools=tuple(orjson.loads(row[3])),
        resources=tuple(orjson.loads(row[4])),
        prompts=tuple(orjson.loads(row[5])),
        created_at=float(row[6]),
        updated_at=float(row[7]),
    )


def server_params(server: ServerRecord) -> tuple[Any, ...]:
    return (
        server.id,
        server.name,
        server.description,
        _json(server.tools),
        _json(server.resources),
        _json(server.prompts),
        server.created_at,
        server.updated_at,
    )


# --- what an upstream offers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind(Generic[Owned]):
    """How one kind of record an upstream offers maps onto its table, and the rules all
    kinds share: keys unique across upstreams, operator settings kept across updates."""

    noun: str
    """How messages name one record: 'tool', 'resource template'."""
    key_label: str
    """How messages name its key: 'tool name', 'resource URI'."""
    table: str
    columns: tuple[str, ...]
    """The key column first, then the owning upstream."""
    settings: frozenset[str]
    """Set by operators rather than upstreams: kept across updates, and all that may change."""
    from_row: Callable[[Sequence[Any]], Owned]
    params: Callable[[str, Owned], tuple[Any, ...]]
    key: Callable[[Owned], str]
    original: Callable[[Owned], str] | None = None
    """The upstream's own name for a record, where the gateway renames it."""

    @property
    def key_column(self) -> str:
        return self.columns[0]

    def check_list(self, upstream: str, records: Sequence[Owned]) -> None:
        """Reject a list that would clash with itself."""
        keys: set[str] = set()
        originals: set[str] = set()
        for record in records:
            key = self.key(record)
            if key in keys:
                raise Conflict(f"{self.key_label} {key!r} appears twice in upstream {upstream!r}")
            keys.add(key)
            if self.original is not None:
                original = self.original(record)
                if original in originals:
                    raise Conflict(
                        f"{self.noun} {original!r} appears twice in upstream {upstream!r}"
                    )
                originals.add(original)

    async def check_owners(self, conn: Connection, upstream: str, records: Sequence[Owned]) -> None:
        """Raise `Conflict` naming both owners if another upstream holds one of the keys."""
        if not records:
            return
        # Annotated because mypy cannot infer it under the constrained type variable.
        keys: list[str] = [self.key(record) for record in records]
        marks = ", ".join("?" for _ in keys)
        row = await conn.fetchone(
            f"SELECT {self.key_column}, upstream FROM {self.table} "
            f"WHERE {self.key_column} IN ({marks}) AND upstream <> ? "
            f"ORDER BY {self.key_column} LIMIT 1",
            (*keys, upstream),
        )
        if row is not None:
            raise Conflict(
                f"{self.key_label} {row[0]!r} from upstream {upstream!r} clashes with the "
                f"{self.noun} of upstream {row[1]!r}"
            )

    async def fetch(
        self, conn: Connection, where: str = "", params: Sequence[Any] = ()
    ) -> list[Owned]:
        rows = await conn.fetchall(
            f"SELECT {', '.join(self.columns)} FROM {self.table} {where} "
            f"ORDER BY {self.key_column}",
            params,
        )
        return [self.from_row(row) for row in rows]

    async def get(self, conn: Connection, key: str) -> Owned | None:
        found = await self.fetch(conn, f"WHERE {self.key_column} = ?", (key,))
        return found[0] if found else None

    async def insert(self, conn: Connection, upstream: str, records: Sequence[Owned]) -> None:
        sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join('?' for _ in self.columns)})"
        )
        for record in records:
            await conn.execute(sql, self.params(upstream, record))

    async def replace(self, conn: Connection, upstream: str, records: Sequence[Owned]) -> None:
        """Make `records` the upstream's whole list; surviving keys keep their settings."""
        before = await self.fetch(conn, "WHERE upstream = ?", (upstream,))
        kept = {self.key(record): record for record in before}
        await conn.execute(f"DELETE FROM {self.table} WHERE upstream = ?", (upstream,))
        await self.insert(
            conn, upstream, [self._keep(record, kept.get(self.key(record))) for record in records]
        )

    def _keep(self, record: Owned, old: Owned | None) -> Owned:
        if old is None:
            return record
        return dataclasses.replace(record, **{name: getattr(old, name) for name in self.settings})


TOOLS: Kind[ToolRecord] = Kind(
    noun="tool",
    key_label="tool name",
    table="tools",
    columns=(
        "name",
        "upstream",
        "original_name",
        "description",
        "title",
        "input_schema",
        "output_schema",
        "annotations",
        "enabled",
        "cache_ttl",
        "rate_limit",
    ),
    settings=TOOL_SETTINGS,
    from_row=tool_from_row,
    params=tool_params,
    key=lambda tool: tool.name,
    original=lambda tool: tool.original_name,
)
RESOURCES: Kind[ResourceRecord] = Kind(
    noun="resource",
    key_label="resource URI",
    table="resources",
    columns=(
        "uri",
        "upstream",
        "name",
        "description",
        "title",
        "mime_type",
        "size",
        "annotations",
        "enabled",
    ),
    settings=FEATURE_SETTINGS,
    from_row=resource_from_row,
    params=resource_params,
    key=lambda resource: resource.uri,
)
TEMPLATES: Kind[ResourceTemplateRecord] = Kind(
    noun="resource template",
    key_label="resource template",
    table="resource_templates",
    columns=(
        "uri_template",
        "upstream",
        "name",
        "description",
        "title",
        "mime_type",
        "annotations",
        "enabled",
    ),
    settings=FEATURE_SETTINGS,
    from_row=template_from_row,
    params=template_params,
    key=lambda template: template.uri_template,
)
PROMPTS: Kind[PromptRecord] = Kind(
    noun="prompt",
    key_label="prompt name",
    table="prompts",
    columns=(
        "name",
        "upstream",
        "original_name",
        "description",
        "title",
        "arguments",
        "enabled",
    ),
    settings=FEATURE_SETTINGS,
    from_row=prompt_from_row,
    params=prompt_params,
    key=lambda prompt: prompt.name,
    original=lambda prompt: prompt.original_name,
)


def offered(
    tools: Sequence[ToolRecord] | None, features: Features | None
) -> list[tuple[Kind[Any], Sequence[Any]]]:
    """Each record list a write brings, with its kind; None leaves that part alone."""
    parts: list[tuple[Kind[Any], Sequence[Any]]] = []
    if tools is not None:
        parts.append((TOOLS, tools))
    if features is not None:
        parts += [
            (RESOURCES, features.resources),
            (TEMPLATES, features.templates),
            (PROMPTS, features.prompts),
        ]
    return parts


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

    async def load_catalogue(self) -> CatalogueData:
        async with self.snapshot() as conn:
            return CatalogueData(
                version=await self._version(conn),
                upstreams=await self._upstreams(conn),
                tools=await TOOLS.fetch(conn),
                resources=await RESOURCES.fetch(conn),
                templates=await TEMPLATES.fetch(conn),
                prompts=await PROMPTS.fetch(conn),
                servers=await self._servers(conn),
            )

    async def _upstreams(self, conn: Connection) -> list[UpstreamRecord]:
        rows = await conn.fetchall(f"SELECT {UPSTREAM_COLUMNS} FROM upstreams ORDER BY name")
        return [self._upstream_from_row(row) for row in rows]

    async def list_upstreams(self) -> list[UpstreamRecord]:
        async with self.connection() as conn:
            return await self._upstreams(conn)

    async def get_upstream(self, name: str) -> UpstreamRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchone(
                f"SELECT {UPSTREAM_COLUMNS} FROM upstreams WHERE name = ?", (name,)
            )
        return None if row is None else self._upstream_from_row(row)

    async def _list(self, kind: Kind[Owned]) -> list[Owned]:
        async with self.connection() as conn:
            return await kind.fetch(conn)

    async def _get(self, kind: Kind[Owned], key: str) -> Owned | None:
        async with self.connection() as conn:
            return await kind.get(conn, key)

    async def list_tools(self) -> list[ToolRecord]:
        return await self._list(TOOLS)

    async def get_tool(self, name: str) -> ToolRecord | None:
        return await self._get(TOOLS, name)

    async def list_resources(self) -> list[ResourceRecord]:
        return await self._list(RESOURCES)

    async def get_resource(self, uri: str) -> ResourceRecord | None:
        return await self._get(RESOURCES, uri)

    async def list_resource_templates(self) -> list[ResourceTemplateRecord]:
        return await self._list(TEMPLATES)

    async def get_resource_template(self, uri_template: str) -> ResourceTemplateRecord | None:
        return await self._get(TEMPLATES, uri_template)

    async def list_prompts(self) -> list[PromptRecord]:
        return await self._list(PROMPTS)

    async def get_prompt(self, name: str) -> PromptRecord | None:
        return await self._get(PROMPTS, name)

    @staticmethod
    async def _servers(
        conn: Connection, where: str = "", params: Sequence[Any] = ()
    ) -> list[ServerRecord]:
        rows = await conn.fetchall(
            f"SELECT {SERVER_COLUMNS} FROM servers {where} ORDER BY id", params
        )
        return [server_from_row(row) for row in rows]

    async def list_servers(self) -> list[ServerRecord]:
        async with self.connection() as conn:
            return await self._servers(conn)

    async def get_server(self, id: str) -> ServerRecord | None:
        async with self.connection() as conn:
            found = await self._servers(conn, "WHERE id = ?", (id,))
        return found[0] if found else None

    # --- catalogue writes --------------------------------------------------------------------
    # Each write bumps the version first: on PostgreSQL that row lock queues concurrent
    # catalogue writers, so the checks that follow see every earlier write committed.

    async def create_upstream(
        self,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord],
        features: Features = NO_FEATURES,
    ) -> None:
        """See `Store.create_upstream`; `created_at` and `updated_at` are the store's clock."""
        parts = offered(tools, features)
        for kind, records in parts:
            kind.check_list(upstream.name, records)
        headers_enc = self.cipher.encrypt_headers(upstream.headers)
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                await self._check_new_upstream(conn, upstream, tools, features)
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
                for kind, records in parts:
                    await kind.insert(conn, upstream.name, records)
        except DuplicateKey:
            # A writer outside this process's ordering won the race; explain who.
            async with self.connection() as conn:
                await self._check_new_upstream(conn, upstream, tools, features)
            raise Conflict(
                f"upstream {upstream.name!r} or one of its records was created concurrently"
            ) from None

    @staticmethod
    async def _check_new_upstream(
        conn: Connection,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord],
        features: Features,
    ) -> None:
        if await conn.fetchone("SELECT 1 FROM upstreams WHERE name = ?", (upstream.name,)):
            raise Conflict(f"upstream {upstream.name!r} already exists")
        for kind, records in offered(tools, features):
            await kind.check_owners(conn, upstream.name, records)

    async def update_upstream(
        self,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord] | None = None,
        features: Features | None = None,
    ) -> None:
        """See `Store.update_upstream`; `created_at` is kept and `updated_at` set to now."""
        parts = offered(tools, features)
        for kind, records in parts:
            kind.check_list(upstream.name, records)
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
                for kind, records in parts:
                    await kind.check_owners(conn, upstream.name, records)
                for kind, records in parts:
                    await kind.replace(conn, upstream.name, records)
        except DuplicateKey:
            async with self.connection() as conn:
                for kind, records in parts:
                    await kind.check_owners(conn, upstream.name, records)
            raise Conflict(
                f"a record of upstream {upstream.name!r} was created concurrently elsewhere"
            ) from None

    async def delete_upstream(self, name: str) -> bool:
        async with self.transaction() as conn:
            # What the upstream offers goes with it through ON DELETE CASCADE.
            deleted = await conn.execute("DELETE FROM upstreams WHERE name = ?", (name,))
            if deleted:
                await conn.execute(BUMP_VERSION)
        return bool(deleted)

    async def update_tool(self, name: str, changes: Mapping[str, Any]) -> ToolRecord:
        return await self._change_settings(TOOLS, name, changes)

    async def update_resource(self, uri: str, changes: Mapping[str, Any]) -> ResourceRecord:
        return await self._change_settings(RESOURCES, uri, changes)

    async def update_resource_template(
        self, uri_template: str, changes: Mapping[str, Any]
    ) -> ResourceTemplateRecord:
        return await self._change_settings(TEMPLATES, uri_template, changes)

    async def update_prompt(self, name: str, changes: Mapping[str, Any]) -> PromptRecord:
        return await self._change_settings(PROMPTS, name, changes)

    async def _change_settings(
        self, kind: Kind[Owned], key: str, changes: Mapping[str, Any]
    ) -> Owned:
        unknown = set(changes) - kind.settings
        if unknown:
            raise ValueError(
                f"{kind.noun} fields {sorted(unknown)} cannot be changed; "
                f"only {sorted(kind.settings)}"
            )
        async with self.transaction() as conn:
            if changes:
                await conn.execute(BUMP_VERSION)
                columns: list[str] = sorted(changes)  # annotated for mypy, as in `Kind`
                assignments = ", ".join(f"{column} = ?" for column in columns)
                await conn.execute(
                    f"UPDATE {kind.table} SET {assignments} WHERE {kind.key_column} = ?",
                    (*(changes[column] for column in columns), key),
                )
            record = await kind.get(conn, key)
            if record is None:
                # Raised inside the transaction, so the version bump is rolled back.
                raise NotFound(f"{kind.noun} {key!r} does not exist")
        return record

    # --- virtual servers ---------------------------------------------------------------------

    async def create_server(self, server: ServerRecord) -> ServerRecord:
        """See `Store.create_server`; `created_at` and `updated_at` are the store's clock."""
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                if await conn.fetchone("SELECT 1 FROM servers WHERE id = ?", (server.id,)):
                    raise Conflict(f"server {server.id!r} already exists")
                now = time.time()
                stored = dataclasses.replace(server, created_at=now, updated_at=now)
                await conn.execute(
                    f"INSERT INTO servers ({SERVER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    server_params(stored),
                )
        except DuplicateKey:
            raise Conflict(f"server {server.id!r} already exists") from None
        return stored

    async def update_server(self, server: ServerRecord) -> ServerRecord:
        """See `Store.update_server`; `updated_at` is set to now."""
        async with self.transaction() as conn:
            await conn.execute(BUMP_VERSION)
            changed = await conn.execute(
                "UPDATE servers SET name = ?, description = ?, tools = ?, resources = ?, "
                "prompts = ?, updated_at = ? WHERE id = ?",
                (
                    server.name,
                    server.description,
                    _json(server.tools),
                    _json(server.resources),
                    _json(server.prompts),
                    time.time(),
                    server.id,
                ),
            )
            if not changed:
                raise NotFound(f"server {server.id!r} does not exist")
            [stored] = await self._servers(conn, "WHERE id = ?", (server.id,))
        return stored

    async def delete_server(self, id: str) -> bool:
        async with self.transaction() as conn:
            deleted = await conn.execute("DELETE FROM servers WHERE id = ?", (id,))
            if deleted:
                await conn.execute(BUMP_VERSION)
        return bool(deleted)

    # --- notifications -----------------------------------------------------------------------

    async def listen(self, channel: str) -> AsyncIterator[str]:
        raise StoreError(f"{self.label}: LISTEN/NOTIFY needs PostgreSQL")
