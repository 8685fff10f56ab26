"""The contracts between the core and its plugins: caches, authenticators and backends.

Hooks only register factories (see `hookspecs.py`); the async work lives on the objects
they build, each with `start()` and `close()` run from one `cleanup_ctx`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.settings import Settings
    from gateway.store import Store

JSON = dict[str, Any]


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A tool as a backend describes it, before the gateway names it."""

    name: str
    input_schema: JSON
    description: str = ""
    title: str | None = None
    output_schema: JSON | None = None
    annotations: JSON | None = None
    icons: tuple[JSON, ...] = ()
    """MCP `Icon` objects (`src`, `mimeType`, `sizes`, `theme`), as the upstream lists them."""
    meta: JSON | None = None
    """The upstream's `_meta` object, relayed as it is."""
    extra: JSON | None = None
    """The upstream's other top-level fields (extensions, a newer revision's fields), relayed
    as they are: never a key of the fields above (see `modelled_keys`)."""


@dataclass(frozen=True, slots=True)
class ResourceDef:
    uri: str
    name: str
    description: str = ""
    title: str | None = None
    mime_type: str | None = None
    size: int | None = None
    annotations: JSON | None = None
    icons: tuple[JSON, ...] = ()
    """MCP `Icon` objects (`src`, `mimeType`, `sizes`, `theme`), as the upstream lists them."""
    meta: JSON | None = None
    """The upstream's `_meta` object, relayed as it is."""
    extra: JSON | None = None
    """The upstream's other top-level fields (extensions, a newer revision's fields), relayed
    as they are: never a key of the fields above (see `modelled_keys`)."""


@dataclass(frozen=True, slots=True)
class ResourceTemplateDef:
    uri_template: str
    name: str
    description: str = ""
    title: str | None = None
    mime_type: str | None = None
    annotations: JSON | None = None
    icons: tuple[JSON, ...] = ()
    """MCP `Icon` objects (`src`, `mimeType`, `sizes`, `theme`), as the upstream lists them."""
    meta: JSON | None = None
    """The upstream's `_meta` object, relayed as it is."""
    extra: JSON | None = None
    """The upstream's other top-level fields (extensions, a newer revision's fields), relayed
    as they are: never a key of the fields above (see `modelled_keys`)."""


@dataclass(frozen=True, slots=True)
class PromptDef:
    name: str
    description: str = ""
    title: str | None = None
    arguments: tuple[JSON, ...] = ()
    """MCP `PromptArgument` objects (name, title, description, required), as listed."""
    icons: tuple[JSON, ...] = ()
    """MCP `Icon` objects (`src`, `mimeType`, `sizes`, `theme`), as the upstream lists them."""
    meta: JSON | None = None
    """The upstream's `_meta` object, relayed as it is."""
    extra: JSON | None = None
    """The upstream's other top-level fields (extensions, a newer revision's fields), relayed
    as they are: never a key of the fields above (see `modelled_keys`)."""


Definition = ToolDef | ResourceDef | ResourceTemplateDef | PromptDef

EXTRA = "extra"
"""The definition field holding the fields the gateway does not model."""
MCP_KEYS = {"meta": "_meta"}
"""The definition fields whose MCP key is not their name in camel case."""
REMOVED_KEYS: dict[type[Definition], frozenset[str]] = {ToolDef: frozenset({"execution"})}
"""Keys the gateway leaves out on purpose, which are not relayed as extra fields either: a
tool's `execution` (the gateway declares no `tasks` capability)."""


@functools.cache
def mcp_key(name: str) -> str:
    """The MCP key of a definition's field: `mime_type` is `mimeType`, `meta` is `_meta`."""
    if name in MCP_KEYS:
        return MCP_KEYS[name]
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _modelled(definition_type: type[Definition]) -> frozenset[str]:
    own = {mcp_key(spec.name) for spec in fields(definition_type) if spec.name != EXTRA}
    return frozenset(own) | REMOVED_KEYS.get(definition_type, frozenset())


MODELLED_KEYS: dict[type[Definition], frozenset[str]] = {
    kind: _modelled(kind) for kind in (ToolDef, ResourceDef, ResourceTemplateDef, PromptDef)
}
"""The MCP keys the gateway models for each kind of definition: those of its fields, and
those it removes. `extra` never holds one, so an upstream cannot set through it what the
gateway sets or checks (a `name`, an `inputSchema`)."""


