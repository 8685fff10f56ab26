"""Requests an upstream sends its client while a tool runs (sampling, elicitation, roots)
reach the client whose call it is, through the gateway, and its answers get back, whichever
worker or instance the answer lands on.

Two instances with two workers each share PostgreSQL and Redis; behind them is our own
upstream with its asking tools. The SDK client posts every message on a fresh connection,
so its answers land on any worker; the raw tests send the answer to the other instance.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from mcp_types import ErrorData

from tests.cluster.deployment import (
    USER,
    Deployment,
    fetch,
    gateway_env,
    register,
    start_deployment,
    stop_deployment,
)
from tests.support.asking_client import (
    ANSWERING,
    check_asking_tools,
    check_concurrent_samples,
    sampled,
)
from tests.support.mcp_session import open_session
from tests.support.sdk import sdk_client
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(120)

JSON = dict[str, Any]
ACCEPT = "application/json, text/event-stream"
TOOL_TIMEOUT = 6.0


@pytest.fixture
async def deployment(
    postgres_url: str,
    redis_base_url: str,
    cache_prefix: str,
    tmp_path: Path,
    asking_upstream: RunningUpstream,
) -> AsyncIterator[Deployment]:
    env = gateway_env(
        postgres_url,
        "redis",
        REDIS_URL=redis_base_url,
        CACHE_PREFIX=cache_prefix,
        TOOL_TIMEOUT=str(TOOL_TIMEOUT),
    )
    deployment = await start_deployment(env, tmp_path, instances=2, workers=2)
    try:
        await register(deployment.a.url, asking_upstream.url)
        await deployment.catalogue_version()
        yield deployment
    finally:
        stop_deployment(deployment)


# --- the SDK client, on two workers ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_sampling_elicitation_and_roots_reach_the_client_and_back(
    deployment: Deployment, path: str
) -> None:
    async with sdk_client(
        deployment.a.url + path, "legacy", fresh_connections=True, **ANSWERING
    ) as client:
        await check_asking_tools(client, "own", [f"p{round_}" for round_ in range(4)])


async def test_log_messages_of_a_running_tool_reach_a_client_that_set_no_level(
    deployment: Deployment,
) -> None:
    received: list[Any] = []

    async def logged(params: Any) -> None:
        received.append(params.data)

    async with sdk_client(
        deployment.a.url + "/mcp", "legacy", fresh_connections=True, logging_callback=logged
    ) as client:
        result = await client.call_tool("own__log", {"level": "info", "message": "working"})
    assert not result.is_error
    assert received == ["working"]


async def test_concurrent_calls_each_get_their_own_answers(deployment: Deployment) -> None:
    async with sdk_client(
        deployment.a.url + "/mcp", "legacy", fresh_connections=True, sampling_callback=sampled
    ) as client:
        await check_concurrent_samples(client)


async def test_a_client_without_the_capability_makes_the_upstream_fail_at_once(
    deployment: Deployment,
) -> None:
    async with sdk_client(deployment.a.url + "/mcp", "legacy", fresh_connections=True) as client:
        started = time.monotonic()
        result = await client.call_tool("own__sample", {"prompt": "x"})
    assert result.is_error
    assert "sampling" in result.content[0].text
    assert time.monotonic() - started < TOOL_TIMEOUT


async def test_a_client_answering_with_an_error_passes_it_to_the_upstream(
    deployment: Deployment,
) -> None:
    async def refuse(context: Any, params: Any) -> ErrorData:
        return ErrorData(code=-1, message="no sampling today")

    async with sdk_client(
        deployment.a.url + "/mcp", "legacy", fresh_connections=True, sampling_callback=refuse
    ) as client:
        result = await client.call_tool("own__sample", {"prompt": "x"})
    assert result.is_error
    assert "no sampling today" in result.content[0].text


# --- raw: the answer on the other instance, and answers the gateway refuses -------------------


class Session:
    """A client session of our own making, declaring sampling, on one instance."""

    def __init__(self, http: aiohttp.ClientSession, base: str, session_id: str) -> None:
        self.http = http
        self.base = base
        self.id = session_id

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base: str) -> Session:
        headers = {**USER, "MCP-Protocol-Version": "2025-06-18"}
        sampling: JSON = {"sampling": {}}
        session_id = await open_session(http, "2025-06-18", f"{base}/mcp", headers, sampling)
        return cls(http, base, session_id)

    @staticmethod
    def headers(session_id: str | None) -> dict[str, str]:
        headers = {**USER, "Accept": ACCEPT, "Content-Type": "application/json"}
        if session_id is not None:
            headers["Mcp-Session-Id"] = session_id
            headers["MCP-Protocol-Version"] = "2025-06-18"
        return headers

    async def post(self, base: str, message: JSON) -> tuple[int, JSON]:
        reply = await fetch("POST", f"{base}/mcp", message, self.headers(self.id))
        return reply.status, reply.body


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[JSON]:
    async for line in response.content:
        if line.startswith(b"data: "):
            yield orjson.loads(line[6:])


async def start_sample(session: Session, prompt: str) -> tuple[aiohttp.ClientResponse, JSON]:
    """Call `own__sample` and read its stream up to the sampling request the gateway relays."""
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "own__sample", "arguments": {"prompt": prompt}},
    }
    response = await session.http.post(
        f"{session.base}/mcp", data=json.dumps(call), headers=session.headers(session.id)
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    async for message in events(response):
        assert message["method"] == "sampling/createMessage", message
        return response, message
    raise AssertionError("the stream ended without a request")


async def result_of(response: aiohttp.ClientResponse) -> JSON:
    try:
        async for message in events(response):
            if message.get("id") == 7:
                result: JSON = message["result"]
                return result
        raise AssertionError("the stream ended without the answer")
    finally:
        response.close()


def sampling_answer(ask_id: object, text: str) -> JSON:
    content = {"type": "text", "text": text}
    result = {"role": "assistant", "content": content, "model": "raw"}
    return {"jsonrpc": "2.0", "id": ask_id, "result": result}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_an_answer_sent_to_the_other_instance_completes_the_call(
    deployment: Deployment, http: aiohttp.ClientSession
) -> None:
    session = await Session.open(http, deployment.a.url)
    response, asked = await start_sample(session, "across")
    status, _ = await session.post(deployment.b.url, sampling_answer(asked["id"], "from b"))
    assert status == 202
    result = await result_of(response)
    assert result["structuredContent"]["content"]["text"] == "from b"


async def test_answers_that_do_not_fit_are_refused_and_the_call_goes_on(
    deployment: Deployment, http: aiohttp.ClientSession
) -> None:
    session = await Session.open(http, deployment.a.url)
    other = await Session.open(http, deployment.b.url)
    response, asked = await start_sample(session, "strict")
    ask_id = asked["id"]
    # From another session, for an id nobody asked, and malformed: each refused clearly.
    status, body = await other.post(deployment.b.url, sampling_answer(ask_id, "intruder"))
    assert status == 400 and "not sent to this session" in body["error"]["message"]
    status, body = await session.post(deployment.b.url, sampling_answer("gw-nobody-1", "x"))
    assert status == 400 and "not waiting" in body["error"]["message"]
    status, body = await session.post(
        deployment.a.url, {"jsonrpc": "2.0", "id": ask_id, "result": "not an object"}
    )
    assert status == 400 and "'result' must be an object" in body["error"]["message"]
    # The call is undisturbed: the real answer still completes it.
    status, _ = await session.post(deployment.b.url, sampling_answer(ask_id, "the real one"))
    assert status == 202
    result = await result_of(response)
    assert result["structuredContent"]["content"]["text"] == "the real one"


async def test_a_client_that_never_answers_ends_at_the_tool_timeout(
    deployment: Deployment, http: aiohttp.ClientSession
) -> None:
    session = await Session.open(http, deployment.a.url)
    started = time.monotonic()
    response, asked = await start_sample(session, "silence")
    result = await result_of(response)
    assert result["isError"]
    assert time.monotonic() - started < TOOL_TIMEOUT + 5
    # Nothing waits any more: a late answer is refused.
    status, body = await session.post(deployment.b.url, sampling_answer(asked["id"], "late"))
    assert status == 400 and "not waiting" in body["error"]["message"]
