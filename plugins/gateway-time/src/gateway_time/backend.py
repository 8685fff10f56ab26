"""The time backend: serves the tools in `tools.py` in-process, as a `Backend`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.plugin import JSON, BackendError, Settings, ToolDef, UpstreamConfig

from gateway_time import tools

_HANDLERS: dict[str, Callable[[object], JSON]] = {
    tools.GET_SYSTEM_TIME.name: tools.get_system_time,
    tools.CONVERT_TIME.name: tools.convert_time,
}


class TimeBackend:
    """Answers from this process; there is no upstream to connect to."""

    def __init__(self, config: UpstreamConfig, settings: Settings) -> None:
        self.config = config

    async def start(self) -> None:
        # Listing the zone names walks the zone directories; do it once, off the loop,
        # so no call ever waits on the disk.
        await asyncio.to_thread(tools.zone_names)

    async def close(self) -> None:
        return None

    async def list_tools(self) -> list[ToolDef]:
        return list(tools.TOOLS)

    # The Backend contract fixes the signature; these calls never wait, so nothing to time out.
    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:  # noqa: ASYNC109
        handler = _HANDLERS.get(name)
        if handler is None:
            raise BackendError(f"the time backend has no tool {name!r}")
        return handler(arguments)


def create_time_backend(config: UpstreamConfig, settings: Settings) -> TimeBackend:
    return TimeBackend(config, settings)
