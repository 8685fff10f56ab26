"""Fixtures for the stdio backend: our own SDK server as a command, settings that allow it,
and a backend in either process model. The official npm servers (`npm_servers`) come from
`tests.support.npm`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.contracts import UpstreamConfig
from gateway.settings import Settings
from gateway_plugins.backend_stdio import stdio_backend
from tests.support.proc import alive as alive
from tests.support.proc import processes_running

REPO = Path(__file__).resolve().parents[2]
SERVER = str(REPO / "tests" / "upstreams" / "stdio_server.py")
UNRULY = str(REPO / "tests" / "upstreams" / "stdio_unruly.py")
PYTHON = sys.executable
# The SDK server starts in a second or two; a loaded machine takes longer.
SLOW = 30.0


def stdio_settings(database_url: str, mode: str = "shared", **plugin: Any) -> Settings:
    values = {"STDIO_COMMANDS": (PYTHON,), "STDIO_MODE": mode, **plugin}
    return Settings(database_url=database_url, tool_timeout=SLOW, plugin_values=values)


def server_config(
    name: str = "own", *args: str, env: dict[str, str] | None = None
) -> UpstreamConfig:
    return UpstreamConfig(
        name=name,
        transport="stdio",
        options={"command": PYTHON, "args": [SERVER, *args]},
        headers=env or {},
    )


def unruly_config(name: str, mode: str, *args: str) -> UpstreamConfig:
    """A server that breaks the stdio contract in `mode` after a correct initialize."""
    return UpstreamConfig(
        name=name, transport="stdio", options={"command": PYTHON, "args": [UNRULY, mode, *args]}
    )


MakeBackend = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["shared", "per-worker"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_backend(sqlite_url: str, mode: str) -> AsyncIterator[MakeBackend]:
    """`await make_backend(config, **plugin_settings)`: a started backend, closed after."""
    made: list[Any] = []

    async def make(config: UpstreamConfig, **plugin: Any) -> Any:
        backend = stdio_backend(config, stdio_settings(sqlite_url, mode, **plugin))
        await backend.start()
        made.append(backend)
        return backend

    yield make
    for backend in reversed(made):
        await backend.close()


async def gone(pid: int, within: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def left_running(argument: str, within: float) -> list[int]:
    """Wait up to `within` seconds for every process with `argument` among its arguments to
    end; the ones still running then (none: all ended)."""
    deadline = asyncio.get_running_loop().time() + within
    while running := await asyncio.to_thread(processes_running, argument):
        if asyncio.get_running_loop().time() >= deadline:
            return running
        await asyncio.sleep(0.1)
    return []


def text_of(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])
