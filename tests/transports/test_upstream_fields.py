"""Every field an upstream lists with its tools, resources, resource templates and prompts
(title, icons, `_meta`, annotations, output schema, MIME type, size, argument titles) reaches
the client unchanged, and so do the fields no schema gives them (an extension such as
`x-vendor`, a field of a later revision): on `/rpc`, on `/mcp` at every protocol version, on
the legacy SSE transport, on virtual servers (and in a search-mode server's
`describe_tool`), after the operator curates a tool, and from another gateway that only
loads the catalogue from the store, on SQLite and PostgreSQL. What the gateway changes by
design is only that: tools and prompts carry the upstream's prefix, and tools have no
`execution`. A field the gateway models but cannot use (an `inputSchema` that is no object)
is its own, never relayed as an unknown one.

Icons, `_meta` and unknown fields larger than their bounds, and icons whose `src` holds
control characters, are left out with a warning, and the rest of the entry is kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from structlog.testing import capture_logs

from gateway.catalogue import prompt_listing, tool_listing
from gateway.contracts import PromptDef, ToolDef
from gateway.listing_bounds import EXTRA_BYTES_MAX, ICONS_BYTES_MAX, META_BYTES_MAX
from gateway.store import PromptRecord, ToolRecord
from tests.backends.conftest import serving_mcp
from tests.conftest import Client, GatewayFactory, rpc
from tests.support.mcp_session import ACCEPT_BOTH, LATEST, init_message, open_session
from tests.transports.conftest import call
from tests.transports.test_mcp_modern import result_of
from tests.transports.test_mcp_sse import open_sse
from tests.upstreams.fixtures import UpstreamFactory
from tests.upstreams.mcp_server import unknown_fields
from tests.upstreams.processes import RunningUpstream, stop_upstream

JSON = dict[str, Any]
LISTINGS = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
Listings = dict[str, list[JSON]]
Page = Callable[[str, JSON], Awaitable[JSON]]
"""Sends one list request (method, params) and returns its result."""


async def every_listing(page: Page) -> Listings:
    """Each listing's entries, page after page, by result key."""
    listings: Listings = {}
    for method, key in LISTINGS.items():
        entries: list[JSON] = []
        params: JSON = {}
        for _ in range(100):
            result = await page(method, params)
            entries += result[key]
            if not result.get("nextCursor"):
                break
            params = {"cursor": result["nextCursor"]}
        listings[key] = entries
    return listings


async def upstream_listings(url: str) -> Listings:
    """What the upstream itself lists to a 2025-11-25 client."""
    async with ClientSession() as http:
        async with http.post(url, json=init_message(), headers={"Accept": ACCEPT_BOTH}) as reply:
            session = reply.headers["Mcp-Session-Id"]
        headers = {
            "Accept": ACCEPT_BOTH,
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": LATEST,
        }

        async def page(method: str, params: JSON) -> JSON:
            message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            async with http.post(url, json=message, headers=headers) as reply:
                result: JSON = (await reply.json())["result"]
                return result

        return await every_listing(page)


def ours(listings: Listings) -> Listings:
    """The upstream's entries of a gateway's listings, without the installed plugins' tools."""
    named = ("tools", "prompts")
    return {
        key: [e for e in entries if key not in named or e["name"].startswith("own__")]
        for key, entries in listings.items()
    }


def as_relayed(direct: Listings, prefix: str = "own__") -> Listings:
    """The upstream's listings as the gateway relays them: in its order, tools and prompts
    under the prefix, tools without `execution`; every other field as it was."""
    tools = [
        {**{k: v for k, v in t.items() if k != "execution"}, "name": prefix + t["name"]}
        for t in direct["tools"]
    ]
    prompts = [{**p, "name": prefix + p["name"]} for p in direct["prompts"]]
    return {
        "tools": sorted(tools, key=lambda t: t["name"]),
        "resources": sorted(direct["resources"], key=lambda r: r["uri"]),
        "resourceTemplates": sorted(direct["resourceTemplates"], key=lambda t: t["uriTemplate"]),
        "prompts": sorted(prompts, key=lambda p: p["name"]),
    }


