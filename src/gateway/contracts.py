"""The contracts between the core and its plugins: caches, authenticators and backends.

Hooks only register factories (see `hookspecs.py`); the async work lives on the objects
they build, each with `start()` and `close()` run from one `cleanup_ctx`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class ResourceDef:
    uri: str
    name: str
    description: str = ""
    title: str | None = None
    mime_type: str | None = None
    size: int | None = None
    annotations: JSON | None = None


@dataclass(frozen=True, slots=True)
class ResourceTemplateDef:
    uri_template: str
    name: str
    description: str = ""
    title: str | None = None
    mime_type: str | None = None
    annotations: JSON | None = None


@dataclass(frozen=True, slots=True)
class PromptDef:
    name: str
    description: str = ""
    title: str | None = None
    arguments: tuple[JSON, ...] = ()
    """MCP `PromptArgument` objects: name, description, required."""


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

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


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


# --- what the registrar hooks receive --------------------------------------------------------

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
