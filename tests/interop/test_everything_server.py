"""The gateway is invisible to a client of the official reference server.

`@modelcontextprotocol/server-everything` (npm) exercises every feature of the protocol.
Each test runs one scenario with the official SDK's `Client` twice, once straight against
the server and once through a gateway (gunicorn, one worker), and compares what the client
saw. It does so for both ways the gateway reaches an upstream: the server running as a
Streamable HTTP server, registered `"transport": "streamable-http"` (compared with a client
of that same server), and the server as a command, registered `"transport": "stdio"`
(compared with a client that launches the command itself). Through the gateway, tools and
prompts carry the upstream's prefix (`every__echo`); resources keep their URIs.

Both clients speak the handshake era (`mode="legacy"`): the server knows no later
protocol, so the SDK's `auto` mode ends up there too when it talks to it directly.

What differs by design is asserted as such, each where it shows (README, "What does not
pass through"): the gateway answers `initialize` as itself and lists in its own order; it
relays no tasks, so a tool only a task can run is not listed and the rest have no
`execution`; over Streamable HTTP it discovers in a session of its own, so a resource the
server makes in the shared session cannot be read; and what the server asks or logs outside
any call (its roots request and log messages on its GET stream, its log of a subscription)
reaches no client.

The server (no host setting: it listens on every interface, on a free port) gets an
environment of `PATH` and its port only, so its `get-env` tool shows nothing of ours.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceListChangedNotification,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    Root,
    TextContent,
)

from tests.conftest import free_port
from tests.support.gunicorn_process import (
    GunicornGateway,
    admin_post,
    gunicorn_env,
    start_together,
)
from tests.support.sdk import sdk_client
from tests.upstreams.processes import accepts_connections, end_process

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(60),
    # Subscriptions, logging levels and roots are deprecated by the SDK only because
    # 2026-07-28 removed them; the handshake era spoken here has them.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

JSON = dict[str, Any]
COMMAND = "mcp-server-everything"
ROUTES = ("streamable-http", "stdio")
PREFIXES = {"streamable-http": "every", "stdio": "everyio"}
TOOL_TIMEOUT = 10.0
URL_ELICITATION = "trigger-url-elicitation"
RESOURCE_NOT_FOUND = -32002
QUIET = 0.5
"""How long to listen for something that must not arrive."""


# --- the server, directly and through the gateway ---------------------------------------------


def server_environment(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


@dataclass(frozen=True)
class Side:
    """One way to reach the server: how a client connects, and the prefix names carry."""

    label: str
    prefix: str
    connect: Callable[..., AbstractAsyncContextManager[Client]]

    def name(self, bare: str) -> str:
        return f"{self.prefix}__{bare}" if self.prefix else bare

    def bare(self, name: str) -> str | None:
        """The server's own name for `name`; None for a name that is not the server's."""
        if not self.prefix:
            return name
        head, _, rest = name.partition("__")
        return rest if head == self.prefix else None


@dataclass(frozen=True)
class Pair:
    route: str
    """How the gateway reaches the server: `streamable-http` or `stdio`."""
    direct: Side
    gateway: Side

    @property
    def over_http(self) -> bool:
        return self.route == "streamable-http"


@dataclass
class Deployment:
    command: str
    upstream_url: str
    gateways: dict[str, GunicornGateway] = field(default_factory=dict)


def start_everything(command: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The server as a Streamable HTTP server on a free port; retried on another port when
    someone took the first before the server bound it."""
    for _ in range(3):
        port = free_port()
        with (workdir / f"everything-{port}.log").open("wb") as log:
            process = subprocess.Popen(
                [command, "streamableHttp"],
                env=server_environment(PORT=str(port)),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if accepts_connections(port):
                return process, port
            time.sleep(0.05)
        end_process(process)
    raise RuntimeError(f"{command} streamableHttp did not start; see its log in {workdir}")


@pytest.fixture(scope="module")
def deployment(npm_servers: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The server over HTTP, and two gateways: one with it registered as a Streamable HTTP
    upstream, one running it as a stdio upstream."""
    workdir = tmp_path_factory.mktemp("everything")
    command = str(npm_servers / COMMAND)
    process, port = start_everything(command, workdir)
    found = Deployment(command, f"http://127.0.0.1:{port}/mcp")
    for route in ROUTES:
        env = gunicorn_env(
            f"sqlite:///{workdir / f'{route}.db'}",
            CACHE_TYPE="memory",
            TOOL_TIMEOUT=f"{TOOL_TIMEOUT:g}",
            STDIO_COMMANDS=command,
        )
        found.gateways[route] = GunicornGateway(env, free_port(), workdir, workers=1)
    try:
        start_together(*found.gateways.values())
        admin_post(
            found.gateways["streamable-http"].url,
            "/upstreams",
            {
                "name": PREFIXES["streamable-http"],
                "url": found.upstream_url,
                "transport": "streamable-http",
            },
        )
        admin_post(
            found.gateways["stdio"].url,
            "/upstreams",
            {
                "name": PREFIXES["stdio"],
                "transport": "stdio",
                "command": command,
                "args": ["stdio"],
            },
        )
        yield found
    finally:
        for gateway in found.gateways.values():
            gateway.stop()
        end_process(process)


def direct_side(deployment: Deployment, route: str) -> Side:
    if route == "stdio":
        parameters = StdioServerParameters(
            command=deployment.command, args=["stdio"], env=server_environment()
        )

        def launch(**options: Any) -> AbstractAsyncContextManager[Client]:
            return Client(stdio_client(parameters), mode="legacy", **options)

        return Side("directly over stdio", "", launch)

    @asynccontextmanager
    async def over_http(**options: Any) -> AsyncIterator[Client]:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(10.0, read=30.0)) as http:
            transport = streamable_http_client(deployment.upstream_url, http_client=http)
            async with Client(transport, mode="legacy", **options) as client:
                yield client

    return Side("directly over Streamable HTTP", "", over_http)


def gateway_side(deployment: Deployment, route: str) -> Side:
    url = f"{deployment.gateways[route].url}/mcp"

    def through(**options: Any) -> AbstractAsyncContextManager[Client]:
        return sdk_client(url, "legacy", **options)

    return Side(f"through the gateway ({route} upstream)", PREFIXES[route], through)


@pytest.fixture(params=ROUTES)
def pair(request: pytest.FixtureRequest, deployment: Deployment) -> Pair:
    route = str(request.param)
    return Pair(route, direct_side(deployment, route), gateway_side(deployment, route))


# --- what a client saw, in a form both sides can be compared in ---------------------------------

_TIME = re.compile(r"created at \d{1,2}:\d{2}:\d{2}(\s?[AP]M)?")
_SESSION = re.compile(r"\s*(-\s*)?(from )?[Ss]ession(Id)? [0-9a-f-]{36}|for session \S+")


def steady(value: Any) -> Any:
    """`value` as plain JSON without what changes from one call to the next: the time a
    resource was made (also inside a base64 blob) and the server's session ids."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        found = {key: steady(item) for key, item in value.items()}
        if isinstance(value.get("blob"), str):
            found["blob"] = steady(base64.b64decode(value["blob"]).decode("utf-8", "replace"))
        return found
    if isinstance(value, list):
        return [steady(item) for item in value]
    if isinstance(value, str):
        return _SESSION.sub("", _TIME.sub("created at TIME", value))
    return value


def unprefixed(side: Side, value: Any, key: str = "name") -> Any:
    """A dumped listing entry (or a list of them) with the prefix taken off its `key`."""
    if isinstance(value, list):
        return [unprefixed(side, item, key) for item in value]
    bare = side.bare(value[key])
    return {**value, key: bare}


async def answer_sampling(context: Any, params: Any) -> CreateMessageResult:
    asked = params.messages[0].content.text
    return CreateMessageResult(
        role="assistant", content=TextContent(type="text", text=f"sampled: {asked}"), model="m"
    )


ELICITED = {"name": "Ada Lovelace", "check": True, "integer": 7, "number": 2.5}


async def answer_elicitation(context: Any, params: Any) -> ElicitResult:
    if getattr(params, "mode", None) == "url":
        return ElicitResult(action="accept")
    assert "name" in params.requested_schema["properties"]
    return ElicitResult(action="accept", content=ELICITED)


ROOTS = [Root(uri="file:///srv/project", name="project")]


async def answer_roots(context: Any) -> ListRootsResult:
    return ListRootsResult(roots=ROOTS)


ANSWERING: JSON = {
    "sampling_callback": answer_sampling,
    "elicitation_callback": answer_elicitation,
    "list_roots_callback": answer_roots,
}


async def on_both(pair: Pair, scenario: Callable[[Side], Any]) -> tuple[Any, Any]:
    """What `scenario` saw directly and through the gateway, one after the other."""
    direct = await scenario(pair.direct)
    through = await scenario(pair.gateway)
    return direct, through


# --- listings ----------------------------------------------------------------------------------


async def tool_listing(side: Side) -> dict[str, JSON]:
    async with side.connect(**ANSWERING) as client:
        tools = await every_page(client.list_tools, "tools")
    listed = {}
    for tool in tools:
        dumped = steady(tool)
        bare = side.bare(dumped["name"])
        if bare is not None:
            listed[bare] = {**dumped, "name": bare}
    return listed


async def every_page(list_page: Callable[..., Any], key: str) -> list[Any]:
    """Every entry of a listing, page after page."""
    items: list[Any] = []
    cursor = None
    for _ in range(100):
        page = await list_page(cursor=cursor)
        items.extend(getattr(page, key))
        cursor = page.next_cursor
        if cursor is None:
            return items
    pytest.fail(f"{key}: more than 100 pages")


def as_the_gateway_lists(tools: dict[str, JSON]) -> dict[str, JSON]:
    """The server's own listing as the gateway relays it: without the tools only a task can
    run, and without `execution` (the gateway's calls are never tasks)."""
    relayed = {}
    for name, tool in tools.items():
        if tool.get("execution", {}).get("taskSupport") == "required":
            continue
        relayed[name] = {key: value for key, value in tool.items() if key != "execution"}
    return relayed


async def test_the_tools_are_listed_alike(pair: Pair) -> None:
    direct, through = await on_both(pair, tool_listing)
    assert {"echo", "get-sum", "trigger-sampling-request", URL_ELICITATION} <= set(direct)
    assert direct["simulate-research-query"]["execution"] == {"taskSupport": "required"}
    assert through == as_the_gateway_lists(direct)


async def test_resources_and_templates_are_listed_alike(pair: Pair) -> None:
    async def listings(side: Side) -> tuple[list[JSON], list[JSON]]:
        async with side.connect() as client:
            resources = await every_page(client.list_resources, "resources")
            templates = await every_page(client.list_resource_templates, "resource_templates")
        by_uri = sorted(steady(resources), key=lambda item: item["uri"])
        by_template = sorted(steady(templates), key=lambda item: item["uriTemplate"])
        return by_uri, by_template

    direct, through = await on_both(pair, listings)
    resources, templates = direct
    assert len(resources) > 3 and len(templates) == 2
    assert through == direct


async def test_prompts_are_listed_alike(pair: Pair) -> None:
    async def listing(side: Side) -> list[JSON]:
        async with side.connect() as client:
            prompts = await every_page(client.list_prompts, "prompts")
        return sorted(unprefixed(side, steady(prompts)), key=lambda item: item["name"])

    direct, through = await on_both(pair, listing)
    assert "args-prompt" in [prompt["name"] for prompt in direct]
    assert through == direct


async def test_the_gateway_answers_initialize_as_itself(pair: Pair) -> None:
    async with pair.direct.connect() as client:
        direct = client.server_info, client.instructions, client.server_capabilities
    async with pair.gateway.connect() as client:
        through = client.server_info, client.instructions, client.server_capabilities
    assert direct[0] is not None and direct[0].name == "mcp-servers/everything"
    assert direct[1] and direct[2].tasks is not None
    assert through[0] is not None and through[0].name == "aio-mcp-gateway"
    assert through[1] is None and through[2].tasks is None
    for capability in ("tools", "resources", "prompts", "logging", "completions"):
        assert getattr(through[2], capability) is not None, capability


# --- tools -------------------------------------------------------------------------------------

PLAIN_CALLS: list[tuple[str, JSON]] = [
    ("echo", {"message": "hello"}),
    ("get-sum", {"a": 2, "b": 40.5}),
    ("get-structured-content", {"location": "Chicago"}),
    ("get-annotated-message", {"messageType": "error", "includeImage": True}),
    ("get-annotated-message", {"messageType": "success"}),
    ("get-tiny-image", {}),
    ("get-resource-links", {"count": 4}),
    ("get-resource-reference", {"resourceType": "Text", "resourceId": 3}),
    ("get-resource-reference", {"resourceType": "Blob", "resourceId": 2}),
    (
        "gzip-file-as-resource",
        {"name": "a.gz", "data": "data:text/plain;base64,aGVsbG8=", "outputType": "resource"},
    ),
]


async def test_every_plain_tool_answers_alike(pair: Pair) -> None:
    async def calls(side: Side) -> list[Any]:
        async with side.connect() as client:
            await client.list_tools()
            return [
                steady(await client.call_tool(side.name(tool), arguments))
                for tool, arguments in PLAIN_CALLS
            ]

    direct, through = await on_both(pair, calls)
    assert direct[2]["structuredContent"] == {
        "temperature": 36,
        "conditions": "Light rain / drizzle",
        "humidity": 82,
    }
    assert through == direct


async def test_arguments_a_tool_refuses_are_an_error_result_naming_them(pair: Pair) -> None:
    # The gateway checks arguments against the input schema itself, so the words differ.
    async def refused(side: Side) -> list[tuple[bool, bool]]:
        async with side.connect() as client:
            missing = await client.call_tool(side.name("echo"), {})
            mistyped = await client.call_tool(side.name("get-sum"), {"a": "two", "b": 1})
        return [
            (missing.is_error, "message" in str(missing.content)),
            (mistyped.is_error, "a" in str(mistyped.content) and "number" in str(mistyped.content)),
        ]

    direct, through = await on_both(pair, refused)
    assert through == direct == [(True, True), (True, True)]


async def test_progress_of_a_long_running_operation_arrives_alike(pair: Pair) -> None:
    async def operation(side: Side) -> tuple[Any, list[tuple[float, float | None, str | None]]]:
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        async with side.connect() as client:
            result = await client.call_tool(
                side.name("trigger-long-running-operation"),
                {"duration": 0.5, "steps": 5},
                progress_callback=on_progress,
            )
        return steady(result), seen

    direct, through = await on_both(pair, operation)
    assert direct[1] == [(float(step), 5.0, None) for step in range(1, 6)]
    assert through == direct


async def test_the_servers_sampling_request_reaches_the_clients_callback(pair: Pair) -> None:
    async def sample(side: Side) -> Any:
        async with side.connect(**ANSWERING) as client:
            return steady(
                await client.call_tool(
                    side.name("trigger-sampling-request"), {"prompt": "a haiku", "maxTokens": 9}
                )
            )

    direct, through = await on_both(pair, sample)
    assert "sampled: Resource trigger-sampling-request context: a haiku" in str(direct)
    assert through == direct


async def test_the_servers_elicitation_reaches_the_clients_callback(pair: Pair) -> None:
    async def elicit(side: Side) -> Any:
        async with side.connect(**ANSWERING) as client:
            return steady(await client.call_tool(side.name("trigger-elicitation-request"), {}))

    direct, through = await on_both(pair, elicit)
    assert "Name: Ada Lovelace" in str(direct)
    assert through == direct


async def test_a_url_elicitation_by_request_and_by_error_arrives_alike(pair: Pair) -> None:
    url = "https://example.com/authorize"

    async def elicit(side: Side) -> tuple[Any, Any, Any]:
        tool = side.name(URL_ELICITATION)
        async with side.connect(**ANSWERING) as client:
            asked = steady(await client.call_tool(tool, {"url": url, "elicitationId": "e1"}))
            arguments = {"url": url, "elicitationId": "e2", "errorPath": True}
            with pytest.raises(MCPError) as raised:
                await client.call_tool(tool, arguments)
            # The prerequisite's elicitation id is a fresh UUID each time.
            refused = raised.value.code, len(raised.value.data["elicitations"])
            retried = steady(await client.call_tool(tool, arguments))
        return asked, refused, retried

    direct, through = await on_both(pair, elicit)
    assert "User completed the URL elicitation flow" in str(direct[0])
    assert direct[1] == (-32042, 1)
    assert through == direct


async def test_the_roots_tool_sees_the_clients_roots(pair: Pair) -> None:
    async def roots(side: Side) -> str:
        async with side.connect(**ANSWERING) as client:
            result = await client.call_tool(side.name("get-roots-list"), {})
        return str(steady(result))

    direct, through = await on_both(pair, roots)
    assert "file:///srv/project" in direct
    if pair.over_http:
        # Asked on the upstream's GET stream, related to no call: no one client to ask.
        assert "no roots are currently configured" in through
    else:
        assert through == direct


# --- resources ---------------------------------------------------------------------------------


async def test_static_and_templated_resources_read_alike(pair: Pair) -> None:
    uris = [
        "demo://resource/static/document/instructions.md",
        "demo://resource/dynamic/text/5",
        "demo://resource/dynamic/blob/6",
    ]

    async def read(side: Side) -> list[Any]:
        async with side.connect() as client:
            found = [steady(await client.read_resource(uri)) for uri in uris]
            with pytest.raises(MCPError) as raised:
                await client.read_resource("demo://resource/dynamic/text/zero")
        return [*found, raised.value.code]

    direct, through = await on_both(pair, read)
    assert "Resource 5: This is a plaintext resource" in str(direct[1])
    assert through == direct


async def made_and_read(side: Side) -> tuple[Any, Any]:
    """Make a resource with a tool, wait for the list to change, and read the resource."""
    changed = asyncio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, ResourceListChangedNotification):
            changed.set()

    async with side.connect(message_handler=on_message) as client:
        made = await client.call_tool(
            side.name("gzip-file-as-resource"),
            {"name": "made.gz", "data": "data:text/plain;base64,aGVsbG8="},
        )
        link = made.content[0]
        async with asyncio.timeout(5):
            await changed.wait()
        read = await client.read_resource(str(link.uri))
    return steady(made), steady(read)


async def test_a_resource_the_server_makes_during_a_call_can_be_read(pair: Pair) -> None:
    if not pair.over_http:
        direct, through = await on_both(pair, made_and_read)
        assert direct[0]["content"][0]["type"] == "resource_link"
        assert through == direct
        return
    # Each HTTP session of the server has resources of its own, and the gateway discovers
    # an upstream in a session of its own: the resource made in the shared session is not
    # in the catalogue, so no list changes and reading it finds nothing.
    await made_and_read(pair.direct)
    async with pair.gateway.connect() as client:
        made = await client.call_tool(
            pair.gateway.name("gzip-file-as-resource"),
            {"name": "made.gz", "data": "data:text/plain;base64,aGVsbG8="},
        )
        with pytest.raises(MCPError) as raised:
            await client.read_resource(str(made.content[0].uri))
    assert raised.value.code == RESOURCE_NOT_FOUND


async def test_a_subscriber_hears_the_servers_updates(pair: Pair) -> None:
    uri = "demo://resource/dynamic/text/1"

    async def subscribe(side: Side) -> list[str]:
        updates: list[str] = []
        heard = asyncio.Event()

        async def on_message(message: object) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                updates.append(str(message.params.uri))
                heard.set()

        toggle = side.name("toggle-subscriber-updates")
        async with side.connect(message_handler=on_message) as client:
            await client.subscribe_resource(uri)
            started = await client.call_tool(toggle, {})
            try:
                async with asyncio.timeout(5):
                    await heard.wait()
            finally:
                # The updates are per upstream session: through the gateway, a shared one.
                stopped = await client.call_tool(toggle, {})
            await client.unsubscribe_resource(uri)
        assert "Started" in str(steady(started)) and "Stopped" in str(steady(stopped))
        return updates[:1]

    direct, through = await on_both(pair, subscribe)
    assert direct == [uri]
    assert through == direct


# --- prompts and completion ----------------------------------------------------------------------


async def test_prompts_are_got_alike(pair: Pair) -> None:
    gets: list[tuple[str, dict[str, str]]] = [
        ("simple-prompt", {}),
        ("args-prompt", {"city": "Lisbon"}),
        ("args-prompt", {"city": "Austin", "state": "Texas"}),
        ("completable-prompt", {"department": "Sales", "name": "Eve"}),
        ("resource-prompt", {"resourceType": "Blob", "resourceId": "4"}),
    ]

    async def get(side: Side) -> list[Any]:
        async with side.connect() as client:
            found = [steady(await client.get_prompt(side.name(n), a)) for n, a in gets]
            with pytest.raises(MCPError) as raised:
                await client.get_prompt(side.name("args-prompt"), {})
        return [*found, raised.value.code]

    direct, through = await on_both(pair, get)
    assert "What's weather in Austin, Texas?" in str(direct[2])
    assert through == direct


async def test_arguments_are_completed_alike(pair: Pair) -> None:
    async def complete(side: Side) -> list[Any]:
        prompt = PromptReference(type="ref/prompt", name=side.name("completable-prompt"))
        resource_prompt = PromptReference(type="ref/prompt", name=side.name("resource-prompt"))
        template = ResourceTemplateReference(
            type="ref/resource", uri="demo://resource/dynamic/text/{resourceId}"
        )
        async with side.connect() as client:
            asked = [
                await client.complete(prompt, {"name": "department", "value": "S"}),
                await client.complete(
                    prompt, {"name": "name", "value": ""}, {"department": "Sales"}
                ),
                await client.complete(resource_prompt, {"name": "resourceType", "value": "B"}),
                await client.complete(template, {"name": "resourceId", "value": "12"}),
                await client.complete(template, {"name": "resourceId", "value": "x"}),
            ]
        return [steady(answer.completion) for answer in asked]

    direct, through = await on_both(pair, complete)
    assert [answer["values"] for answer in direct] == [
        ["Sales", "Support"],
        ["David", "Eve", "Frank"],
        ["Blob"],
        ["12"],
        [],
    ]
    assert through == direct


# --- logging -----------------------------------------------------------------------------------

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


async def test_a_log_message_sent_during_a_call_arrives_at_the_clients_level(pair: Pair) -> None:
    async def logs(side: Side) -> list[bool]:
        heard: list[JSON] = []

        async def on_log(params: LoggingMessageNotificationParams) -> None:
            heard.append(steady(params))

        toggle = side.name("toggle-simulated-logging")
        async with side.connect(logging_callback=on_log) as client:
            await client.set_logging_level("debug")
            # Sends one message at once, then one every 5 s until toggled off.
            await client.call_tool(toggle, {})
            try:
                if side is pair.gateway and pair.over_http:
                    await asyncio.sleep(QUIET)
                else:
                    await wait_for(lambda: bool(heard))
            finally:
                await client.call_tool(toggle, {})
        return [entry["level"] in LEVELS for entry in heard[:1]]

    direct, through = await on_both(pair, logs)
    assert direct == [True]
    # Over HTTP the server sends it on its GET stream, related to no call; a shared upstream
    # session's own log messages are no one client's to hear.
    assert through == ([] if pair.over_http else direct)


async def test_a_log_message_outside_a_call_reaches_only_a_direct_client(pair: Pair) -> None:
    uri = "demo://resource/dynamic/text/2"

    async def logs(side: Side) -> list[JSON]:
        heard: list[JSON] = []

        async def on_log(params: LoggingMessageNotificationParams) -> None:
            heard.append(steady(params))

        async with side.connect(logging_callback=on_log) as client:
            await client.set_logging_level("info")
            # The server logs each subscription: not a call whose messages are relayed.
            await client.subscribe_resource(uri)
            if side is pair.direct:
                await wait_for(lambda: bool(heard))
            else:
                await asyncio.sleep(QUIET)
            await client.unsubscribe_resource(uri)
        return [{**entry, "data": entry["data"].strip()} for entry in heard[:1]]

    direct, through = await on_both(pair, logs)
    assert direct == [
        {"level": "info", "data": f"Received Subscribe Resource request for URI: {uri}"}
    ]
    assert through == []


async def wait_for(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"nothing arrived within {within:g}s")
        await asyncio.sleep(0.02)
