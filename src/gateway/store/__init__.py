"""The SQL store: the catalogue (upstreams with their tools, resources, resource templates
and prompts, and virtual servers), secrets and the tables the database cache uses.

One schema on SQLite (aiosqlite, WAL) and PostgreSQL (aiopg), with versioned migrations
applied at start-up. `open_store()` picks the implementation from `DATABASE_URL`.
The hot path never calls the store: workers load the catalogue into memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.contracts import PromptDef, ResourceDef, ResourceTemplateDef, ToolDef
from gateway.store.rows import column


class StoreError(Exception):
    """The store cannot be reached or failed a statement."""


class Conflict(StoreError):
    """A write would break uniqueness; the message names both owners."""


class NotFound(StoreError):
    """The named record does not exist."""


class Unstorable(StoreError):
    """A value the database cannot hold, such as text with a NUL character in PostgreSQL;
    the caller sent it, so it is a bad request, not an outage."""


SHARED_SESSION = "shared"
PER_CLIENT_SESSION = "per-client"
SESSION_MODES = (SHARED_SESSION, PER_CLIENT_SESSION)


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    name: str
    transport: str
    url: str
    prefix: str
    headers: Mapping[str, str] = field(
        default_factory=dict, metadata=column("headers_enc", encrypted=True)
    )
    """Decrypted header values; never put these in an API response."""
    builtin: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    session: str = SHARED_SESSION
    """`shared`: each worker's one upstream session serves every client; `per-client`: each
    client session gets an upstream session of its own (`gateway.upstream_sessions`)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The transport's own registration fields (`BackendSpec.fields`), as its backend
    checked them; not secret."""
    notes: Mapping[str, Any] = field(default_factory=dict)
    """What discovery reported beyond the tools (e.g. operations an OpenAPI backend skipped,
    with the reason): shown with the upstream."""


# What an upstream offers is stored as the definition its backend discovered, under the
# gateway's name and owner. The record's own fields with defaults are the operator's
# settings: discovery leaves them at their defaults and updates keep them.


@dataclass(frozen=True, slots=True)
class ToolRecord:
    name: str
    """The gateway name: `<prefix><separator><definition.name>`, or the definition's name."""
    upstream: str
    definition: ToolDef = field(metadata=column(renamed={"name": "original_name"}))
    enabled: bool = True
    cache_ttl: float | None = None
    rate_limit: int | None = None


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A federated resource. Its URI is its identity at the gateway, unchanged."""

    upstream: str
    definition: ResourceDef
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ResourceTemplateRecord:
    upstream: str
    definition: ResourceTemplateDef
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class PromptRecord:
    name: str
    """The gateway name, made like a tool's: `<prefix><separator><definition.name>`."""
    upstream: str
    definition: PromptDef = field(metadata=column(renamed={"name": "original_name"}))
    enabled: bool = True


Offered = TypeVar("Offered", ToolRecord, ResourceRecord, ResourceTemplateRecord, PromptRecord)
"""A record an upstream offers, which goes with it."""


def operator_settings(record_type: type[Offered]) -> dict[str, Any]:
    """The settings of an offered record type, each with its default."""
    return {f.name: f.default for f in fields(record_type) if f.default is not MISSING}


def as_discovered(record: Offered) -> Offered:
    """The record with its operator settings back at their defaults, as discovery makes it."""
    return replace(record, **operator_settings(type(record)))


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """A virtual server: a named bundle of tools, resources and prompts by gateway name/URI."""

    id: str
    name: str
    description: str = ""
    tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    """Resource URIs and resource template URI templates."""
    prompts: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    tags: tuple[str, ...] = ()
    """Also every tool curated with one of these tags (`ToolOverride.tags`)."""
    tool_mode: str = "list"
    """`list`: tools/list shows the server's tools; `search`: it shows only the search tools
    (`search_tools`, `describe_tool`, `call_tool`) through which agents reach them."""
    interceptors: tuple[str, ...] | None = None
    """The interceptors its calls run (`INTERCEPTORS` names them for the rest of the
    gateway); None: the same as the rest of the gateway."""


TOOL_MODES = ("list", "search")


@dataclass(frozen=True, slots=True)
class ToolOverride:
    """How the operator curates one tool, kept by its gateway name apart from the tool's own
    row, so that upstream refreshes (and even its upstream's removal and return) keep it.
    None leaves the upstream's value."""

    name: str
    alias: str | None = None
    """The name agents see and call it by."""
    title: str | None = None
    description: str | None = None
    annotations: Mapping[str, Any] | None = None
    """Hints laid over the upstream's annotations, key by key."""
    tags: tuple[str, ...] = ()
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Features:
    """Everything an upstream offers besides tools, as the gateway names it."""

    resources: Sequence[ResourceRecord] = ()
    templates: Sequence[ResourceTemplateRecord] = ()
    prompts: Sequence[PromptRecord] = ()


@dataclass(frozen=True, slots=True)
class CatalogueData:
    """One consistent read of the whole catalogue."""

    version: int
    upstreams: list[UpstreamRecord]
    tools: list[ToolRecord]
    resources: list[ResourceRecord] = field(default_factory=list)
    templates: list[ResourceTemplateRecord] = field(default_factory=list)
    prompts: list[PromptRecord] = field(default_factory=list)
    servers: list[ServerRecord] = field(default_factory=list)
    overrides: list[ToolOverride] = field(default_factory=list)