@pytest.fixture
def upstream(own_upstream_factory: UpstreamFactory) -> RunningUpstream:
    return own_upstream_factory("--every-field")


@pytest.fixture
async def direct(upstream: RunningUpstream) -> Listings:
    listings = await upstream_listings(upstream.url)
    # The upstream really declares what is to be relayed, on every entry.
    for key, entries in listings.items():
        assert entries, key
        for entry in entries:
            assert {"title", "icons", "_meta", *unknown_fields("")} <= set(entry), entry
    tools = {t["name"]: t for t in listings["tools"]}
    assert {"outputSchema", "annotations", "execution"} <= set(tools["sleep"])
    assert {"size", "mimeType", "annotations"} <= set(listings["resources"][0])
    assert all("title" in a for p in listings["prompts"] for a in p["arguments"])
    return listings


async def register(
    gateway: GatewayFactory, admin_headers: dict[str, str], url: str, **settings: Any
) -> Client:
    client = await gateway(**settings)
    client.session.headers.update(admin_headers)
    payload = {"name": "own", "url": url, "transport": "streamable-http"}
    response = await client.post("/upstreams", json=payload)
    assert response.status == 201, await response.text()
    return client


@pytest.fixture
async def client(
    gateway: GatewayFactory, admin_headers: dict[str, str], upstream: RunningUpstream
) -> Client:
    return await register(gateway, admin_headers, upstream.url)


def on_rpc(client: Client, path: str = "/rpc") -> Page:
    async def page(method: str, params: JSON) -> JSON:
        message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        response = await client.post(path, json=message)
        assert response.status == 200, await response.text()
        result: JSON = (await response.json())["result"]
        return result

    return page


async def on_mcp(client: Client, version: str, path: str = "/mcp") -> Page:
    session = await open_session(client, version, path)

    async def page(method: str, params: JSON) -> JSON:
        headers = {"MCP-Protocol-Version": version}
        answer = await call(client, session, method, params, path=path, headers=headers)
        result: JSON = answer["result"]
        return result

    return page


# --- every transport ---------------------------------------------------------------------------


async def test_rpc_lists_every_field_the_upstream_declares(
    client: Client, direct: Listings
) -> None:
    assert ours(await every_listing(on_rpc(client))) == as_relayed(direct)


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_mcp_lists_every_field_at_each_handshake_version(
    client: Client, direct: Listings, version: str
) -> None:
    """Older schemas lack some of these fields, but none forbids a field it does not name
    (no `additionalProperties: false`), so every version gets them all, as `title` always
    did."""
    assert ours(await every_listing(await on_mcp(client, version))) == as_relayed(direct)


async def test_mcp_at_2026_07_28_lists_every_field(client: Client, direct: Listings) -> None:
    async def page(method: str, params: JSON) -> JSON:
        return await result_of(client, method, params)

    assert ours(await every_listing(page)) == as_relayed(direct)


async def test_the_legacy_sse_transport_lists_every_field(client: Client, direct: Listings) -> None:
    sse = await open_sse(client)
    await sse.request("initialize", init_message("2024-11-05")["params"])
    await sse.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    ids = iter(range(2, 1000))

    async def page(method: str, params: JSON) -> JSON:
        answer = await sse.request(method, params, request_id=next(ids))
        result: JSON = answer["result"]
        return result

    assert ours(await every_listing(page)) == as_relayed(direct)


# --- virtual servers and curation --------------------------------------------------------------


