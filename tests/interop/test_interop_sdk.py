"""The official MCP SDK's `Client` against the gateway running under gunicorn.

Both of the SDK's connect modes (`legacy`: the initialize handshake; `auto`: probe
`server/discover` first) over every MCP endpoint: the whole gateway at `/mcp`, a virtual
server at `/servers/{id}/mcp`, and the legacy HTTP+SSE transport at `/sse`. Behind the
gateway is our own upstream server, so every answer crosses a real upstream hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    REQUEST_TIMEOUT,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    TextContent,
    TextResourceContents,
)

from tests.conftest import free_port
from tests.support.gunicorn_process import (
    USER,
    GunicornGateway,
    admin_post,
    gunicorn_env,
    register_upstream,
)
from tests.support.sdk import sdk_client
from tests.upstreams.fixtures import eventually
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

T = TypeVar("T")

HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
# The SDK's own limit for the auto-mode probe; falling back must not wait for it.
PROBE_TIMEOUT = 10.0

VIRTUAL_SERVER = {
    "id": "vs",
    "name": "Virtual",
    "tools": ["own__echo", "own__progress", "own__sleep"],
    "resources": ["memo://one", "memo://items/{id}"],
    "prompts": ["own__greeting"],
}
OWN_TOOLS = {f"own__{name}" for name in ("echo", "add", "sleep", "fail", "big", "progress", "log")}
# Shorter than the gateway's TOOL_TIMEOUT, so only the client can be the one who cancels.
SLOW_CALL_SECONDS = 5.0
TOOL_TIMEOUT = "10"

UNKNOWN_CAPABILITIES_BUG = (
    "src bug: the gateway consults backend.capabilities before the upstream session was "
    "initialised, so as a worker's first request to an upstream it skips resources/subscribe "
    "and answers completion/complete with no values (src/gateway/mcp/methods.py "
    "resources_subscribe and complete; also modern.py listen)"
)

SHUTDOWN_BUG = (
    "src bug: on SIGTERM, open client streams are closed only by the hub's cleanup_ctx "
    "teardown, which aiohttp runs after waiting GUNICORN_GRACEFUL_TIMEOUT for handlers, so "
    "every stop takes that long and cuts the streams mid-body (src/gateway/mcp/streamable.py "
    "install, hub_ctx)"
)
# Long enough that a stop held up by it cannot pass for a prompt one.
GRACEFUL_TIMEOUT = 8.0


# --- waiting for what the SDK client hears ----------------------------------------------------


async def until_received(
    trigger: Callable[[], Awaitable[object]], received: Awaitable[T], within: float = 5.0
) -> T:
    """Fire `trigger` repeatedly until `received` completes: the gateway's own stream to its
    upstream opens just after the first request, so an early trigger may reach nobody."""
    waiting = asyncio.ensure_future(received)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            await trigger()
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            if done:
                return waiting.result()
        pytest.fail(f"nothing arrived within {within:g}s")
    finally:
        waiting.cancel()


def update_trigger(upstream: RunningUpstream, uri: str) -> Callable[[], Awaitable[object]]:
    return lambda: upstream.admin("POST", f"/admin/update-resource?uri={quote(uri, safe='')}")


# --- a gateway with our upstream behind it ---------------------------------------------------


def gateway_env(database_url: str, **extra: str) -> dict[str, str]:
    return gunicorn_env(database_url, CACHE_TYPE="memory", TOOL_TIMEOUT=TOOL_TIMEOUT, **extra)


@dataclass(frozen=True)
class Deployment:
    gateway: GunicornGateway
    upstream: RunningUpstream

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One gateway (one worker) for the whole module, our upstream registered as `own`, and
    the virtual server `vs` bundling part of it."""
    workdir = tmp_path_factory.mktemp("interop")
    upstream = start_own()
    gateway = GunicornGateway(
        gateway_env(f"sqlite:///{workdir / 'gateway.db'}"), free_port(), workdir, workers=1
    )
    try:
        gateway.start()
        register_upstream(gateway.url, upstream)
        admin_post(gateway.url, "/servers", VIRTUAL_SERVER)
        yield Deployment(gateway, upstream)
    finally:
        gateway.stop()
        stop_upstream(upstream)


@pytest.fixture
def fresh_deployment(
    gunicorn: Callable[..., GunicornGateway], tmp_path: Path, own_upstream: RunningUpstream
) -> Deployment:
    """A gateway of this test's own, whose worker has not talked to the upstream yet."""
    gateway = gunicorn(gateway_env(f"sqlite:///{tmp_path / 'gateway.db'}"), workers=1)
    register_upstream(gateway.url, own_upstream)
    return Deployment(gateway, own_upstream)