class Connection(Protocol):
    """A connection inside a transaction. SQL uses `?` placeholders on both dialects."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Store(Protocol):
    dialect: str
    """'sqlite' or 'postgresql'."""

    async def start(self) -> None:
        """Connect and apply pending migrations (safe when many processes start at once)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreError` if the store cannot answer."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction: committed on exit, rolled back on error."""
        ...

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads (autocommit)."""
        ...

    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        """Return the stored secret `name`, creating it with `make()` exactly once cluster-wide."""
        ...

    async def secret_from_file(self, name: str, path: Path) -> str:
        """The secret in the key file `path`, created once if missing; moves a secret the
        store still keeps under `name` there first."""
        ...

    def derived_key(self, purpose: str) -> bytes:
        """A key for `purpose` derived from the encryption key, the same in every instance
        that shares it; nothing is stored."""
        ...

    async def catalogue_version(self) -> int:
        """A number that grows with every catalogue write: upstreams and what they offer,
        the settings of tools, resources, templates and prompts, and virtual servers."""
        ...

    async def load_catalogue(self) -> CatalogueData:
        """The version and every catalogue record, read in one consistent snapshot."""
        ...

    async def list_upstreams(self) -> list[UpstreamRecord]: ...

    async def get_upstream(self, name: str) -> UpstreamRecord | None: ...

    async def create_upstream(
        self, upstream: UpstreamRecord, tools: Sequence[ToolRecord], features: Features = Features()
    ) -> None:
        """Insert an upstream, its tools and its features in one transaction.

        Raise `Conflict` if the upstream name exists, or a tool name, resource URI, resource
        template or prompt name is taken (the message names both owners); nothing is
        written then.
        """
        ...

    async def update_upstream(
        self,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord] | None = None,
        features: Features | None = None,
    ) -> None:
        """Replace an upstream's fields, and its tools or features when given, in one
        transaction. Features are replaced as a whole: resources, templates and prompts.

        Records that keep their key keep their operator settings: `enabled`, and for tools
        also `cache_ttl` and `rate_limit`. Raise `NotFound` or `Conflict`; nothing is
        written then.
        """
        ...

    async def delete_upstream(self, name: str) -> bool:
        """Delete an upstream with its tools, resources, templates and prompts; False if it
        did not exist."""
        ...

    async def list_tools(self) -> list[ToolRecord]: ...

    async def get_tool(self, name: str) -> ToolRecord | None: ...

    async def update_tool(self, name: str, changes: Mapping[str, Any]) -> ToolRecord:
        """Change `enabled`, `cache_ttl` or `rate_limit` of a tool; raise `NotFound`."""
        ...

    async def list_tool_overrides(self) -> list[ToolOverride]: ...

    async def get_tool_override(self, name: str) -> ToolOverride | None: ...

    async def curate_tool(self, name: str, changes: Mapping[str, Any]) -> ToolOverride:
        """Change fields of a tool's `ToolOverride` (None clears one); a curation left with
        nothing set is deleted. Raise `NotFound` for an unknown tool, `Conflict` (naming
        both tools) for an alias that is another tool's name or alias."""
        ...

    async def list_resources(self) -> list[ResourceRecord]: ...

    async def get_resource(self, uri: str) -> ResourceRecord | None: ...

    async def update_resource(self, uri: str, changes: Mapping[str, Any]) -> ResourceRecord:
        """Change `enabled` of a resource; raise `NotFound`, or `ValueError` for other fields."""
        ...

    async def list_resource_templates(self) -> list[ResourceTemplateRecord]: ...

    async def get_resource_template(self, uri_template: str) -> ResourceTemplateRecord | None: ...

    async def update_resource_template(
        self, uri_template: str, changes: Mapping[str, Any]
    ) -> ResourceTemplateRecord:
        """Change `enabled` of a resource template; raise `NotFound`, or `ValueError`."""
        ...

    async def list_prompts(self) -> list[PromptRecord]: ...

    async def get_prompt(self, name: str) -> PromptRecord | None: ...

    async def update_prompt(self, name: str, changes: Mapping[str, Any]) -> PromptRecord:
        """Change `enabled` of a prompt; raise `NotFound`, or `ValueError` for other fields."""
        ...

    async def list_servers(self) -> list[ServerRecord]: ...

    async def get_server(self, id: str) -> ServerRecord | None: ...

    async def create_server(self, server: ServerRecord) -> ServerRecord:
        """Insert a virtual server and return it as stored, with the store's timestamps.

        Raise `Conflict` if the id exists. Members are not checked against the catalogue.
        """
        ...

    async def update_server(self, server: ServerRecord) -> ServerRecord:
        """Replace a server's name, description and members; `created_at` is kept.

        Return it as stored; raise `NotFound` if the id does not exist.
        """
        ...

    async def delete_server(self, id: str) -> bool:
        """Delete a virtual server; False if it did not exist."""
        ...

    async def listen(self, channel: str) -> AsyncIterator[str]:
        """PostgreSQL only: yield NOTIFY payloads on `channel` until cancelled."""
        ...


def open_store(database_url: str, encryption_secret: str, secrets_dir: Path | None = None) -> Store:
    """Build the store for `DATABASE_URL`; header values are encrypted with the secret, or
    with the key file in `secrets_dir` when it is empty."""
    if database_url.startswith("sqlite://"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(database_url, encryption_secret, secrets_dir)
    from gateway.store.postgres import PostgresStore

    return PostgresStore(database_url, encryption_secret, secrets_dir)
