"""A local backend whose tools misbehave on purpose, to prove the gateway's error paths."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.plugin import (
    BackendError,
    BackendSpec,
    Registrar,
    Settings,
    ToolDef,
    UpstreamConfig,
    hookimpl,
)

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}


class FaultyBackend:
    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.ticks = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_tools(self) -> list[ToolDef]:
        return [
            ToolDef(name="faulty_crash", input_schema=SCHEMA, description="raises inside"),
            ToolDef(name="faulty_unreachable", input_schema=SCHEMA, description="backend error"),
            ToolDef(name="faulty_hang", input_schema=SCHEMA, description="never answers"),
            ToolDef(name="faulty_count", input_schema=SCHEMA, description="counts to n"),
            ToolDef(name="faulty_tick", input_schema=SCHEMA, description="calls so far"),
            ToolDef(name="faulty_error", input_schema=SCHEMA, description="an error result"),
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        if name == "faulty_crash":
            raise RuntimeError("a bug inside a backend")
        if name == "faulty_unreachable":
            raise BackendError(f"upstream '{self.upstream.name}' refused the connection")
        if name == "faulty_hang":
            await asyncio.sleep(3600)
        if name == "faulty_tick":
            self.ticks += 1
            return {"content": [{"type": "text", "text": str(self.ticks)}], "isError": False}
        if name == "faulty_error":
            self.ticks += 1
            return {"content": [{"type": "text", "text": "no"}], "isError": True}
        n = arguments.get("n", 0)
        return {
            "content": [{"type": "text", "text": str(n)}],
            "structuredContent": {"n": n},
            "isError": False,
        }


@hookimpl
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="faulty",
            transport="faulty",
            factory=FaultyBackend,
            description="misbehaving tools for tests",
            local=True,
        )
    )
