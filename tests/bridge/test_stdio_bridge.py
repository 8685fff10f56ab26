"""`aio-mcp-gateway bridge` as a stdio client launches it: the official SDK's stdio client
starts the command as a real process, and through it reaches a real gateway (gunicorn, two
workers sharing Redis) with our own upstream behind it, whose tools also ask the client
(sampling, elicitation, roots) while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import orjson
import pytest
import redis
from mcp import Client, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    REQUEST_TIMEOUT,
    LoggingMessageNotificationParams,
    ResourceUpdatedNotification,
    TextContent,
    TextResourceContents,
    ToolListChangedNotification,
)

from tests.bridge.conftest import Deployment
from tests.cluster.deployment import fetch
from tests.conftest import free_port
from tests.support.asking_client import ANSWERING, check_asking_tools, check_concurrent_samples
from tests.support.gunicorn_process import (
    ADMIN,
    USER,
    GunicornGateway,
    gunicorn_env,
)
from tests.transports.conftest import init_message
from tests.upstreams.fixtures import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

JSON = dict[str, Any]
BRIDGE = Path(sys.executable).with_name("aio-mcp-gateway")
STDIO_SERVER = Path(__file__).resolve().parents[1] / "upstreams" / "stdio_server.py"
TOKEN = USER["Authorization"].removeprefix("Bearer ")
SESSION_COPY_SECONDS = 2.5
"""Longer than a worker keeps its copy of a session (SessionStore.LOCAL_TTL)."""


def bridge_parameters(
    url: str, token: str | None = TOKEN, *extra: str, env: JSON | None = None
) -> StdioServerParameters:
    """The bridge as a desktop client's configuration launches it: the token in the
    environment, never on the command line."""
    variables = {"GATEWAY_TOKEN": token} if token is not None else {}
    return StdioServerParameters(
        command=str(BRIDGE),
        args=["bridge", "--url", url, *extra],
        env={**variables, "LOG_LEVEL": "info", **(env or {})},
        cwd=str(Path.cwd()),
    )


@contextlib.asynccontextmanager
async def bridged(
    deployment: Deployment, mode: str = "legacy", **options: Any
) -> AsyncIterator[Client]:
    async with Client(
        stdio_client(bridge_parameters(deployment.mcp_url)), mode=mode, **options
    ) as client:
        yield client


async def until_received(trigger: Any, received: asyncio.Future[Any], within: float = 20.0) -> Any:
    """Fire `trigger` until `received` completes: the gateway's stream to its upstream, and
    the bridge's GET stream to the gateway, open just after the handshake."""
    deadline = asyncio.get_running_loop().time() + within
    try:
        while asyncio.get_running_loop().time() < deadline:
            await trigger()
            done, _ = await asyncio.wait({received}, timeout=0.3)
            if done:
                return received.result()
        pytest.fail(f"nothing arrived within {within:g}s")
    finally:
        received.cancel()


# --- the whole protocol through the bridge --------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_stdio_client_lists_calls_reads_and_gets_prompts_through_the_bridge(
    deployment: Deployment, mode: str
) -> None:
    async with bridged(deployment, mode) as client:
        version = client.protocol_version
        tools = {tool.name for tool in (await client.list_tools()).tools}
        echoed = await client.call_tool("own__echo", {"text": "through stdio"})
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        read = await client.read_resource("memo://one")
        prompt = await client.get_prompt("own__greeting", {"name": "Ada"})
        failed = await client.call_tool("own__fail", {})
    # The SDK's auto mode finds 2026-07-28 behind the bridge, as it would over HTTP.
    assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert {"own__echo", "own__progress", "own__sample"} <= tools
    assert echoed.content == [TextContent(type="text", text="through stdio")]
    assert "memo://one" in resources
    assert isinstance(read.contents[0], TextResourceContents)
    assert [message.content for message in prompt.messages] == [
        TextContent(type="text", text="Please greet Ada warmly.")
    ]
    assert failed.is_error


