"""The era bridge, both ways.

A 2026-07-28 client calls tools whose handshake-era upstream asks its client while they
run (sampling, elicitation, roots): the gateway answers `input_required`, and the client's
retry completes that same upstream call, whichever worker or instance the retry lands on.
A handshake-era client calls tools whose 2026-07-28 upstream answers `input_required`: the
client receives ordinary requests on its call's stream, and the gateway retries upstream
with its answers.

Two instances with two workers each share PostgreSQL and a cache (Redis, or the
database's); behind them are our own upstream with its asking tools (`own`) and an SDK
server of 2026-07-28 whose tools ask through input_required (`modern`). The SDK client
posts every request on a fresh connection, so its retries and answers land on any worker;
the raw tests send the retry to the other instance, and send the states the gateway must
refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.deployment import (
    USER,
    Deployment,
    Reply,
    fetch,
    register,
    two_instances,
    wait_until,
)
from tests.conftest import make_token
from tests.support.asking_client import (
    ANSWERING,
    check_asking_tools,
    check_concurrent_samples,
    elicited,
    sampled,
)
from tests.support.gunicorn_process import ADMIN
from tests.support.sdk import sdk_client
from tests.upstreams.processes import (
    HERE,
    RunningUpstream,
    start_upstream,
    stop_upstream,
)

pytestmark = pytest.mark.timeout(120)

JSON = dict[str, Any]
TOOL_TIMEOUT = 6.0
VERSION = "2026-07-28"
INVALID_PARAMS = -32602


@pytest.fixture(scope="module")
def modern_upstream() -> Iterator[RunningUpstream]:
    upstream = start_upstream(HERE / "sdk_input_required_server.py", timeout=30)
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="module", params=["redis", "database"])
def deployment(
    request: pytest.FixtureRequest,
    postgres_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    asking_upstream: RunningUpstream,
    modern_upstream: RunningUpstream,
) -> Iterator[Deployment]:
    """Two instances of two workers sharing a PostgreSQL schema of their own and the cache
    (Redis, or the database's), with both asking upstreams registered; one deployment per
    cache serves the whole module."""
    with two_instances(request, postgres_base_url, tmp_path_factory, TOOL_TIMEOUT) as deployment:
        asyncio.run(register_everywhere(deployment, asking_upstream, modern_upstream))
        yield deployment


async def register_everywhere(
    deployment: Deployment, own: RunningUpstream, modern: RunningUpstream
) -> None:
    await register(deployment.a.url, own.url)
    body = {"name": "modern", "url": modern.url, "transport": "streamable-http-2026"}
    reply = await fetch("POST", f"{deployment.a.url}/upstreams", body, ADMIN)
    assert reply.status == 201, reply
    await deployment.catalogue_version()


# --- the SDK client in 2026-07-28 mode -----------------------------------------------------------


async def test_a_2026_client_samples_elicits_and_lists_roots_through_input_required(
    deployment: Deployment,
) -> None:
    async with sdk_client(
        deployment.a.url + "/mcp", VERSION, fresh_connections=True, **ANSWERING
    ) as client:
        await check_asking_tools(client, "own", [f"p{round_}" for round_ in range(4)])


async def test_concurrent_2026_calls_each_get_their_own_answers(deployment: Deployment) -> None:
    async with sdk_client(
        deployment.a.url + "/mcp", VERSION, fresh_connections=True, sampling_callback=sampled
    ) as client:
        await check_concurrent_samples(client)


async def test_a_2026_client_without_the_capability_makes_the_upstream_fail_at_once(
    deployment: Deployment,
) -> None:
    async with sdk_client(
        deployment.a.url + "/mcp", VERSION, fresh_connections=True, elicitation_callback=elicited
    ) as client:
        started = time.monotonic()
        result = await client.call_tool("own__sample", {"prompt": "x"})
    assert result.is_error
    assert "sampling" in result.content[0].text
    assert time.monotonic() - started < TOOL_TIMEOUT


# --- raw: retries on the other instance, and states the gateway refuses ----------------------


def headers(name: str, auth: dict[str, str] = USER) -> dict[str, str]:
    return {
        **auth,
        "Accept": "application/json",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }


async def call(
    base: str, name: str, arguments: JSON, auth: dict[str, str] = USER, **retry: Any
) -> Reply:
    """One 2026-07-28 `tools/call`, declaring every capability; `retry` adds
    `inputResponses` and `requestState`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {
            "sampling": {},
            "elicitation": {},
            "roots": {},
        },
    }
    params = {"name": name, "arguments": arguments, "_meta": meta, **retry}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return await fetch("POST", f"{base}/mcp", message, headers(name, auth), timeout=30)


def input_required(reply: Reply) -> tuple[str, JSON, str]:
    """The one request a round lists, and the round's state."""
    assert reply.status == 200, reply
    result = reply.body["result"]
    assert result["resultType"] == "input_required", result
    [(key, asked)] = result["inputRequests"].items()
    return key, asked, result["requestState"]


def sampling_answer(text: str) -> JSON:
    return {"role": "assistant", "content": {"type": "text", "text": text}, "model": "raw"}


def refusal(reply: Reply) -> str:
    assert reply.status == 400 and reply.error_code == INVALID_PARAMS, reply
    message: str = reply.body["error"]["message"]
    return message