async def test_a_virtual_server_lists_every_field_of_its_members(
    client: Client, direct: Listings
) -> None:
    relayed = as_relayed(direct)
    bundle = {
        "id": "desk",
        "tools": ["own__echo", "own__sleep"],
        "resources": [
            relayed["resources"][0]["uri"],
            relayed["resourceTemplates"][0]["uriTemplate"],
        ],
        "prompts": ["own__greeting"],
    }
    response = await client.post("/servers", json=bundle)
    assert response.status == 201, await response.text()

    listed = await every_listing(await on_mcp(client, LATEST, "/servers/desk/mcp"))

    assert listed == {
        "tools": [t for t in relayed["tools"] if t["name"] in bundle["tools"]],
        "resources": relayed["resources"][:1],
        "resourceTemplates": relayed["resourceTemplates"][:1],
        "prompts": [p for p in relayed["prompts"] if p["name"] == "own__greeting"],
    }


async def test_describe_tool_of_a_search_server_shows_every_field(
    client: Client, direct: Listings
) -> None:
    [echo] = [t for t in as_relayed(direct)["tools"] if t["name"] == "own__echo"]
    response = await client.post(
        "/servers", json={"id": "finder", "tools": ["own__echo"], "tool_mode": "search"}
    )
    assert response.status == 201, await response.text()
    path = "/servers/finder/mcp"
    session = await open_session(client, path=path)

    answer = await call(
        client,
        session,
        "tools/call",
        {"name": "describe_tool", "arguments": {"name": "own__echo"}},
        path=path,
    )

    described = answer["result"]["structuredContent"]
    assert described == echo
    assert orjson.loads(answer["result"]["content"][0]["text"]) == echo


async def test_a_curated_tool_keeps_every_field_the_curation_does_not_set(
    client: Client, direct: Listings
) -> None:
    [echo] = [t for t in as_relayed(direct)["tools"] if t["name"] == "own__echo"]
    curation = {"alias": "say", "title": "Say", "annotations": {"openWorldHint": False}}
    response = await client.patch("/tools/own__echo", json=curation)
    assert response.status == 200, await response.text()

    tools = (await rpc(client, "tools/list"))["result"]["tools"]

    [said] = [t for t in tools if t["name"] == "say"]
    assert said == {
        **echo,
        "name": "say",
        "title": "Say",
        "annotations": {**echo["annotations"], "openWorldHint": False},
    }


# --- from the store ----------------------------------------------------------------------------


async def test_a_gateway_that_loads_the_catalogue_from_the_store_lists_every_field(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    upstream: RunningUpstream,
    direct: Listings,
    database_url: str,
) -> None:
    await register(gateway, admin_headers, upstream.url, database_url=database_url)
    # Nothing can be discovered again: what the second gateway lists comes from the store.
    stop_upstream(upstream)

    other = await gateway(database_url=database_url)
    other.session.headers.update(admin_headers)

    assert ours(await every_listing(on_rpc(other))) == as_relayed(direct)
    assert ours(await every_listing(await on_mcp(other, LATEST))) == as_relayed(direct)


# --- bounds ------------------------------------------------------------------------------------