# --- what each mode and endpoint should give -------------------------------------------------


@dataclass(frozen=True)
class Case:
    mode: str
    path: str

    @property
    def id(self) -> str:
        return f"{self.mode}-{self.path.strip('/').replace('/', '-')}"

    @property
    def modern(self) -> bool:
        """The SDK's auto mode adopts 2026-07-28 where discover answers: Streamable HTTP."""
        return self.mode == "auto" and self.path.endswith("/mcp")

    @property
    def version(self) -> str:
        return MODERN_VERSION if self.modern else HANDSHAKE_VERSION

    @property
    def virtual(self) -> bool:
        return self.path.startswith("/servers/")


CASES = [
    Case(mode, path)
    for mode in ("legacy", "auto")
    for path in ("/mcp", f"/servers/{VIRTUAL_SERVER['id']}/mcp", "/sse")
]


@pytest.fixture(params=CASES, ids=lambda case: case.id)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def connect(
    deployment: Deployment, case: Case, **options: Any
) -> AbstractAsyncContextManager[Client]:
    return sdk_client(deployment.url + case.path, case.mode, **options)


async def cancelled_upstream(upstream: RunningUpstream) -> int:
    """Requests our upstream stopped because a `notifications/cancelled` named them."""
    return int((await upstream.stats())["cancelled"])


# --- the tests -------------------------------------------------------------------------------


async def test_mode_and_transport_decide_the_protocol_version(
    case: Case, deployment: Deployment
) -> None:
    started = time.monotonic()
    async with connect(deployment, case) as client:
        connected_after = time.monotonic() - started
        assert client.protocol_version == case.version
        assert client.server_info is not None and client.server_info.name == "aio-mcp-gateway"
    # Auto mode over /sse gets its discover refused on the stream and falls back at once.
    assert connected_after < PROBE_TIMEOUT / 4, connected_after


async def test_tools_are_listed_and_called_with_structured_content(
    case: Case, deployment: Deployment
) -> None:
    async with connect(deployment, case) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("own__echo", {"text": f"hello over {case.id}"})
    if case.virtual:
        assert names == set(VIRTUAL_SERVER["tools"])
    else:
        assert OWN_TOOLS <= names
    assert result.is_error is False
    assert result.content == [TextContent(type="text", text=f"hello over {case.id}")]
    assert result.structured_content == {"text": f"hello over {case.id}"}


async def test_static_and_templated_resources_are_listed_and_read(
    case: Case, deployment: Deployment
) -> None:
    async with connect(deployment, case) as client:
        uris = {resource.uri for resource in (await client.list_resources()).resources}
        templates = (await client.list_resource_templates()).resource_templates
        static = await client.read_resource("memo://one")
        templated = await client.read_resource("memo://items/42")
    expected = {"memo://one"} if case.virtual else {"memo://one", "memo://two", "memo://blob"}
    assert uris == expected
    assert [template.uri_template for template in templates] == ["memo://items/{id}"]
    assert static.contents == [
        TextResourceContents(
            uri="memo://one", mime_type="text/plain", text="The first memo says hello."
        )
    ]
    assert templated.contents == [
        TextResourceContents(uri="memo://items/42", mime_type="text/plain", text="Item 42 is here.")
    ]


async def test_a_subscriber_hears_when_the_upstream_updates_a_resource(
    case: Case, deployment: Deployment
) -> None:
    uri = "memo://one"
    trigger = update_trigger(deployment.upstream, uri)
    updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: object) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.put_nowait(str(message.params.uri))

    async with connect(deployment, case, message_handler=on_message) as client:
        # Reading first, as clients do, also works around UNKNOWN_CAPABILITIES_BUG.
        await client.read_resource(uri)
        if case.modern:
            # 2026-07-28 has no resources/subscribe: a listen stream carries the updates.
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                assert subscription.honored.resource_subscriptions == [uri]
                event = await until_received(trigger, anext(subscription))
            assert event == ResourceUpdated(uri=uri)
        else:
            with warnings.catch_warnings():
                # Deprecated by the SDK only because 2026-07-28 removed it.
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(uri)
            assert await until_received(trigger, updates.get()) == uri


async def test_a_prompt_is_got_and_its_arguments_completed(
    case: Case, deployment: Deployment
) -> None:
    async with connect(deployment, case) as client:
        names = [prompt.name for prompt in (await client.list_prompts()).prompts]
        prompt = await client.get_prompt("own__greeting", {"name": "Ada"})
        by_prompt = await client.complete(
            PromptReference(type="ref/prompt", name="own__greeting"),
            {"name": "name", "value": "Al"},
        )
        by_template = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri="memo://items/{id}"),
            {"name": "id", "value": "1"},
        )
    assert names == (["own__greeting"] if case.virtual else ["own__greeting", "own__summary"])
    assert [message.content for message in prompt.messages] == [
        TextContent(type="text", text="Please greet Ada warmly.")
    ]
    assert by_prompt.completion.values == ["Alan", "Alonzo"]
    assert by_template.completion.values == ["1", "10", "11"]