async def test_progress_notifications_reach_the_stdio_client_in_order(
    deployment: Deployment,
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with bridged(deployment) as client:
        result = await client.call_tool(
            "own__progress", {"steps": 4, "delay": 0.02}, progress_callback=on_progress
        )
    assert result.structured_content == {"steps": 4}
    assert seen == [(float(step), 4.0, f"step {step}") for step in range(1, 5)]


async def test_log_messages_of_a_tool_reach_the_stdio_client(deployment: Deployment) -> None:
    received: list[LoggingMessageNotificationParams] = []

    async def logged(params: LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with bridged(deployment, logging_callback=logged) as client:
        result = await client.call_tool("own__log", {"level": "info", "message": "working"})
    assert not result.is_error
    assert [params.data for params in received] == ["working"]


async def test_sampling_elicitation_and_roots_asked_by_an_upstream_are_answered_by_the_stdio_client(
    deployment: Deployment,
) -> None:
    async with bridged(deployment, **ANSWERING) as client:
        await check_asking_tools(client, "own", ["first", "second"])
        await check_concurrent_samples(client)


async def test_a_catalogue_change_reaches_the_stdio_client_as_list_changed(
    deployment: Deployment,
) -> None:
    async with bridged(deployment, message_handler=(heard := ListChanges())) as client:
        await client.list_tools()
        await heard.after_a_change(deployment)


async def test_an_expired_gateway_session_is_renewed_without_the_client_noticing(
    deployment: Deployment,
) -> None:
    async with bridged(deployment, message_handler=(heard := ListChanges())) as client:
        assert not (await client.call_tool("own__echo", {"text": "before"})).is_error
        forgotten = await forget_sessions(deployment)
        after = await client.call_tool("own__echo", {"text": "after"})
        assert_renewed(deployment, forgotten)
        # The bridge's event stream moved to the renewed session too.
        await heard.after_a_change(deployment)
    assert after.content == [TextContent(type="text", text="after")]


async def test_a_renewed_session_keeps_the_clients_subscriptions(
    deployment: Deployment,
) -> None:
    uri = "memo://one"
    updated = asyncio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, ResourceUpdatedNotification) and str(message.params.uri) == uri:
            updated.set()

    async def trigger() -> None:
        await deployment.upstream.admin("POST", f"/admin/update-resource?uri={quote(uri)}")

    async with bridged(deployment, message_handler=on_message) as client:
        await client.read_resource(uri)
        with warnings.catch_warnings():
            # Deprecated by the SDK only because 2026-07-28 removed it.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        await until_received(trigger, asyncio.ensure_future(updated.wait()))
        forgotten = await forget_sessions(deployment)
        assert not (await client.call_tool("own__echo", {"text": "renew"})).is_error
        assert_renewed(deployment, forgotten)
        updated.clear()
        await until_received(trigger, asyncio.ensure_future(updated.wait()))


class ListChanges:
    """A client's message handler that notes `notifications/tools/list_changed`."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.toggles = itertools.cycle([False, True])

    async def __call__(self, message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            self.changed.set()

    async def after_a_change(self, deployment: Deployment) -> None:
        """Change the catalogue (disable, enable a tool) until the client hears of it."""
        url = f"{deployment.gateway.url}/tools/own__fail"

        async def trigger() -> None:
            reply = await fetch("PATCH", url, {"enabled": next(self.toggles)}, ADMIN)
            assert reply.status == 200, reply.body

        self.changed.clear()
        try:
            await until_received(trigger, asyncio.ensure_future(self.changed.wait()))
        finally:
            await fetch("PATCH", url, {"enabled": True}, ADMIN)


def session_keys(deployment: Deployment) -> list[bytes]:
    """The gateway's sessions, in the Redis that all its workers share."""
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        return list(client.scan_iter(f"{deployment.cache_prefix}:session:*"))
    finally:
        client.close()


async def forget_sessions(deployment: Deployment) -> set[bytes]:
    """Make the gateway forget every session, as when they expire: gone from the store that
    all its workers share, and from each worker's copy of a few seconds (whose use would
    write a session back). Returns the forgotten sessions' keys."""
    forgotten = set(session_keys(deployment))
    assert forgotten, "the gateway keeps no sessions where the test looks for them"
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        client.delete(*forgotten)
        await asyncio.sleep(SESSION_COPY_SECONDS)
        client.delete(*forgotten)
    finally:
        client.close()
    return forgotten


def assert_renewed(deployment: Deployment, forgotten: set[bytes]) -> None:
    assert set(session_keys(deployment)) - forgotten, "the bridge opened no new session"


class CuttableRelay:
    """A TCP relay in front of the gateway whose open connections a test can cut, as a
    network does, without the gateway knowing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttableRelay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def cut(self) -> None:
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        gateway_r, gateway_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open |= {client_w, gateway_w}
        for reader, writer in ((client_r, gateway_w), (gateway_r, client_w)):
            task = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()


async def test_a_call_whose_stream_is_cut_is_resumed_and_answered_with_nothing_lost(
    deployment: Deployment,
) -> None:
    async with CuttableRelay(deployment.gateway.port) as relay:
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)
            if progress == 2:
                relay.cut()

        url = f"http://127.0.0.1:{relay.port}/mcp"
        async with Client(stdio_client(bridge_parameters(url)), mode="legacy") as client:
            result = await client.call_tool(
                "own__progress", {"steps": 8, "delay": 0.3}, progress_callback=on_progress
            )
            assert relay.port and not result.is_error
    assert result.structured_content == {"steps": 8}
    assert seen == [float(step) for step in range(1, 9)]


async def test_a_stdio_client_reaches_a_stdio_server_the_gateway_runs(
    deployment: Deployment,
) -> None:
    body = {"name": "local", "transport": "stdio", "command": sys.executable}
    body["args"] = [str(STDIO_SERVER)]
    # Registering starts the server and lists its tools: slow on a busy machine.
    reply = await asyncio.to_thread(
        httpx2.post, f"{deployment.gateway.url}/upstreams", json=body, headers=ADMIN, timeout=60
    )
    assert reply.status_code == 201, reply.text
    steps: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async with bridged(deployment) as client:
        echoed = await client.call_tool("local__echo", {"text": "stdio at both ends"})
        done = await client.call_tool(
            "local__progress", {"steps": 3}, progress_callback=on_progress
        )
    assert echoed.content == [TextContent(type="text", text="stdio at both ends")]
    assert not done.is_error
    assert steps == [1.0, 2.0, 3.0]


# --- failures the client hears about --------------------------------------------------------


async def test_a_bad_token_gives_the_stdio_client_an_error_naming_the_refusal(
    deployment: Deployment,
) -> None:
    parameters = bridge_parameters(deployment.mcp_url, token="not-a-token")
    refused = await initialize_error(parameters)
    assert "the gateway answered HTTP 401 Unauthorized to initialize" in str(refused)


async def test_a_gateway_that_is_down_gives_the_stdio_client_an_error_naming_it(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    failed = await initialize_error(bridge_parameters(url))
    assert f"the gateway could not be reached at {url}: Connection refused" in str(failed)


async def initialize_error(parameters: StdioServerParameters) -> MCPError:
    """The error the client's `initialize` gets, out of the task groups that carry it."""
    with pytest.raises(BaseException) as raised:
        async with Client(stdio_client(parameters), mode="legacy"):
            pass
    found: list[MCPError] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, MCPError):
            found.append(exc)
        for inner in getattr(exc, "exceptions", ()):
            walk(inner)

    walk(raised.value)
    assert found, raised.value
    return found[0]


