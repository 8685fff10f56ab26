"""`ClientBackend`: the `FullBackend` through which a call reaches a per-client upstream,
in the caller's own upstream session or, without a client session, in one opened for that
call alone (`gateway.upstream_sessions` holds them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.contracts import (
    JSON,
    AskClient,
    Notify,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
)

if TYPE_CHECKING:
    from gateway.upstream_sessions import UpstreamSessions


class ClientBackend:
    """The `FullBackend` a call to a per-client upstream goes through: the caller's own
    upstream session, or one for this request alone."""

    def __init__(self, pool: UpstreamSessions, upstream: str, client: str | None) -> None:
        self.pool = pool
        self.upstream = upstream
        self.client = client
        self.capabilities: JSON = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        """Per-client sessions hold no event stream; the shared session listens."""

    async def connect(self) -> None:
        if self.client is not None:
            held = await self.pool.acquire(self.upstream, self.client)
            self.capabilities = held.backend.capabilities
            return
        # The upstream's capabilities are the same in every session: ask the shared one
        # rather than open a session only for that.
        shared = self.pool.registry.full_backends.get(self.upstream)
        if shared is not None:
            await shared.connect()
            self.capabilities = shared.capabilities

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.call_tool(name, arguments, timeout)

    async def request(
        self,
        method: str,
        params: JSON,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.request(method, params, timeout, on_notification, on_request)

    async def notify(self, method: str, params: JSON) -> None:
        async with self.pool.using(self.upstream, self.client) as backend:
            await backend.notify(method, params)

    async def list_tools(self) -> list[ToolDef]:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.list_tools()

    async def list_resources(self) -> list[ResourceDef]:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.list_resources()

    async def list_resource_templates(self) -> list[ResourceTemplateDef]:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.list_resource_templates()

    async def list_prompts(self) -> list[PromptDef]:
        async with self.pool.using(self.upstream, self.client) as backend:
            return await backend.list_prompts()