def modelled_keys(definition_type: type[Definition]) -> frozenset[str]:
    """The MCP keys the gateway models for a kind of definition (see `MODELLED_KEYS`)."""
    return MODELLED_KEYS[definition_type]


Notify = Callable[[str, JSON], Awaitable[None]]
"""Receives an upstream notification: (method, params)."""

AskClient = Callable[[str, JSON], Awaitable[JSON]]
"""Answers a request an upstream sent to its client (`sampling/createMessage`,
`elicitation/create`, `roots/list`, `ping`...): (method, params) -> result.
Raises `ClientRequestError` to answer the upstream with a JSON-RPC error."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """What a backend needs to reach one upstream. Header values are plain text here."""

    name: str
    transport: str
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The transport's own registration fields, as `BackendSpec.check_options` returned them."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as an authenticator proved it."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    anonymous: bool = False

    @property
    def is_admin(self) -> bool:
        return self.anonymous or "admin" in self.scopes


# --- errors --------------------------------------------------------------------------------


class BackendError(Exception):
    """An upstream could not be reached, timed out, or answered with an error."""

    def __init__(self, message: str = "", summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = message if summary is None else summary
        """The message without anything the upstream sent (its body, its words), for whom
        must not read them: an admin registering a URL may reach a service that is not MCP."""


class UpstreamError(BackendError):
    """The upstream answered with a JSON-RPC error; the gateway passes code and message on."""

    def __init__(self, upstream: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"upstream '{upstream}' answered with error {code}: {message}")
        self.code = code
        self.upstream_message = message
        self.data = data


class ClientRequestError(Exception):
    """The answer to an upstream's request to its client is this JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class AuthError(Exception):
    """A request failed authentication (401) or authorisation (403)."""

    def __init__(self, message: str, status: int = 401, scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.scope = scope
        """For a 403: the scope (space-separated scopes) the request needed."""


# --- contracts -----------------------------------------------------------------------------


@runtime_checkable
class Backend(Protocol):
    """One upstream, as seen from one worker. Implementations keep connections open."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_tools(self) -> list[ToolDef]:
        """Every tool of the upstream, following pagination to the end."""
        ...

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        """Call a tool by its upstream name and return an MCP `CallToolResult` object.

        Raise `BackendError` when the upstream cannot answer; a tool's own failure is a
        result with `isError: true`.
        """
        ...


@runtime_checkable
class FullBackend(Backend, Protocol):
    """A backend that speaks the whole MCP protocol, not only tools.

    The gateway checks `isinstance(backend, FullBackend)` and offers resources, prompts,
    completion, logging, progress and cancellation only for upstreams whose backend can.
    """

    capabilities: JSON
    """The upstream's server capabilities from `initialize` (empty before the first use)."""

    async def connect(self) -> None:
        """Open the upstream session if there is none yet, so `capabilities` are known."""
        ...

    async def list_resources(self) -> list[ResourceDef]:
        """Every resource, following pagination; empty if the upstream has none."""
        ...

    async def list_resource_templates(self) -> list[ResourceTemplateDef]: ...

    async def list_prompts(self) -> list[PromptDef]: ...

    async def request(
        self,
        method: str,
        params: JSON,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        """Send any request upstream and return its JSON-RPC result.

        Notifications the upstream sends about this request (`notifications/progress`,
        `notifications/message`) go to `on_notification`. Requests it sends its client
        about this request go to `on_request`, whose result (or `ClientRequestError`) is
        the upstream's answer; without one they are refused at once. Its pending answers
        are abandoned when this request ends. Cancelling the awaiting task sends
        `notifications/cancelled` upstream. A JSON-RPC error raises `UpstreamError`.
        """
        ...

    async def notify(self, method: str, params: JSON) -> None:
        """Send a notification upstream (e.g. `notifications/cancelled`)."""
        ...

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        """Where the upstream's own notifications go (`notifications/tools/list_changed`,
        `notifications/resources/updated`, ...), received on its server-to-client stream;
        and `ask`, which answers the requests it sends its client in relation to no
        request (without one, `ping` is answered and the rest refused)."""
        ...


@runtime_checkable
class Cache(Protocol):
    """A key-value cache with counters, locks and pub/sub. Values are bytes."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> None:
        """Raise if the cache cannot serve requests."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int:
        """Atomically add one and return the new value; a new key expires after `ttl`."""
        ...

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set `key` only if absent; True when this call set it."""
        ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Yield messages published on `channel` from now on, until cancelled."""
        ...


@runtime_checkable
class Authenticator(Protocol):
    """Turns a request into a `Principal`, or raises `AuthError`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def authenticate(self, request: web.Request) -> Principal: ...


@runtime_checkable
class Challenging(Protocol):
    """An authenticator that writes its own `WWW-Authenticate` challenges, such as one
    pointing clients at the metadata that says where to get a token."""

    def challenge(self, request: web.Request, error: AuthError) -> str | None:
        """The `WWW-Authenticate` value of the 401 or 403 that `request` gets for `error`
        (None: the default bearer challenge)."""
        ...


@runtime_checkable
class DiscoveryNotes(Protocol):
    """A backend with more to tell the admin after `list_tools` than its tools."""

    def discovery_notes(self) -> JSON:
        """Shown with the upstream (its registration answer and `GET /upstreams/{name}`),
        e.g. `{"skipped": [...]}`; keep it small."""
        ...


@runtime_checkable
class Supervised(Protocol):
    """A backend that runs something it can report on, such as a local process."""

    async def status(self) -> JSON:
        """Shown as the upstream's `status` in `GET /upstreams/{name}`: its state, restarts,
        last exit..."""
        ...


@runtime_checkable
class ManagedTokens(Protocol):
    """Tokens the gateway mints, lists and revokes (the `jwt` authenticator's `/tokens`),
    set under `MANAGED_TOKENS` by the plugin that has them, so the admin UI shows them."""

    async def listed(self) -> list[JSON]:
        """Every managed token's view, as `GET /tokens` lists it (never the token)."""
        ...

    async def issue(self, body: JSON) -> JSON:
        """Mint one from a `POST /tokens` body: its view with `token`, shown once;
        `ValueError` with the reason when the body is refused."""
        ...

    async def revoke(self, ident: str) -> JSON | None:
        """Revoke one by id: its view, or None when no managed token has that id."""
        ...


# --- what the registrar hooks receive --------------------------------------------------------

OptionsCheck = Callable[[Mapping[str, Any], str, "Settings"], JSON]
"""Checks a transport's own fields (see `BackendSpec.check_options`), given the upstream's
`url` and the settings."""

CacheFactory = Callable[["Settings", "Store"], Cache]
AuthFactory = Callable[["Settings", str], Authenticator]
BackendFactory = Callable[[UpstreamConfig, "Settings"], Backend]


@dataclass(frozen=True, slots=True)
class CacheSpec:
    name: str
    factory: CacheFactory
    description: str = ""
    shared: bool = True
    """False when the cache lives in one process (so each worker has its own)."""


@dataclass(frozen=True, slots=True)
class AuthSpec:
    name: str
    factory: AuthFactory
    """Called with the settings and the JWT secret (configured or stored)."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    transport: str
    """The `transport` value of an upstream that this backend serves."""
    factory: BackendFactory
    description: str = ""
    local: bool = False
    """In-process tools: the gateway registers one upstream for it at start-up, with no prefix."""
    fields: frozenset[str] = frozenset()
    """Registration fields of this transport beyond the common ones (`spec`, `command`...)."""
    check_options: OptionsCheck | None = None
    """Checks those fields (the ones given, merged over the stored ones on a change; called
    with the upstream's url and the settings) and returns the options to store; raises
    `ValueError` with a message for the admin."""
    needs_url: bool = True
    """False when an upstream of this transport may be registered without a `url`."""
    sessionless: bool = False
    """True when the upstream holds no session for the gateway (each call stands alone, as
    with a REST API): a token-exchange upstream then needs no per-client sessions, since
    every call carries its own caller's token anyway."""
    secrets_field: str | None = None
    """A field (in `fields`) whose object of string values are credentials, such as a
    process's environment: kept encrypted at rest in place of headers (the backend reads
    them in `UpstreamConfig.headers`), shown by name only, never given to `check_options`."""