async def test_a_retry_sent_to_the_other_instance_completes_the_call(
    deployment: Deployment,
) -> None:
    key, asked, state = input_required(
        await call(deployment.a.url, "own__sample", {"prompt": "across"})
    )
    assert asked["method"] == "sampling/createMessage"
    assert asked["params"]["messages"][0]["content"]["text"] == "across"
    # Larger than any cache event carries: the answer and the result cross by cache key.
    text = "from b " * 3000
    reply = await call(
        deployment.b.url,
        "own__sample",
        {"prompt": "across"},
        inputResponses={key: sampling_answer(text)},
        requestState=state,
    )
    assert reply.status == 200, reply
    result = reply.body["result"]
    assert result["resultType"] == "complete"
    assert result["structuredContent"]["content"]["text"] == text


def tampered(state: str) -> str:
    body, signature = state.split(".")
    flipped = "A" if body[5] != "A" else "B"
    return f"{body[:5]}{flipped}{body[6:]}.{signature}"


async def test_tampered_foreign_and_replayed_states_are_refused_and_the_call_goes_on(
    deployment: Deployment, asking_upstream: RunningUpstream
) -> None:
    arguments = {"prompt": "strict"}
    key, _, state = input_required(await call(deployment.a.url, "own__sample", arguments))
    answers = {key: sampling_answer("intruder")}

    reply = await call(
        deployment.b.url, "own__sample", arguments, inputResponses=answers, requestState="x.y"
    )
    assert "not one the gateway issued" in refusal(reply)
    reply = await call(
        deployment.b.url,
        "own__sample",
        arguments,
        inputResponses=answers,
        requestState=tampered(state),
    )
    assert "tampered" in refusal(reply)
    other = {"Authorization": f"Bearer {make_token('someone-else', minutes=30)}"}
    reply = await call(
        deployment.b.url,
        "own__sample",
        arguments,
        other,
        inputResponses=answers,
        requestState=state,
    )
    assert "another caller" in refusal(reply)
    reply = await call(
        deployment.a.url, "own__elicit", {}, inputResponses=answers, requestState=state
    )
    assert "another request" in refusal(reply)

    # Undisturbed: the real retry completes the call, on the other instance.
    reply = await call(
        deployment.b.url,
        "own__sample",
        arguments,
        inputResponses={key: sampling_answer("the real one")},
        requestState=state,
    )
    assert reply.status == 200, reply
    assert reply.body["result"]["structuredContent"]["content"]["text"] == "the real one"

    # Once answered, the state is spent, on every instance.
    for base in (deployment.a.url, deployment.b.url):
        reply = await call(
            base, "own__sample", arguments, inputResponses=answers, requestState=state
        )
        assert "already answered" in refusal(reply)
    assert (await asking_upstream.stats())["pending_asks"] == 0


async def test_a_client_that_never_retries_ends_the_upstream_call_at_the_tool_timeout(
    deployment: Deployment, asking_upstream: RunningUpstream
) -> None:
    before = await asking_upstream.stats()
    started = time.monotonic()
    key, _, state = input_required(
        await call(deployment.a.url, "own__sample", {"prompt": "silence"})
    )
    assert (await asking_upstream.stats())["pending_asks"] == 1

    async def ended() -> bool:
        stats = await asking_upstream.stats()
        return bool(stats["pending_asks"] == 0 and stats["cancelled"] > before["cancelled"])

    await wait_until(ended, TOOL_TIMEOUT + 5, "the upstream call was cancelled")
    assert time.monotonic() - started >= TOOL_TIMEOUT - 1
    # Nothing waits any more: the state has expired, on either instance.
    for base in (deployment.a.url, deployment.b.url):
        reply = await call(
            base,
            "own__sample",
            {"prompt": "silence"},
            inputResponses={key: sampling_answer("late")},
            requestState=state,
        )
        assert "expired" in refusal(reply)


# --- a handshake-era client, a 2026-07-28 upstream -------------------------------------------


async def modern_stats(upstream: RunningUpstream) -> JSON:
    reply = await fetch("GET", f"{upstream.base_url}/stats")
    return reply.body


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_a_handshake_client_answers_a_2026_upstream_through_ordinary_requests(
    deployment: Deployment,
    modern_upstream: RunningUpstream,
    path: str,
) -> None:
    before = await modern_stats(modern_upstream)
    async with sdk_client(
        deployment.a.url + path, "legacy", fresh_connections=True, **ANSWERING
    ) as client:
        await check_asking_tools(client, "modern", [f"m{round_}" for round_ in range(3)])
    after = await modern_stats(modern_upstream)
    # Each call was answered input_required once, then retried with the client's answers.
    assert after["retries"] - before["retries"] == 9
    assert after["tools_call"] - before["tools_call"] == 18


async def test_a_handshake_client_without_the_capability_fails_the_2026_call_at_once(
    deployment: Deployment, modern_upstream: RunningUpstream
) -> None:
    before = await modern_stats(modern_upstream)
    async with sdk_client(deployment.a.url + "/mcp", "legacy", fresh_connections=True) as client:
        started = time.monotonic()
        result = await client.call_tool("modern__sample", {"prompt": "x"})
    assert result.is_error
    assert "sampling" in result.content[0].text
    assert time.monotonic() - started < TOOL_TIMEOUT
    assert (await modern_stats(modern_upstream))["retries"] == before["retries"]


async def test_a_2026_client_answers_a_2026_upstream_through_both_bridges(
    deployment: Deployment, modern_upstream: RunningUpstream
) -> None:
    async with sdk_client(
        deployment.a.url + "/mcp", VERSION, fresh_connections=True, **ANSWERING
    ) as client:
        await check_asking_tools(client, "modern", ["both"])
