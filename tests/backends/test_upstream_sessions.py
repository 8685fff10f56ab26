"""Per-client upstream sessions (`"session": "per-client"` on an upstream registration),
against our real test upstream with its per-session `counter` tool, through an in-process
gateway: each client session gets an upstream session of its own, ended with DELETE when
the client session ends or expires, at most `PER_CLIENT_SESSIONS_MAX` of them per worker;
requests without a client session get one each. Also what the MCP client package offers
for it: a backend that adopts a session another opened, without a handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.contracts import UpstreamConfig
from gateway.mcpclient import SessionState
from gateway.settings import Settings
from gateway_plugins.backend_mcp_http import McpHttpBackend
from tests.conftest import Client, GatewayFactory
from tests.support.mcp_session import ACCEPT_BOTH, open_session
from tests.transports.conftest import EventReader
from tests.upstreams.fixtures import eventually, stat_is
from tests.upstreams.processes import RunningUpstream

JSON = dict[str, Any]
UpstreamFactory = Callable[..., RunningUpstream]
VERSION = "2025-06-18"
MODERN = "2026-07-28"


# --- a client of the gateway ---------------------------------------------------------------


def _headers(session: str | None) -> dict[str, str]:
    headers = {"Accept": ACCEPT_BOTH, "MCP-Protocol-Version": VERSION}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return headers


async def count(client: Client, session: str | None, path: str = "/mcp") -> int:
    """Call the upstream's `counter` in a client session (None: without one)."""
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "own__counter", "arguments": {}},
    }
    response = await client.post(path, json=message, headers=_headers(session))
    assert response.status == 200, await response.text()
    body: JSON = await response.json()
    result = body["result"]
    assert result["isError"] is False, result
    return int(result["structuredContent"]["count"])


async def register(
    client: Client, admin: dict[str, str], upstream: RunningUpstream, **fields: Any
) -> JSON:
    payload = {"name": "own", "url": upstream.url, "transport": "streamable-http", **fields}
    response = await client.post("/upstreams", json=payload, headers=admin)
    assert response.status == 201, await response.text()
    body: JSON = await response.json()
    return body


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def counting_upstream(own_upstream_factory: UpstreamFactory) -> RunningUpstream:
    return own_upstream_factory("--counter")


GatewayStarter = Callable[..., Awaitable[Client]]


@pytest.fixture
def start(
    gateway: GatewayFactory,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
    counting_upstream: RunningUpstream,
) -> GatewayStarter:
    """A gateway with the counting upstream registered (`session` as given) and the user's
    token on every request."""

    async def started(session: str | None = "per-client", **settings: Any) -> Client:
        client = await gateway(**settings)
        fields = {} if session is None else {"session": session}
        await register(client, admin_headers, counting_upstream, **fields)
        client.session.headers.update(user_headers)
        return client

    return started


# --- one upstream session per client session ------------------------------------------------


async def test_per_client_upstream_gives_each_client_session_its_own_count(
    start: GatewayStarter,
) -> None:
    client = await start("per-client")
    first, second = await open_session(client, VERSION), await open_session(client, VERSION)
    assert [await count(client, first), await count(client, first)] == [1, 2]
    assert await count(client, second) == 1
    assert [await count(client, first), await count(client, second)] == [3, 2]


async def test_shared_upstream_gives_every_client_session_one_count(
    start: GatewayStarter,
) -> None:
    client = await start(None)
    first, second = await open_session(client, VERSION), await open_session(client, VERSION)
    counts = [await count(client, s) for s in (first, second, first, second)]
    assert counts == [1, 2, 3, 4]


