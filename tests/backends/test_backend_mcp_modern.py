"""The `streamable-http-2026` backend against the SDK's 2026-07-28 server whose tools ask
their client through `input_required`: discovery and listings without a handshake, plain
calls, the rounds a call needs answered through `on_request`, and the ways it fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.contracts import BackendError, ClientRequestError, FullBackend, UpstreamError
from tests.backends.conftest import backend_for
from tests.upstreams.processes import HERE, RunningUpstream, start_upstream, stop_upstream

JSON = dict[str, Any]
TRANSPORT = "streamable-http-2026"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningUpstream]:
    running = start_upstream(HERE / "sdk_input_required_server.py", timeout=30)
    yield running
    stop_upstream(running)


@pytest.fixture
async def backend(upstream: RunningUpstream) -> AsyncIterator[Any]:
    async with backend_for(TRANSPORT, upstream.url, name="modern") as started:
        yield started


async def client(method: str, params: JSON) -> JSON:
    """A client that can answer everything the server asks."""
    if method == "sampling/createMessage":
        text = params["messages"][0]["content"]["text"]
        return {
            "role": "assistant",
            "content": {"type": "text", "text": f"s: {text}"},
            "model": "m",
        }
    if method == "elicitation/create":
        return {"action": "accept", "content": {"colour": "blue", "count": 2}}
    assert method == "roots/list", method
    return {"roots": [{"uri": "file:///here", "name": "here"}]}


async def test_discovers_capabilities_and_lists_tools_without_a_handshake(backend: Any) -> None:
    assert isinstance(backend, FullBackend)
    await backend.connect()
    assert "tools" in backend.capabilities
    names = {tool.name for tool in await backend.list_tools()}
    assert {"sample", "elicit", "roots", "greet"} <= names


async def test_a_call_that_asks_nothing_is_one_request(backend: Any) -> None:
    result = await backend.call_tool("greet", {"name": "Ada"}, 10)
    assert result["content"][0]["text"] == "Hello, Ada!"


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("sample", {"prompt": "hi"}, {"type": "text", "text": "s: hi"}),
        ("elicit", {}, {"colour": "blue", "count": 2}),
        ("roots", {}, [{"uri": "file:///here", "name": "here"}]),
    ],
)
async def test_input_required_rounds_are_answered_through_on_request(
    backend: Any, tool: str, arguments: JSON, expected: Any
) -> None:
    asked: list[str] = []

    async def ask(method: str, params: JSON) -> JSON:
        asked.append(method)
        return await client(method, params)

    params = {"name": tool, "arguments": arguments}
    result = await backend.request("tools/call", params, 10, on_request=ask)
    assert not result.get("isError"), result
    structured = result["structuredContent"]
    found = structured.get("content") or structured.get("roots")
    assert found == expected
    assert len(asked) == 1


async def test_log_messages_of_a_call_reach_its_on_notification(backend: Any) -> None:
    received: list[tuple[str, JSON]] = []

    async def note(method: str, params: JSON) -> None:
        received.append((method, params))

    params = {"name": "note", "arguments": {"message": "working"}}
    result = await backend.request("tools/call", params, 10, on_notification=note)
    assert result["content"][0]["text"] == "noted"
    assert [(m, p["level"], p["data"]) for m, p in received] == [
        ("notifications/message", "info", "working")
    ]


async def test_without_on_request_a_call_that_needs_input_fails_at_once(backend: Any) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="no client can be asked"):
        await backend.call_tool("sample", {"prompt": "x"}, 10)
    assert time.monotonic() - started < 5


async def test_a_client_error_ends_the_call_with_it(backend: Any) -> None:
    async def refuse(method: str, params: JSON) -> JSON:
        raise ClientRequestError(-32601, "the client did not declare the 'sampling' capability")

    params = {"name": "sample", "arguments": {"prompt": "x"}}
    with pytest.raises(UpstreamError, match="sampling") as caught:
        await backend.request("tools/call", params, 10, on_request=refuse)
    assert caught.value.code == -32601


async def test_a_client_that_never_answers_runs_into_the_timeout(backend: Any) -> None:
    async def silent(method: str, params: JSON) -> JSON:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    params = {"name": "elicit", "arguments": {}}
    with pytest.raises(BackendError, match="did not answer within 1s"):
        await backend.request("tools/call", params, 1, on_request=silent)
