"""The stdio backend against real processes (our SDK server, well-behaved or not), in both
process models: through the instance's stdio host (`shared`) and run by the worker itself
(`per-worker`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.contracts import BackendError
from gateway.mcpclient.asking import MAX_ANSWERING
from tests.stdio.conftest import (
    SLOW,
    MakeBackend,
    alive,
    gone,
    left_running,
    server_config,
    text_of,
    unruly_config,
)
from tests.support.proc import status_kib


async def last_exit(backend: Any, within: float = 5.0) -> dict[str, Any]:
    """The backend's process's last exit, once its status shows one."""
    deadline = time.monotonic() + within
    while (status := await backend.status())["last_exit"] is None:
        assert time.monotonic() < deadline, f"no exit within {within:g}s: {status}"
        await asyncio.sleep(0.1)
    return dict(status["last_exit"])


async def test_many_calls_in_flight_are_each_answered_by_their_own_reply(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    await backend.list_tools()  # started
    started = time.monotonic()
    slow = [backend.call_tool("sleep", {"seconds": 1.0}, SLOW) for _ in range(5)]
    echoes = [backend.call_tool("echo", {"text": f"n{i}"}, SLOW) for i in range(20)]
    results = await asyncio.gather(*slow, *echoes)
    assert [text_of(r) for r in results[5:]] == [f"n{i}" for i in range(20)]
    assert all(text_of(r) == "slept 1.0" for r in results[:5])
    # Five one-second sleeps at once, not one after another.
    assert time.monotonic() - started < 4.5


async def test_one_process_serves_every_call(make_backend: MakeBackend) -> None:
    backend = await make_backend(server_config())
    pids = {text_of(await backend.call_tool("pid", {}, SLOW)) for _ in range(5)}
    assert len(pids) == 1
    status = await backend.status()
    assert status["state"] == "running"
    assert str(status["pid"]) in pids


async def test_env_reaches_the_process_and_the_gateways_secrets_do_not(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_ENCRYPTION_SECRET", "the gateway's own")
    backend = await make_backend(server_config(env={"GREETING": "hello from env"}))
    result = await backend.call_tool("env", {"name": "GREETING"}, SLOW)
    assert text_of(result) == "hello from env"
    result = await backend.call_tool("env", {"name": "AUTH_ENCRYPTION_SECRET"}, SLOW)
    assert text_of(result) == ""
    result = await backend.call_tool("env", {"name": "PATH"}, SLOW)
    assert text_of(result) == os.environ["PATH"]


async def test_progress_of_a_call_reaches_its_caller(make_backend: MakeBackend) -> None:
    backend = await make_backend(server_config())
    seen: list[dict[str, Any]] = []

    async def on_notification(method: str, params: dict[str, Any]) -> None:
        seen.append({"method": method, **params})

    params = {"name": "progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok"}}
    result = await backend.request("tools/call", params, SLOW, on_notification)
    assert text_of(result) == "done"
    progress = [n for n in seen if n["method"] == "notifications/progress"]
    assert [n["progress"] for n in progress] == [1, 2, 3]
    assert {n["progressToken"] for n in progress} == {"tok"}


async def test_a_process_dying_mid_call_fails_the_call_and_restarts_with_backoff(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    first = text_of(await backend.call_tool("pid", {}, SLOW))
    in_flight = asyncio.ensure_future(backend.call_tool("sleep", {"seconds": 20}, SLOW))
    await asyncio.sleep(0.3)
    with pytest.raises(BackendError, match="exited with status 7 before answering tools/call"):
        await backend.call_tool("die", {}, SLOW)
    with pytest.raises(BackendError, match="exited with status 7"):
        await in_flight
    status = await backend.status()
    assert status["restarts"] == 1
    assert status["last_exit"]["status"] == 7
    second = text_of(await backend.call_tool("pid", {}, SLOW))
    assert second != first
    assert (await backend.status())["state"] == "running"
    assert not alive(int(first))


async def test_a_process_that_exits_at_once_fails_naming_its_status_and_stderr(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config("broken", "--misbehave", "exit"))
    with pytest.raises(BackendError) as failure:
        await backend.list_tools()
    assert "exited with status 3" in str(failure.value)
    assert "cannot start: no configuration" in str(failure.value)
    # Tried again only after a backoff, which grows with each quick exit.
    started = time.monotonic()
    with pytest.raises(BackendError, match="exited with status 3"):
        await backend.list_tools()
    assert time.monotonic() - started >= 0.4
    status = await backend.status()
    assert status["restarts"] >= 2
    assert status["last_exit"]["status"] == 3


async def test_a_process_hanging_in_initialize_times_out_and_is_killed(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(
        server_config("hangs", "--misbehave", "hang"), STDIO_INITIALIZE_TIMEOUT=1.0
    )
    started = time.monotonic()
    with pytest.raises(BackendError, match="did not answer initialize within 1s"):
        await backend.list_tools()
    assert time.monotonic() - started < SLOW
    # Killed, not left hanging (and, with a listener, started again after a backoff).
    assert (await last_exit(backend))["signal"] == "SIGKILL"


async def test_lines_on_stdout_that_are_not_json_are_logged_and_skipped(
    make_backend: MakeBackend, mode: str
) -> None:
    with capture_logs() as logs:
        backend = await make_backend(server_config("noisy", "--misbehave", "noise"))
        assert text_of(await backend.call_tool("echo", {"text": "hi"}, SLOW)) == "hi"
    if mode == "per-worker":  # the host logs in its own process
        skipped = [e for e in logs if e["event"] == "upstream stdout is not JSON-RPC"]
        assert {e["line"] for e in skipped} >= {"starting up...", "not json {", "[1, 2]"}
        assert all(e["upstream"] == "noisy" for e in skipped)


async def test_a_stderr_flood_neither_blocks_the_process_nor_floods_the_log(
    make_backend: MakeBackend, mode: str
) -> None:
    with capture_logs() as logs:
        backend = await make_backend(server_config("flood", "--misbehave", "flood"))
        for i in range(20):
            assert text_of(await backend.call_tool("echo", {"text": str(i)}, SLOW)) == str(i)
        await asyncio.sleep(1.5)
    if mode == "per-worker":
        lines = [e for e in logs if e["event"] == "upstream stderr"]
        seconds = 2 + SLOW  # an upper bound on how long the flood ran
        assert 0 < len(lines) <= 20 * seconds
        assert any(e["event"] == "upstream stderr lines not logged" for e in logs)
        assert all(len(e["line"]) <= 2048 for e in lines)


async def test_a_command_that_does_not_exist_fails_with_a_clear_error(
    make_backend: MakeBackend,
) -> None:
    config = server_config()
    config = type(config)(
        name="missing", transport="stdio", options={"command": "/nonexistent/mcp-server"}
    )
    backend = await make_backend(config, STDIO_COMMANDS=("/nonexistent/mcp-server",))
    with pytest.raises(BackendError, match="cannot start '/nonexistent/mcp-server'"):
        await backend.list_tools()


async def test_a_command_no_longer_allowed_is_not_run(make_backend: MakeBackend) -> None:
    backend = await make_backend(server_config(), STDIO_COMMANDS=("mcp-server-time",))
    with pytest.raises(BackendError, match="is not in STDIO_COMMANDS"):
        await backend.list_tools()


async def test_closing_the_backend_stops_its_process(
    make_backend: MakeBackend, sqlite_url: str
) -> None:
    backend = await make_backend(server_config())
    pid = int(text_of(await backend.call_tool("pid", {}, SLOW)))
    host = (await backend.status()).get("host_pid")
    await backend.close()
    # The host waits a few seconds for other workers, then stops everything.
    assert await gone(pid, within=25)
    if host is not None:
        assert await gone(int(host), within=10)


@pytest.mark.parametrize("mode", ["shared"])
async def test_a_host_that_dies_takes_its_processes_and_a_new_one_takes_over(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    server = int(text_of(await backend.call_tool("pid", {}, SLOW)))
    host = int((await backend.status())["host_pid"])
    in_flight = asyncio.ensure_future(backend.call_tool("sleep", {"seconds": 20}, SLOW))
    await asyncio.sleep(0.3)
    os.kill(host, signal.SIGKILL)
    with pytest.raises(BackendError, match="the stdio host went away"):
        await in_flight
    # The kernel kills the host's processes with it (PR_SET_PDEATHSIG).
    assert await gone(server, within=10)
    # The worker waits for the new host's greeting, so the next call is served by it.
    again = int(text_of(await backend.call_tool("pid", {}, SLOW)))
    assert again != server
    assert int((await backend.status())["host_pid"]) != host


@pytest.mark.parametrize("mode", ["shared"])
async def test_an_unusable_runtime_directory_fails_each_use_not_the_start(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config(), STDIO_RUNTIME_DIR="/proc/no-such-dir")
    with pytest.raises(BackendError, match="the stdio runtime directory"):
        await backend.list_tools()


async def test_processes_past_stdio_max_processes_are_refused_naming_it(
    make_backend: MakeBackend,
) -> None:
    first = await make_backend(server_config("first"), STDIO_MAX_PROCESSES=1)
    second = await make_backend(server_config("second"), STDIO_MAX_PROCESSES=1)
    assert text_of(await first.call_tool("echo", {"text": "one"}, SLOW)) == "one"
    with pytest.raises(BackendError, match=r"STDIO_MAX_PROCESSES \(1\)"):
        await second.call_tool("echo", {"text": "two"}, SLOW)


async def test_a_request_the_server_sends_its_client_is_answered_by_the_listeners_ask(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    asked: list[str] = []

    async def listener(method: str, params: dict[str, Any]) -> None:
        pass

    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append(method)
        return {"roots": [{"uri": "file:///srv/one"}, {"uri": "file:///srv/two"}]}

    backend.set_listener(listener, ask)
    result = await backend.call_tool("roots", {}, SLOW)
    assert text_of(result) == "file:///srv/one,file:///srv/two"
    assert asked == ["roots/list"]


async def test_a_call_out_of_time_fails_alone_and_the_process_carries_on(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    pid = text_of(await backend.call_tool("pid", {}, SLOW))
    with pytest.raises(BackendError, match=r"did not answer within 1s \(tools/call\)"):
        await backend.call_tool("sleep", {"seconds": 10}, 1.0)
    assert text_of(await backend.call_tool("echo", {"text": "still here"}, SLOW)) == "still here"
    assert text_of(await backend.call_tool("pid", {}, SLOW)) == pid


async def test_the_servers_own_notifications_reach_the_listener(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def listener(method: str, params: dict[str, Any]) -> None:
        await heard.put(method)

    backend.set_listener(listener)
    assert text_of(await backend.call_tool("announce", {}, SLOW)) == "announced"
    async with asyncio.timeout(10):
        assert await heard.get() == "notifications/tools/list_changed"


async def test_a_process_that_closes_its_stdout_fails_the_call_at_once_and_is_stopped(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(unruly_config("mute", "close-stdout"))
    started = time.monotonic()
    with pytest.raises(BackendError, match="closed its stdout before answering tools/list"):
        await backend.list_tools()
    # Not left to time out every request (SLOW) while the process lives on.
    assert time.monotonic() - started < SLOW / 2
    assert (await last_exit(backend))["signal"] == "SIGKILL"


async def test_a_process_that_exits_leaving_a_child_holding_its_pipes_is_seen_to_exit(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    marker = str(tmp_path / "forked-marker")
    backend = await make_backend(unruly_config("forks", "fork-and-exit", "0", marker))
    started = time.monotonic()
    with pytest.raises(BackendError, match="exited with status 0 before answering tools/list"):
        await backend.list_tools()
    assert time.monotonic() - started < SLOW / 2
    # The child it left behind, in its process group, is stopped with it.
    assert not await left_running(marker, within=10.0)


async def test_a_flood_of_requests_from_a_server_that_reads_no_answers_costs_bounded_memory(
    make_backend: MakeBackend, mode: str, tmp_path: Path
) -> None:
    written = tmp_path / "flood-written"
    backend = await make_backend(unruly_config("asker", "ask-flood", "100000", str(written)))
    with pytest.raises(BackendError, match="did not answer within 1s"):
        await backend.call_tool("anything", {}, 1.0)
    for _ in range(300):
        if written.exists():
            break
        await asyncio.sleep(0.1)
    assert written.exists(), "the server could not write its flood: stdout was not read"
    await asyncio.sleep(0.5)
    # Each request got at most a task of its own while MAX_ANSWERING were under way, not
    # one each (with its answer buffered for a server that reads none).
    if mode == "per-worker":
        assert len(asyncio.all_tasks()) < MAX_ANSWERING + 50
    else:
        host = int((await backend.status())["host_pid"])
        assert status_kib(host, "VmRSS") / 1024 < 200
