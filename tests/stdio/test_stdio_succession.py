"""A stdio process given up on before it exited, and the process started after it.

A discarded process (it closed its stdout, a call found it gone) is killed, but its exit is
seen a little later, by its own `_watch`; by then its successor may be starting or running.
The old process's end is recorded (`last_exit`) and changes nothing of its successor's: not
the state or pid `GET /upstreams/{name}` shows, not the client's place in
`StdioClient.running` (what STDIO_MAX_PROCESSES counts), not the restart count or backoff.
Stopping the old process (`_terminate`) leaves them alone too.

Each interleaving is forced, not waited for: real processes of our SDK server run by a
worker's own client (`StdioClient`), with the old process killed or stopped at the point
under test and its `_watch` task awaited there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.contracts import BackendError
from gateway_plugins.stdio.process import StdioClient, _ProcessLink
from tests.stdio.conftest import SLOW, alive, server_config, stdio_settings, text_of


def watch_of(link: _ProcessLink) -> asyncio.Task[None]:
    """The task that waits for the link's process to exit."""
    (watch,) = [t for t in link.tasks if getattr(t.get_coro(), "__name__", "") == "_watch"]
    return watch


async def finished(task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(SLOW):
        await asyncio.shield(task)


class SpawnHook(StdioClient):
    """Runs `before_spawn` once, when its next process is about to be spawned: inside
    `_open`, after the new process took the client's place in the count and before its pid
    is known."""

    before_spawn: Callable[[], Awaitable[None]] | None = None

    async def _spawn_process(self) -> asyncio.subprocess.Process:
        hook, self.before_spawn = self.before_spawn, None
        if hook is not None:
            await hook()
        return await super()._spawn_process()


MakeClient = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_client(sqlite_url: str) -> AsyncIterator[MakeClient]:
    """`await make_client(kind=StdioClient)`: a started client of our server, closed after."""
    made: list[StdioClient] = []

    async def make(kind: type[StdioClient] = StdioClient, max_processes: int = 16) -> Any:
        settings = stdio_settings(sqlite_url, "per-worker")
        client = kind(server_config(), settings, SLOW, None, max_processes)
        await client.start()
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        await client.close()


def snapshot(client: StdioClient) -> tuple[int, float, float]:
    """What decides the next restart: the count, when it may come, the backoff's delay."""
    return client.health.restarts, client._not_before, client._restart.delay


def assert_serving(client: StdioClient, successor: _ProcessLink, before: tuple[Any, ...]) -> None:
    assert client.health.state == "running"
    assert client.health.pid == successor.process.pid
    assert client in StdioClient.running
    assert snapshot(client) == before
    assert successor.lost is None and successor.process.returncode is None


async def test_an_old_process_exiting_after_its_successor_runs_records_its_exit_and_nothing_else(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    old = await client._current()
    before = snapshot(client)
    # Given up on (the first half of `_discard`), it still runs while the next use starts
    # its successor; the kill comes after.
    old.end("closed its stdout")
    successor = await client._current()
    assert successor is not old and old.process.returncode is None
    assert_serving(client, successor, before)

    client._discard(old, "closed its stdout")
    await finished(watch_of(old))

    assert client.health.last_exit is not None
    assert client.health.last_exit["signal"] == "SIGKILL"
    assert_serving(client, successor, before)
    pid = text_of(await client.call_tool("pid", {}, SLOW))
    assert pid == str(successor.process.pid)


async def test_an_old_process_exiting_while_its_successor_is_spawned_leaves_it_counted(
    make_client: MakeClient,
) -> None:
    client = await make_client(SpawnHook, max_processes=1)
    old = await client._current()
    before = snapshot(client)
    old.end("closed its stdout")

    async def old_exits() -> None:
        watch = watch_of(old)
        assert not watch.done(), "the old process was seen to exit before its successor began"
        client._discard(old, "closed its stdout")
        await finished(watch)

    client.before_spawn = old_exits
    successor = await client._current()

    assert old.process.returncode == -9
    assert client.health.last_exit is not None
    assert client.health.last_exit["signal"] == "SIGKILL"
    assert_serving(client, successor, before)
    # Counted, the successor holds the one process STDIO_MAX_PROCESSES allows.
    other = await make_client(max_processes=1)
    with pytest.raises(BackendError, match=r"STDIO_MAX_PROCESSES \(1\)"):
        await other._current()


async def test_stopping_an_old_process_after_its_successor_started_leaves_the_successor_alone(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    old = await client._current()
    before = snapshot(client)
    old.end("closed its stdout")
    successor = await client._current()

    await client._terminate(old)
    assert not alive(old.process.pid)
    assert_serving(client, successor, before)
    await finished(watch_of(old))
    assert client.health.last_exit is not None
    assert_serving(client, successor, before)
    pid = text_of(await client.call_tool("pid", {}, SLOW))
    assert pid == str(successor.process.pid)


async def test_stopping_an_old_process_while_its_successor_is_spawned_leaves_it_counted(
    make_client: MakeClient,
) -> None:
    client = await make_client(SpawnHook)
    old = await client._current()
    before = snapshot(client)
    old.end("closed its stdout")

    async def old_stops() -> None:
        await client._terminate(old)
        await finished(watch_of(old))

    client.before_spawn = old_stops
    successor = await client._current()

    assert not alive(old.process.pid)
    assert client.health.last_exit is not None
    assert_serving(client, successor, before)