# --- the bridge's own stdio, read raw -------------------------------------------------------


def without_token() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "GATEWAY_TOKEN"}


async def bridge_process(
    parameters: StdioServerParameters,
    stdin: Any,
    environment: dict[str, str] | None = None,
    limit: int = 1 << 16,
) -> asyncio.subprocess.Process:
    """The bridge as a process of its own, its output and errors piped; `environment` is
    the test's own unless given, the parameters' variables on top."""
    return await asyncio.create_subprocess_exec(
        parameters.command,
        *parameters.args,
        env={**(os.environ if environment is None else environment), **(parameters.env or {})},
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=limit,
    )


async def bridge_run(
    parameters: StdioServerParameters, stdin: Any, environment: dict[str, str] | None = None
) -> tuple[int | None, bytes, bytes]:
    """The bridge's exit status, output and errors once it has ended by itself."""
    process = await bridge_process(parameters, stdin, environment)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, out, err


@dataclass
class RawBridge:
    process: asyncio.subprocess.Process

    async def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        await self.process.stdin.drain()

    async def receive(self) -> JSON:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 15)
        assert line, "the bridge closed its output"
        message: JSON = orjson.loads(line)
        return message


@contextlib.asynccontextmanager
async def raw_bridge(url: str, *extra: str) -> AsyncIterator[RawBridge]:
    parameters = bridge_parameters(url, TOKEN, *extra)
    process = await bridge_process(parameters, asyncio.subprocess.PIPE, limit=1 << 20)
    try:
        yield RawBridge(process)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.communicate(), 15)


INITIALIZE = init_message("2025-11-25")


async def test_lines_that_are_not_json_rpc_get_errors_and_the_bridge_carries_on(
    deployment: Deployment,
) -> None:
    async with raw_bridge(deployment.mcp_url, "--max-message-bytes", "4096") as bridge:
        await bridge.send(b"{not json")
        assert (await bridge.receive())["error"]["code"] == -32700
        await bridge.send(orjson.dumps({"jsonrpc": "2.0", "method": "x", "params": "y" * 9000}))
        too_long = await bridge.receive()
        assert too_long["error"]["code"] == -32600
        assert "--max-message-bytes" in too_long["error"]["message"]
        await bridge.send(b'{"jsonrpc": "2.0", "id": 7}')
        assert (await bridge.receive()) == {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {
                "code": -32600,
                "message": "Invalid Request: neither a request nor an answer",
            },
        }
        await bridge.send(orjson.dumps(INITIALIZE))
        initialized = await bridge.receive()
    assert initialized["id"] == 1
    assert initialized["result"]["protocolVersion"] == "2025-11-25"