async def test_progress_reaches_the_callback_in_order(case: Case, deployment: Deployment) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(deployment, case) as client:
        result = await client.call_tool(
            "own__progress", {"steps": 4, "delay": 0.02}, progress_callback=on_progress
        )
    assert result.structured_content == {"steps": 4}
    assert seen == [(float(step), 4.0, f"step {step}") for step in range(1, 5)]


@pytest.mark.parametrize("abandoned_by", ["read-timeout", "task-cancel"])
async def test_an_abandoned_slow_call_is_cancelled_at_the_upstream(
    abandoned_by: str, case: Case, deployment: Deployment
) -> None:
    # Legacy clients send notifications/cancelled; 2026-07-28 clients close the request.
    upstream = deployment.upstream
    before = await cancelled_upstream(upstream)
    async with connect(deployment, case) as client:
        slow = {"seconds": SLOW_CALL_SECONDS}
        if abandoned_by == "read-timeout":
            with pytest.raises(MCPError) as raised:
                await client.call_tool("own__sleep", slow, read_timeout_seconds=0.5)
            assert raised.value.code == REQUEST_TIMEOUT
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.call_tool("own__sleep", slow)

        async def cancelled() -> bool:
            return await cancelled_upstream(upstream) > before

        await eventually(cancelled, timeout=2.0, what="the upstream's sleep being cancelled")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_virtual_server_refuses_a_tool_it_does_not_bundle(
    mode: str, deployment: Deployment
) -> None:
    async with sdk_client(f"{deployment.url}/servers/vs/mcp", mode) as client:
        with pytest.raises(MCPError):
            await client.call_tool("own__add", {"a": 1, "b": 2})


async def test_subscribe_as_the_first_request_to_an_upstream_reaches_it(
    fresh_deployment: Deployment,
) -> None:
    uri = "memo://one"
    updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: object) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.put_nowait(str(message.params.uri))

    url = f"{fresh_deployment.url}/mcp"
    async with sdk_client(url, "legacy", message_handler=on_message) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        trigger = update_trigger(fresh_deployment.upstream, uri)
        assert await until_received(trigger, updates.get(), within=2.0) == uri


async def test_completion_as_the_first_request_to_an_upstream_has_values(
    fresh_deployment: Deployment,
) -> None:
    async with sdk_client(f"{fresh_deployment.url}/mcp", "legacy") as client:
        completed = await client.complete(
            PromptReference(type="ref/prompt", name="own__greeting"),
            {"name": "name", "value": "Al"},
        )
    assert completed.completion.values == ["Alan", "Alonzo"]


async def test_a_legacy_sse_session_ends_when_its_client_disconnects(
    deployment: Deployment,
) -> None:
    sessions: list[str] = []
    transport = sse_client(
        f"{deployment.url}/sse", headers=USER, on_session_created=sessions.append
    )
    async with Client(transport, mode="legacy") as client:
        await client.list_tools()
    endpoint = f"{deployment.url}/message?session_id={sessions[0]}"
    # A notification makes the gateway write nothing to the stream, so it cannot be what
    # reveals the dead connection.
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}

    async def session_gone() -> bool:
        async with httpx2.AsyncClient(headers=USER, timeout=5.0) as http:
            return (await http.post(endpoint, json=note)).status_code == 404

    await eventually(session_gone, timeout=2.0, what="the SSE session ending with its stream")


async def test_stopping_the_gateway_promptly_ends_an_open_sse_stream(tmp_path: Path) -> None:
    env = gateway_env(
        f"sqlite:///{tmp_path / 'gateway.db'}", GUNICORN_GRACEFUL_TIMEOUT=f"{GRACEFUL_TIMEOUT:g}"
    )
    gateway = GunicornGateway(env, free_port(), tmp_path, workers=1)
    stopped_after = None
    try:
        await asyncio.to_thread(gateway.start)
        # The client may complain on its way out that the stream ended under it.
        with contextlib.suppress(Exception):
            async with sdk_client(f"{gateway.url}/sse", "legacy") as client:
                await client.list_tools()
                started = time.monotonic()
                await asyncio.to_thread(gateway.stop)
                stopped_after = time.monotonic() - started
    finally:
        gateway.stop()
    assert stopped_after is not None and stopped_after < GRACEFUL_TIMEOUT / 2, stopped_after