async def test_a_client_session_opens_its_upstream_session_once(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    await count(client, await open_session(client, VERSION))
    await stat_is(counting_upstream, "open_streams", 1)  # the shared session is open too
    session = await open_session(client, VERSION)
    before = (await counting_upstream.stats())["initialize"]
    for _ in range(3):
        await count(client, session)
    assert (await counting_upstream.stats())["initialize"] == before + 1


async def test_the_shared_session_of_a_per_client_upstream_listens_for_its_notifications(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    await count(client, await open_session(client, VERSION))
    # One event stream: the shared session's; per-client sessions hold none.
    await stat_is(counting_upstream, "open_streams", 1)


async def settled_initializes(upstream: RunningUpstream, within: float = 5.0) -> int:
    """The upstream's count of initialize requests, once it has stopped moving."""
    deadline = asyncio.get_running_loop().time() + within
    last = (await upstream.stats())["initialize"]
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.3)
        now = (await upstream.stats())["initialize"]
        if now == last:
            return int(now)
        last = now
    return int(last)


async def test_resources_and_prompts_of_a_per_client_upstream_go_through_the_clients_session(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    session = await open_session(client, VERSION)
    await count(client, session)
    # The first per-client call also opens the worker's shared session, in the background:
    # count handshakes only once that has happened.
    initialised = await settled_initializes(counting_upstream)
    read = {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "memo://one"}}
    response = await client.post("/mcp", json=read, headers=_headers(session))
    assert (await response.json())["result"]["contents"][0]["text"].startswith("The first memo")
    prompt = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "prompts/get",
        "params": {"name": "own__greeting", "arguments": {"name": "Ada"}},
    }
    response = await client.post("/mcp", json=prompt, headers=_headers(session))
    assert "Ada" in (await response.json())["result"]["messages"][0]["content"]["text"]
    assert (await counting_upstream.stats())["initialize"] == initialised


# --- ending -----------------------------------------------------------------------------------


async def test_delete_of_the_client_session_deletes_its_upstream_session(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    session, other = await open_session(client, VERSION), await open_session(client, VERSION)
    await count(client, session)
    await count(client, other)
    deleted = (await counting_upstream.stats())["sessions_deleted"]
    response = await client.delete("/mcp", headers=_headers(session))
    assert response.status == 204
    await stat_is(counting_upstream, "sessions_deleted", deleted + 1)
    # The other client's session carries on.
    assert await count(client, other) == 2


async def test_the_end_of_a_legacy_sse_stream_deletes_its_upstream_session(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    stream = await client.get("/sse", headers={"Accept": "text/event-stream"})
    reader = EventReader(stream)
    endpoint = (await reader.next()).data
    messages: list[JSON] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {}},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "own__counter"}},
    ]
    for message in messages:
        assert (await client.post(endpoint, json=message)).status == 202
    answer = await reader.message()
    while answer.get("id") != 2:
        answer = await reader.message()
    assert answer["result"]["structuredContent"] == {"count": 1}
    deleted = (await counting_upstream.stats())["sessions_deleted"]
    stream.close()
    await stat_is(counting_upstream, "sessions_deleted", deleted + 1)


async def test_an_expired_client_session_deletes_its_upstream_session(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client", session_ttl=1.0)
    session = await open_session(client, VERSION)
    await count(client, session)
    deleted = (await counting_upstream.stats())["sessions_deleted"]
    await stat_is(counting_upstream, "sessions_deleted", deleted + 1)
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=_headers(session)
    )
    assert response.status == 404


async def test_past_the_bound_the_least_recently_used_upstream_session_ends(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client", per_client_sessions_max=2)
    oldest, middle, newest = [await open_session(client, VERSION) for _ in range(3)]
    assert [await count(client, s) for s in (oldest, middle)] == [1, 1]
    assert await count(client, middle) == 2  # `oldest` is now the least recently used
    deleted = (await counting_upstream.stats())["sessions_deleted"]
    with capture_logs() as logs:
        assert await count(client, newest) == 1
        await stat_is(counting_upstream, "sessions_deleted", deleted + 1)
    ended = [e for e in logs if "holds too many" in e["event"]]
    assert len(ended) == 1 and ended[0]["limit"] == 2
    assert await count(client, middle) == 3  # kept
    assert await count(client, oldest) == 1  # its upstream session ended: a new one


async def test_a_worker_leaves_its_upstream_sessions_open_when_it_stops(
    start: GatewayStarter, counting_upstream: RunningUpstream
) -> None:
    client = await start("per-client")
    await count(client, await open_session(client, VERSION))
    await stat_is(counting_upstream, "sessions", 2)  # the client's, and the shared one
    await client.close()
    # The shared session ends with the worker; the client's is left to the other workers.
    assert (await counting_upstream.stats())["sessions"] == 1


# --- requests without a client session --------------------------------------------------------


async def count_modern(client: Client) -> int:
    """Call the `counter` as a 2026-07-28 client does: no session, an envelope per request."""
    envelope = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test-client", "version": "1.0"},
    }
    params = {"name": "own__counter", "arguments": {}, "_meta": envelope}
    headers = {
        "Accept": ACCEPT_BOTH,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "own__counter",
    }
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    response = await client.post("/mcp", json=message, headers=headers)
    assert response.status == 200, await response.text()
    return int((await response.json())["result"]["structuredContent"]["count"])


