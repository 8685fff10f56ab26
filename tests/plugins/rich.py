"""A local backend that speaks the whole protocol: tools, resources, templates, prompts and
completion, with progress and log notifications and cancellation, all in process.

The gateway's MCP endpoints relay to it exactly as to a remote upstream's full backend, so
their relays can be proved without a network upstream. Tests reach the instance serving
requests through the registry and read what it saw (`requests`, `cancelled`, ...).

It registers twice: as the local backend `rich` (tools under their own names) and as the
transport `rich-remote`, which a test may register as an upstream with a prefix to prove
that the gateway forwards the upstream's original names. That transport never opens its
URL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.plugin import (
    AskClient,
    BackendSpec,
    Notify,
    PromptDef,
    Registrar,
    ResourceDef,
    ResourceTemplateDef,
    Settings,
    ToolDef,
    UpstreamConfig,
    UpstreamError,
    hookimpl,
)

JSON = dict[str, Any]

OBJECT = {"type": "object", "properties": {"text": {"type": "string"}}}
ROUTED = {
    "type": "object",
    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
}
"""A 2026-07-28 tool whose `region` argument must be mirrored in `Mcp-Param-Region`."""
README = "rich://docs/readme"
CHANGELOG = "rich://docs/changelog"
ITEMS = "rich://items/{id}"
MISSING_ITEM = "rich://items/missing"
"""The local backend's URIs (the last matches the template but does not exist); an upstream
registered as `<name>` uses `<name>://` instead, because a URI belongs to one upstream only."""
LOG_LINES = (("debug", "debug line"), ("info", "info line"), ("error", "error line"))
"""What `rich_progress` logs, at these levels, between its two progress steps."""


def text_result(text: str) -> JSON:
    return {"content": [{"type": "text", "text": text}], "isError": False}


class RichBackend:
    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.scheme = f"{upstream.name}://"
        self.capabilities: JSON = {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "completions": {},
            "logging": {},
        }
        self.requests: list[tuple[str, JSON]] = []
        """Every request received through `request`, in order: (method, params)."""
        self.cancelled: list[str] = []
        """Tools whose call was cancelled while it ran."""
        self.notified: list[tuple[str, JSON]] = []
        self.slow_started = asyncio.Event()
        self.listener: Notify | None = None

    async def connect(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- discovery ---------------------------------------------------------------------

    async def list_tools(self) -> list[ToolDef]:
        return [
            ToolDef(name="rich_echo", input_schema=OBJECT, description="echoes its text"),
            ToolDef(name="rich_progress", input_schema=OBJECT, description="reports progress"),
            ToolDef(name="rich_slow", input_schema=OBJECT, description="waits to be cancelled"),
            ToolDef(name="rich_region", input_schema=ROUTED, description="names its region"),
        ]

    async def list_resources(self) -> list[ResourceDef]:
        return [
            ResourceDef(uri=f"{self.scheme}docs/readme", name="readme", mime_type="text/plain"),
            ResourceDef(
                uri=f"{self.scheme}docs/changelog", name="changelog", mime_type="text/plain"
            ),
        ]

    async def list_resource_templates(self) -> list[ResourceTemplateDef]:
        return [
            ResourceTemplateDef(
                uri_template=f"{self.scheme}items/{{id}}", name="item", mime_type="text/plain"
            )
        ]

    async def list_prompts(self) -> list[PromptDef]:
        return [
            PromptDef(
                name="rich_greet",
                description="a greeting",
                arguments=({"name": "who", "description": "whom to greet", "required": True},),
            ),
            PromptDef(name="rich_summary", description="a summary"),
        ]

    # --- requests ----------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self._tool(name, arguments, None, None)

    async def request(
        self,
        method: str,
        params: JSON,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        self.requests.append((method, params))
        if method == "tools/call":
            token = (params.get("_meta") or {}).get("progressToken")
            return await self._tool(
                params["name"], params.get("arguments") or {}, token, on_notification
            )
        if method == "resources/read":
            return self._read(params["uri"])
        if method in {"resources/subscribe", "resources/unsubscribe"}:
            return {}
        if method == "prompts/get":
            return self._prompt(params["name"], params.get("arguments") or {})
        if method == "completion/complete":
            ref, argument = params["ref"], params["argument"]
            typed = argument["value"]
            return {"completion": {"values": [f"{typed}-for-{ref.get('name')}"], "total": 1}}
        raise UpstreamError(self.upstream.name, -32601, f"Method not found: {method}")

    async def notify(self, method: str, params: JSON) -> None:
        self.notified.append((method, params))

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        self.listener = listener

    async def announce(self, method: str, params: JSON) -> None:
        """Send one of the upstream's own notifications, as its server stream would."""
        assert self.listener is not None, "the registry has not attached its listener"
        await self.listener(method, params)

    async def _tool(self, name: str, arguments: JSON, token: object, note: Notify | None) -> JSON:
        if name == "rich_echo":
            return text_result(str(arguments.get("text", "")))
        if name == "rich_progress":
            if note is not None and token is not None:
                await note(
                    "notifications/progress",
                    {"progressToken": token, "progress": 1, "total": 2, "message": "half"},
                )
            if note is not None:
                for level, data in LOG_LINES:
                    await note(
                        "notifications/message", {"level": level, "logger": "rich", "data": data}
                    )
            if note is not None and token is not None:
                await note("notifications/progress", {"progressToken": token, "progress": 2})
            return text_result("done")
        if name == "rich_region":
            return text_result(f"region {arguments.get('region')}")
        if name == "rich_slow":
            self.slow_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
            return text_result("finished")
        return {"content": [{"type": "text", "text": f"no tool {name}"}], "isError": True}

    def _read(self, uri: str) -> JSON:
        if uri in {f"{self.scheme}docs/readme", f"{self.scheme}docs/changelog"}:
            text = f"contents of {uri}"
        elif uri.startswith(f"{self.scheme}items/") and not uri.endswith("/missing"):
            text = f"item {uri.rsplit('/', 1)[1]}"
        else:
            raise UpstreamError(self.upstream.name, -32002, "Resource not found", {"uri": uri})
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}

    def _prompt(self, name: str, arguments: JSON) -> JSON:
        if name == "rich_greet":
            who = arguments.get("who", "nobody")
            message = {"role": "user", "content": {"type": "text", "text": f"Hello, {who}!"}}
            return {"description": "a greeting", "messages": [message]}
        if name == "rich_summary":
            message = {"role": "user", "content": {"type": "text", "text": "Summarise."}}
            return {"messages": [message]}
        raise UpstreamError(self.upstream.name, -32602, f"unknown prompt: {name}")


@hookimpl
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="rich",
            transport="rich",
            factory=RichBackend,
            description="tools, resources, prompts and completion, in process",
            local=True,
        )
    )
    register.add(
        BackendSpec(
            name="rich-remote",
            transport="rich-remote",
            factory=RichBackend,
            description="the same backend, registrable as an upstream with a prefix",
        )
    )
