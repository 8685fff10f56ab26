"""A local full backend whose one tool moves at the test's pace, so a test can hold a call
between two progress notifications and do something (hang up, resume) in between.

`paced_steps {"steps": n, "gate": "a"}` waits for the test to `release("a")` before each
step, reports that step as progress, and answers `"<n> steps"` after the last. Tests reach
the instance through the registry and read which calls ended and which were cancelled.
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
SCHEMA = {
    "type": "object",
    "properties": {"steps": {"type": "integer"}, "gate": {"type": "string"}},
    "required": ["steps", "gate"],
}


class PacedBackend:
    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.capabilities: JSON = {"tools": {}}
        self.gates: dict[str, asyncio.Queue[None]] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.finished: list[str] = []
        """Gates whose call answered."""
        self.cancelled: list[str] = []
        """Gates whose call was cancelled while it waited."""

    def gate(self, name: str) -> asyncio.Queue[None]:
        return self.gates.setdefault(name, asyncio.Queue())

    def release(self, name: str, steps: int = 1) -> None:
        """Let the call behind gate `name` take `steps` more steps."""
        for _ in range(steps):
            self.gate(name).put_nowait(None)

    async def running(self, name: str) -> None:
        """Return once the call behind gate `name` has started."""
        await self.started.setdefault(name, asyncio.Event()).wait()

    async def connect(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_tools(self) -> list[ToolDef]:
        return [ToolDef(name="paced_steps", input_schema=SCHEMA, description="steps on cue")]

    async def list_resources(self) -> list[ResourceDef]:
        return []

    async def list_resource_templates(self) -> list[ResourceTemplateDef]:
        return []

    async def list_prompts(self) -> list[PromptDef]:
        return []

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self._steps(arguments, None, None)

    async def request(
        self,
        method: str,
        params: JSON,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        if method != "tools/call":
            raise UpstreamError(self.upstream.name, -32601, f"Method not found: {method}")
        token = (params.get("_meta") or {}).get("progressToken")
        return await self._steps(params.get("arguments") or {}, token, on_notification)

    async def notify(self, method: str, params: JSON) -> None:
        return None

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        return None

    async def _steps(self, arguments: JSON, token: object, note: Notify | None) -> JSON:
        steps, name = int(arguments["steps"]), str(arguments["gate"])
        self.started.setdefault(name, asyncio.Event()).set()
        try:
            for step in range(1, steps + 1):
                await self.gate(name).get()
                if note is not None and token is not None:
                    progress = {"progressToken": token, "progress": step, "total": steps}
                    await note("notifications/progress", progress)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        self.finished.append(name)
        return {"content": [{"type": "text", "text": f"{steps} steps"}], "isError": False}


@hookimpl
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="paced",
            transport="paced",
            factory=PacedBackend,
            description="a tool that steps when the test says so",
            local=True,
        )
    )