@pytest.mark.parametrize("how", ["/rpc", "/mcp", MODERN])
async def test_each_request_without_a_client_session_gets_an_upstream_session_of_its_own(
    start: GatewayStarter, counting_upstream: RunningUpstream, how: str
) -> None:
    client = await start("per-client")
    deleted = (await counting_upstream.stats())["sessions_deleted"]
    for _ in range(3):
        assert await (count_modern(client) if how == MODERN else count(client, None, how)) == 1
    await stat_is(counting_upstream, "sessions_deleted", deleted + 3)


# --- registration -------------------------------------------------------------------------------


async def test_session_is_shown_shared_by_default_and_can_be_patched_to_per_client(
    start: GatewayStarter, admin_headers: dict[str, str]
) -> None:
    client = await start(None)
    listed = await (await client.get("/upstreams", headers=admin_headers)).json()
    assert [u["session"] for u in listed["upstreams"] if u["name"] == "own"] == ["shared"]
    response = await client.patch(
        "/upstreams/own", json={"session": "per-client"}, headers=admin_headers
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["session"] == "per-client"
    shown = await (await client.get("/upstreams/own", headers=admin_headers)).json()
    assert shown["session"] == "per-client"
    first, second = await open_session(client, VERSION), await open_session(client, VERSION)
    assert [await count(client, first), await count(client, second)] == [1, 1]


@pytest.mark.parametrize("value", ["private", "", 1, None, ["per-client"]])
async def test_a_session_value_other_than_shared_or_per_client_gets_422_naming_both(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    counting_upstream: RunningUpstream,
    value: object,
) -> None:
    client = await gateway()
    payload = {"name": "own", "url": counting_upstream.url, "session": value}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "'session' must be one of: shared, per-client" in message


async def test_per_client_is_refused_for_the_legacy_sse_transport_with_422(
    gateway: GatewayFactory, admin_headers: dict[str, str], own_upstream_legacy: RunningUpstream
) -> None:
    client = await gateway()
    payload = {
        "name": "old",
        "url": own_upstream_legacy.sse_url,
        "transport": "sse",
        "session": "per-client",
    }
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "'sse'" in message and "'shared'" in message
    payload["session"] = "shared"
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 201, await response.text()


# --- the MCP client package: adopting a session -------------------------------------------------


class OneSession:
    """A `SessionKeeper` for clients of one process: the first opens, the rest adopt."""

    def __init__(self) -> None:
        self.state: SessionState | None = None

    async def session(
        self, stale: str | None, initialise: Callable[[], Awaitable[SessionState]]
    ) -> SessionState:
        if self.state is None or self.state.session_id == stale:
            self.state = await initialise()
        return self.state


async def test_a_backend_with_a_keeper_adopts_the_session_another_opened_without_initialize(
    counting_upstream: RunningUpstream,
) -> None:
    config = UpstreamConfig(name="own", transport="streamable-http", url=counting_upstream.url)
    keeper = OneSession()
    first, second = (McpHttpBackend(config, Settings(tool_timeout=5.0)) for _ in range(2))
    for backend in (first, second):
        backend.keeper = keeper
        await backend.start()
    try:
        counts = []
        for backend in (first, second, first):
            result = await backend.call_tool("counter", {}, 5.0)
            counts.append(result["structuredContent"]["count"])
        assert counts == [1, 2, 3]
        assert (await counting_upstream.stats())["initialize"] == 1
        # The upstream forgets the session: the first to hear it opens a new one, once.
        await counting_upstream.admin("POST", "/admin/expire-sessions")
        counts = []
        for backend in (second, first):
            result = await backend.call_tool("counter", {}, 5.0)
            counts.append(result["structuredContent"]["count"])
        assert counts == [1, 2]
        assert (await counting_upstream.stats())["initialize"] == 2
        await second.detach()
        assert (await counting_upstream.stats())["sessions_deleted"] == 0
    finally:
        await first.close()
        await second.close()

    async def deleted() -> bool:
        return bool((await counting_upstream.stats())["sessions_deleted"] == 1)

    await eventually(deleted, what="the session ended by its last client")
