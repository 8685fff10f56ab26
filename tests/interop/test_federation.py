"""A gateway as the upstream of another gateway.

Gateway A fronts our own upstream (prefix `own`). Gateway B registers A's `/mcp` as its
upstream `a`, with a bearer token for A in an Authorization header: A signs tokens with a
secret of its own, so only that stored header gets B in. Through B, A's tools are named
`a__own__<tool>`; resources keep their URIs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp_types import TextContent, TextResourceContents

from gateway_plugins.jwt_tokens import create_token
from tests.conftest import RUN_MINUTES, free_port
from tests.support.gunicorn_process import (
    USER,
    GunicornGateway,
    admin_post,
    gunicorn_env,
    register_upstream,
    start_together,
)
from tests.support.sdk import sdk_client
from tests.upstreams.processes import start_own, stop_upstream

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

A_SECRET = "gateway-a-signs-with-this-secret-0123456789abcdef"
A_TOKEN = create_token(A_SECRET, "gateway-b", [], RUN_MINUTES)
A_ADMIN = {"Authorization": f"Bearer {create_token(A_SECRET, 'root', ['admin'], RUN_MINUTES)}"}
TOOL = "a__own__echo"


@dataclass(frozen=True)
class Federation:
    a: GunicornGateway
    b: GunicornGateway
    registration: dict[str, object]
    b_database: Path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    workdir = tmp_path_factory.mktemp("federation")
    upstream = start_own()
    a_env = gunicorn_env(
        f"sqlite:///{workdir / 'a.db'}", CACHE_TYPE="memory", JWT_SECRET_KEY=A_SECRET
    )
    b_database = workdir / "b.db"
    a = GunicornGateway(a_env, free_port(), workdir, workers=1)
    b_env = gunicorn_env(f"sqlite:///{b_database}", CACHE_TYPE="memory")
    b = GunicornGateway(b_env, free_port(), workdir, workers=1)
    try:
        start_together(a, b)
        register_upstream(a.url, upstream, A_ADMIN)
        registration = admin_post(
            b.url,
            "/upstreams",
            {
                "name": "a",
                "url": f"{a.url}/mcp",
                "transport": "streamable-http",
                "headers": {"Authorization": f"Bearer {A_TOKEN}"},
            },
        )
        yield Federation(a, b, registration, b_database)
    finally:
        b.stop()
        a.stop()
        stop_upstream(upstream)


def test_b_keeps_the_token_for_a_encrypted(federation: Federation) -> None:
    assert federation.registration["headers"] == ["Authorization"]
    assert A_TOKEN not in str(federation.registration)
    stored = b"".join(path.read_bytes() for path in federation.b_database.parent.glob("b.db*"))
    assert A_TOKEN.encode() not in stored


def test_a_refuses_a_token_b_signed(federation: Federation) -> None:
    # B's own tokens are signed with another secret: only the stored header opens A.
    response = httpx2.post(
        f"{federation.a.url}/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=USER,
    )
    assert response.status_code == 401


def test_a_tool_of_a_is_called_through_bs_rpc(federation: Federation) -> None:
    response = httpx2.post(
        f"{federation.b.url}/rpc",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"text": "two hops"}},
        },
        headers=USER,
        timeout=15.0,
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is False
    assert result["structuredContent"] == {"text": "two hops"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_tool_of_a_is_listed_and_called_through_bs_mcp(
    federation: Federation, mode: str
) -> None:
    async with sdk_client(f"{federation.b.url}/mcp", mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool(TOOL, {"text": f"two hops, {mode}"})
    assert {TOOL, "a__own__add", "a__own__progress"} <= names
    assert result.content == [TextContent(type="text", text=f"two hops, {mode}")]
    assert result.structured_content == {"text": f"two hops, {mode}"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_resources_and_prompts_of_a_are_served_through_b(
    federation: Federation, mode: str
) -> None:
    async with sdk_client(f"{federation.b.url}/mcp", mode) as client:
        uris = {resource.uri for resource in (await client.list_resources()).resources}
        memo = await client.read_resource("memo://one")
        item = await client.read_resource("memo://items/7")
        prompt = await client.get_prompt("a__own__greeting", {"name": "Grace"})
    assert {"memo://one", "memo://two", "memo://blob"} <= uris
    assert memo.contents == [
        TextResourceContents(
            uri="memo://one", mime_type="text/plain", text="The first memo says hello."
        )
    ]
    assert item.contents == [
        TextResourceContents(uri="memo://items/7", mime_type="text/plain", text="Item 7 is here.")
    ]
    assert [message.content for message in prompt.messages] == [
        TextContent(type="text", text="Please greet Grace warmly.")
    ]


async def test_progress_crosses_both_gateways_in_order(federation: Federation) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with sdk_client(f"{federation.b.url}/mcp", "legacy") as client:
        result = await client.call_tool(
            "a__own__progress", {"steps": 3, "delay": 0.02}, progress_callback=on_progress
        )
    assert result.structured_content == {"steps": 3}
    assert seen == [1.0, 2.0, 3.0]