async def test_the_bridge_ends_its_gateway_session_and_exits_0_at_the_end_of_input(
    deployment: Deployment,
) -> None:
    before = await session_count(deployment)
    async with raw_bridge(deployment.mcp_url) as bridge:
        await bridge.send(orjson.dumps(INITIALIZE))
        assert "result" in await bridge.receive()
        await bridge.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        await eventually_sessions(deployment, lambda n: n == before + 1)
        assert bridge.process.stdin is not None
        bridge.process.stdin.close()
        assert await asyncio.wait_for(bridge.process.wait(), 15) == 0
        assert bridge.process.stderr is not None
        log = await bridge.process.stderr.read()
    assert b"Traceback" not in log
    await eventually_sessions(deployment, lambda n: n == before)


async def session_count(deployment: Deployment) -> int:
    return await asyncio.to_thread(lambda: len(session_keys(deployment)))


async def eventually_sessions(deployment: Deployment, holds: Any) -> None:
    async def check() -> bool:
        return bool(holds(await session_count(deployment)))

    await eventually(check, timeout=10.0, what="the gateway's session count")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_call_the_stdio_client_gives_up_on_is_cancelled_at_the_upstream(
    deployment: Deployment, mode: str
) -> None:
    # 2025-11-25 passes notifications/cancelled on; 2026-07-28 closes the call's request.
    upstream = deployment.upstream
    before = int((await upstream.stats())["cancelled"])
    async with bridged(deployment, mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("own__sleep", {"seconds": 5}, read_timeout_seconds=0.5)
        assert raised.value.code == REQUEST_TIMEOUT

        async def cancelled() -> bool:
            return int((await upstream.stats())["cancelled"]) > before

        await eventually(cancelled, timeout=4.0, what="the upstream's sleep being cancelled")
        assert not (await client.call_tool("own__echo", {"text": "still here"})).is_error


async def test_input_from_a_file_is_carried_in_order_and_the_bridge_exits_0(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Requests written before the handshake's answer wait for its session.
    messages = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    script = tmp_path / "messages.jsonl"
    script.write_bytes(b"".join(orjson.dumps(message) + b"\n" for message in messages))
    # The token from a variable of the operator's choosing.
    parameters = bridge_parameters(
        deployment.mcp_url, None, "--token-env", "OUR_TOKEN", env={"OUR_TOKEN": TOKEN}
    )
    with script.open("rb") as stdin:
        status, out, err = await bridge_run(parameters, stdin, without_token())
    answers = {message["id"]: message for message in map(orjson.loads, out.splitlines())}
    assert status == 0, err.decode()
    assert answers[1]["result"]["protocolVersion"] == "2025-11-25"
    assert "own__echo" in {tool["name"] for tool in answers[2]["result"]["tools"]}


async def test_a_bridge_started_before_its_gateway_answers_errors_then_carries_on(
    tmp_path: Path, sqlite_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    gateway = GunicornGateway(gunicorn_env(sqlite_url), port, tmp_path, workers=2)
    async with raw_bridge(url) as bridge:
        await bridge.send(orjson.dumps(INITIALIZE))
        down = await bridge.receive()
        assert down["id"] == 1
        assert f"the gateway could not be reached at {url}" in down["error"]["message"]
        try:
            await asyncio.to_thread(gateway.start)
            await bridge.send(orjson.dumps({**INITIALIZE, "id": 2}))
            up = await bridge.receive()
        finally:
            await asyncio.to_thread(gateway.stop)
    assert up["id"] == 2
    assert up["result"]["protocolVersion"] == "2025-11-25"


async def test_requests_past_max_in_flight_are_refused_at_once_with_32029(
    deployment: Deployment,
) -> None:
    async with raw_bridge(deployment.mcp_url, "--max-in-flight", "1") as bridge:
        await bridge.send(orjson.dumps(INITIALIZE))
        assert "result" in await bridge.receive()
        await bridge.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        for request_id in (2, 3):
            call = {"name": "own__sleep", "arguments": {"seconds": 1}}
            message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call}
            await bridge.send(orjson.dumps(message))
        refused, answered = await bridge.receive(), await bridge.receive()
    assert refused["id"] == 3 and refused["error"]["code"] == -32029
    assert "--max-in-flight" in refused["error"]["message"]
    assert answered["id"] == 2 and answered["result"]["isError"] is False


async def test_a_url_that_is_not_http_stops_the_bridge_with_status_2() -> None:
    parameters = bridge_parameters("ftp://127.0.0.1/mcp")
    status, out, err = await bridge_run(parameters, asyncio.subprocess.PIPE)
    assert status == 2
    assert out == b""
    assert b"--url must be an http:// or https:// URL" in err


async def test_empty_input_from_dev_null_ends_the_bridge_with_status_0() -> None:
    parameters = bridge_parameters("http://127.0.0.1:1/mcp")
    status, out, err = await bridge_run(parameters, asyncio.subprocess.DEVNULL)
    assert status == 0, err.decode()
    assert out == b""
    assert b"Traceback" not in err