def fixed_upstream(
    tools: list[JSON], prompts: list[JSON]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An upstream that lists these tools and prompts, each on one page."""
    results: dict[str, JSON] = {
        "initialize": {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "prompts": {}},
            "serverInfo": {"name": "fixed", "version": "1"},
        },
        "tools/list": {"tools": tools},
        "prompts/list": {"prompts": prompts},
    }

    async def handle(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405)
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        result = results.get(message["method"])
        if result is None:
            error = {"code": -32601, "message": "Method not found"}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "error": error})
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    return handle


SMALL_ICON = {"src": "https://icons.example/small.png", "sizes": ["16x16"]}


def oversized_upstream() -> Callable[[web.Request], Awaitable[web.Response]]:
    """An upstream whose one tool lists an icon with a control character, a `data:` icon
    past the bound, then a small icon, a `_meta` past its bound and unknown fields past
    theirs together (each alone fits); and whose one prompt lists icons, a `_meta` and
    unknown fields that fit."""
    huge = {"src": "data:image/png;base64," + "A" * ICONS_BYTES_MAX}
    bad = {"src": "https://icons.example/a\nb.png"}
    tool = {
        "name": "t",
        "inputSchema": {"type": "object"},
        "icons": [bad, huge, SMALL_ICON],
        "_meta": {"blob": "x" * META_BYTES_MAX},
        "x-half": "x" * (EXTRA_BYTES_MAX // 2),
        "x-other-half": "x" * (EXTRA_BYTES_MAX // 2),
    }
    prompt = {"name": "p", "icons": [SMALL_ICON], "_meta": {"k": "v"}, "x-vendor": {"k": "v"}}
    return fixed_upstream([tool], [prompt])


async def test_icons_meta_and_unknown_fields_past_their_bounds_are_left_out_with_a_warning(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    async with serving_mcp(oversized_upstream()) as url:
        with capture_logs() as logs:
            client = await register(gateway, admin_headers, url)
        listed = ours(await every_listing(on_rpc(client)))
        # The gateway lets go of its connections to the upstream before the upstream stops.
        await client.close()
    tools, prompts = listed["tools"], listed["prompts"]

    assert tools == [{"name": "own__t", "inputSchema": {"type": "object"}, "icons": [SMALL_ICON]}]
    assert prompts == [
        {"name": "own__p", "icons": [SMALL_ICON], "_meta": {"k": "v"}, "x-vendor": {"k": "v"}}
    ]
    [warning] = [entry for entry in logs if entry["event"].startswith("upstream listing trimmed")]
    assert warning["log_level"] == "warning"
    assert (warning["upstream"], warning["kind"], warning["entries"]) == ("own", "tools", ["t"])
    dropped = (warning["dropped_icons"], warning["dropped_meta"], warning["dropped_extra"])
    assert dropped == (2, 1, 1)


# --- the gateway's own fields ------------------------------------------------------------------


async def test_a_field_the_gateway_models_never_passes_as_an_unknown_one(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    """What the gateway cannot use of a field it models is left out, or replaced by its own
    value, and is not relayed as the upstream wrote it; the unknown fields beside it are."""
    tool = {
        "name": "t",
        "inputSchema": "no schema",
        "title": 7,
        "outputSchema": [],
        "icons": "no list",
        "execution": {"taskSupport": "optional"},
        "x-vendor": {"k": "v"},
    }
    prompt = {"name": "p", "arguments": "none", "_meta": "no object", "futureField": 1}
    async with serving_mcp(fixed_upstream([tool], [prompt])) as url:
        client = await register(gateway, admin_headers, url)
        listed = ours(await every_listing(on_rpc(client)))
        # The gateway lets go of its connections to the upstream before the upstream stops.
        await client.close()

    assert listed["tools"] == [
        {"name": "own__t", "inputSchema": {"type": "object"}, "x-vendor": {"k": "v"}}
    ]
    assert listed["prompts"] == [{"name": "own__p", "futureField": 1}]


def test_unknown_fields_that_name_the_gateways_own_are_not_listed() -> None:
    """A row whose unknown fields hold modelled keys (written by hand, or by another
    version) lists the gateway's fields, and leaves out those the entry lacks."""
    smuggled = {
        "name": "other",
        "inputSchema": {"type": "object", "properties": {"x": {}}},
        "title": "Other",
        "_meta": {"k": "v"},
        "execution": {"taskSupport": "required"},
        "x-vendor": 1,
    }
    tool = ToolRecord("own__t", "own", ToolDef("t", {"type": "object"}, extra=smuggled))
    prompt = PromptRecord("own__p", "own", PromptDef("p", extra={"arguments": [], "x": 2}))

    assert tool_listing(tool) == {
        "name": "own__t",
        "inputSchema": {"type": "object"},
        "x-vendor": 1,
    }
    assert prompt_listing(prompt) == {"name": "own__p", "x": 2}
