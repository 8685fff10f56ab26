"""What an upstream asks its client, through both backends: our own server (Streamable HTTP
and HTTP+SSE) and the official SDK's server (Streamable HTTP), each with tools that ask
while they run (`--asking-tools`). A request about a call reaches that call's `on_request`
and its answer reaches the tool; one about no call reaches `set_listener`'s `ask`; with
nobody to ask, the upstream gets an error at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.contracts import (
    JSON,
    AskClient,
    BackendError,
    ClientRequestError,
    FullBackend,
    UpstreamError,
)
from tests.backends.conftest import backend_for as installed_backend
from tests.upstreams.fixtures import Recorder, eventually, stat_is
from tests.upstreams.processes import RunningUpstream, start_sdk, stop_upstream

pytest_plugins = ["tests.upstreams.fixtures"]

UpstreamFactory = Callable[..., RunningUpstream]

SAMPLED: JSON = {
    "role": "assistant",
    "content": {"type": "text", "text": "a sampled reply"},
    "model": "test-model",
    "stopReason": "endTurn",
}
ELICITED: JSON = {"action": "accept", "content": {"colour": "blue", "count": 2}}
ROOTS: JSON = {"roots": [{"uri": "file:///srv/project", "name": "project"}]}
ANSWERS: dict[str, JSON] = {
    "sampling/createMessage": SAMPLED,
    "elicitation/create": ELICITED,
    "roots/list": ROOTS,
    "ping": {},
}


@dataclass
class Upstream:
    running: RunningUpstream
    transport: str
    own: bool

    @property
    def url(self) -> str:
        return self.running.sse_url if self.transport == "sse" else self.running.url


class Client:
    """Stands for the client an upstream asks: records what it is asked and answers from
    `ANSWERS`, or fails with `failure`, or never answers when `hold` is set."""

    def __init__(self, failure: Exception | None = None, hold: bool = False) -> None:
        self.asked: list[tuple[str, JSON]] = []
        self.failure = failure
        self.hold = hold
        self.cancelled = 0

    async def __call__(self, method: str, params: JSON) -> JSON:
        self.asked.append((method, params))
        if self.failure is not None:
            raise self.failure
        if self.hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return ANSWERS[method]

    def methods(self) -> list[str]:
        return [method for method, _ in self.asked]


@pytest.fixture
def own_http(own_upstream_factory: UpstreamFactory) -> Upstream:
    return Upstream(own_upstream_factory("--asking-tools"), "streamable-http", own=True)


@pytest.fixture
def own_sse(own_upstream_factory: UpstreamFactory) -> Upstream:
    return Upstream(own_upstream_factory("--asking-tools", "--legacy-sse"), "sse", own=True)


@pytest.fixture(scope="module")
def sdk() -> Iterator[Upstream]:
    running = start_sdk("--asking-tools")
    yield Upstream(running, "streamable-http", own=False)
    stop_upstream(running)


@pytest.fixture(scope="module")
def sdk_sse() -> Iterator[Upstream]:
    running = start_sdk("--asking-tools", "--legacy-sse")
    yield Upstream(running, "sse", own=False)
    stop_upstream(running)


@pytest.fixture(params=["own_http", "own_sse"])
def own(request: pytest.FixtureRequest) -> Upstream:
    """Our server, on each transport."""
    upstream: Upstream = request.getfixturevalue(request.param)
    return upstream


@pytest.fixture(params=["own_http", "own_sse", "sdk", "sdk_sse"])
def upstream(request: pytest.FixtureRequest) -> Upstream:
    """Our server and the SDK's, each on both transports."""
    chosen: Upstream = request.getfixturevalue(request.param)
    return chosen


@pytest.fixture(params=["own_http", "own_sse", "sdk"])
def relating(request: pytest.FixtureRequest) -> Upstream:
    """The upstreams that say which call each of their requests is about: on Streamable
    HTTP by the call's own reply stream, and on legacy SSE by `relatedRequestId` (ours).
    The SDK's server on legacy SSE says nothing: see the `sdk_sse` tests below."""
    chosen: Upstream = request.getfixturevalue(request.param)
    return chosen


def backend_for(
    upstream: Upstream, tool_timeout: float = 10.0
) -> AbstractAsyncContextManager[FullBackend]:
    return installed_backend(
        upstream.transport, upstream.url, name="asker", tool_timeout=tool_timeout
    )


async def call(
    backend: FullBackend,
    tool: str,
    arguments: JSON | None = None,
    on_request: AskClient | None = None,
    timeout: float = 10.0,
) -> JSON:
    params = {"name": tool, "arguments": arguments or {}}
    return await backend.request("tools/call", params, timeout, on_request=on_request)


async def client_error(upstream: Upstream, calling: Awaitable[JSON]) -> JSON:
    """The error the upstream says the client answered with: our server's tool returns it
    as its result; the SDK's tool raises it, so it becomes the call's JSON-RPC error."""
    if not upstream.own:
        with pytest.raises(UpstreamError) as caught:
            await calling
        error: JSON = {"code": caught.value.code, "message": caught.value.upstream_message}
        if caught.value.data is not None:
            error["data"] = caught.value.data
        return error
    result = await calling
    assert result["isError"] is True, result
    error = result["structuredContent"]["error"]
    return error


async def ask_unrelated(upstream: Upstream, method: str, params: JSON | None = None) -> list[Any]:
    """Have our server send `method` on every session's own stream, about no call."""
    url = f"{upstream.running.base_url}/admin/ask"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, params={"method": method}, json=params or {}) as resp,
    ):
        resp.raise_for_status()
        answers: list[Any] = (await resp.json())["answers"]
        return answers


async def listening(backend: FullBackend, upstream: Upstream, ask: AskClient | None) -> None:
    """Set a listener (and `ask`), open the session and wait until its stream is open."""
    backend.set_listener(Recorder(), ask)
    await backend.request("ping", {}, 5)
    if upstream.transport == "streamable-http":
        await stat_is(upstream.running, "open_streams", 1)


# --- what the client declares ---------------------------------------------------------------


async def test_initialize_declares_sampling_elicitation_and_roots(own: Upstream) -> None:
    async with backend_for(own) as backend:
        await backend.request("ping", {}, 5)
    # 2025-11-25 on both transports, with both elicitation modes.
    assert (await own.running.stats())["client_capabilities"] == {
        "roots": {"listChanged": True},
        "sampling": {},
        "elicitation": {"form": {}, "url": {}},
    }


# --- requests about a call ------------------------------------------------------------------


async def test_sampling_reaches_on_request_and_its_answer_the_tool_result(
    upstream: Upstream,
) -> None:
    client = Client()
    async with backend_for(upstream) as backend:
        result = await call(backend, "sample", {"prompt": "Say hi"}, client)
    assert client.methods() == ["sampling/createMessage"]
    params = client.asked[0][1]
    assert params["messages"] == [{"role": "user", "content": {"type": "text", "text": "Say hi"}}]
    assert params["maxTokens"] == 100
    assert result["isError"] is False
    assert {key: result["structuredContent"][key] for key in SAMPLED} == SAMPLED


async def test_elicitation_with_an_enum_and_defaults_reaches_on_request_and_its_answer_the_tool(
    upstream: Upstream,
) -> None:
    client = Client()
    async with backend_for(upstream) as backend:
        result = await call(backend, "elicit", {"message": "Which colour?"}, client)
    [(method, params)] = client.asked
    assert method == "elicitation/create"
    assert params["message"] == "Which colour?"
    properties = params["requestedSchema"]["properties"]
    assert properties["colour"]["enum"] == ["red", "green", "blue"]
    assert properties["colour"]["default"] == "green"
    assert properties["count"]["default"] == 3
    assert result["isError"] is False
    assert result["structuredContent"] == ELICITED


async def test_roots_reach_on_request_and_the_answer_the_tool(upstream: Upstream) -> None:
    client = Client()
    async with backend_for(upstream) as backend:
        result = await call(backend, "roots", {}, client)
    assert client.methods() == ["roots/list"]
    assert result["isError"] is False
    assert result["structuredContent"] == ROOTS


async def test_the_relation_on_the_legacy_stream_is_not_shown_to_the_client(
    own_sse: Upstream,
) -> None:
    client = Client()
    async with backend_for(own_sse) as backend:
        await call(backend, "roots", {}, client)
    assert client.asked == [("roots/list", {})]


async def test_a_client_request_error_reaches_the_upstream_as_that_error(
    upstream: Upstream,
) -> None:
    client = Client(failure=ClientRequestError(-32042, "the user said no", {"why": "busy"}))
    async with backend_for(upstream) as backend:
        error = await client_error(upstream, call(backend, "sample", {"prompt": "Hi"}, client))
    assert error == {"code": -32042, "message": "the user said no", "data": {"why": "busy"}}


async def test_any_other_failure_of_on_request_reaches_the_upstream_as_32603(
    upstream: Upstream,
) -> None:
    client = Client(failure=RuntimeError("a bug"))
    async with backend_for(upstream) as backend:
        error = await client_error(upstream, call(backend, "roots", {}, client))
    assert error == {"code": -32603, "message": "roots/list: the client failed"}


async def test_a_call_without_on_request_makes_the_upstream_get_32601_at_once(
    relating: Upstream,
) -> None:
    upstream = relating
    async with backend_for(upstream) as backend:
        # Far within the timeout: nobody waits for a client that cannot be asked.
        async with asyncio.timeout(20):
            sampled = await client_error(
                upstream, call(backend, "sample", {"prompt": "Hi"}, timeout=60)
            )
            rooted = await client_error(upstream, backend.call_tool("roots", {}, timeout=60))
    assert sampled == {
        "code": -32601,
        "message": "no client can be asked for sampling/createMessage during this tools/call",
    }
    assert rooted == {
        "code": -32601,
        "message": "no client can be asked for roots/list during this tools/call",
    }


async def test_concurrent_calls_each_get_their_own_answers(relating: Upstream) -> None:
    """Every call's request is pending at once (a barrier holds each answer until all have
    been asked), so neither a stream's reader nor a mix-up of answers can go unnoticed."""
    upstream = relating
    count = 8
    barrier = asyncio.Barrier(count)
    asked: dict[int, list[str]] = {i: [] for i in range(count)}

    def client_for(i: int) -> AskClient:
        async def answer(method: str, params: JSON) -> JSON:
            prompt = params["messages"][0]["content"]["text"]
            asked[i].append(prompt)
            async with asyncio.timeout(15):
                await barrier.wait()
            return {**SAMPLED, "content": {"type": "text", "text": f"answer to {prompt}"}}

        return answer

    async with backend_for(upstream, tool_timeout=30) as backend:
        results = await asyncio.gather(
            *(
                call(backend, "sample", {"prompt": f"prompt {i}"}, client_for(i), timeout=30)
                for i in range(count)
            )
        )
    assert asked == {i: [f"prompt {i}"] for i in range(count)}
    texts = [result["structuredContent"]["content"]["text"] for result in results]
    assert texts == [f"answer to prompt {i}" for i in range(count)]


async def test_a_client_that_never_answers_ends_at_the_call_timeout_with_nothing_pending(
    upstream: Upstream,
) -> None:
    client = Client(hold=True)
    async with backend_for(upstream) as backend:
        with pytest.raises(BackendError, match=r"did not answer within 1s \(tools/call\)"):
            await call(backend, "elicit", {}, client, timeout=1)

        async def abandoned() -> bool:
            return client.cancelled == 1

        await eventually(abandoned, what="the pending answer is cancelled")
        if upstream.own:
            await stat_is(upstream.running, "cancelled", 1)
            await stat_is(upstream.running, "pending_asks", 0)
        # The session is still good for the next call.
        answered = await call(backend, "roots", {}, Client())
    assert answered["structuredContent"] == ROOTS


async def test_closing_the_backend_cancels_pending_answers_and_fails_the_call(
    own: Upstream,
) -> None:
    client = Client(hold=True)
    async with backend_for(own) as backend:
        pending = asyncio.create_task(call(backend, "roots", {}, client, timeout=30))

        async def asked() -> bool:
            return client.asked != []

        await eventually(asked, what="the client is asked")
    assert client.cancelled == 1
    # Well before its own timeout: the call learns at once that the backend is gone.
    with pytest.raises(BackendError, match="was closed before answering tools/call"):
        async with asyncio.timeout(15):
            await pending


async def test_an_unnamed_sse_request_goes_to_the_one_call_that_can_be_asked(
    sdk_sse: Upstream,
) -> None:
    """The SDK's server on legacy SSE puts no `relatedRequestId` in what it asks: with one
    call in progress, the request can only be about that one, so that call's client is
    asked, while other calls are under way that cannot be asked."""
    client = Client()
    async with backend_for(sdk_sse) as backend:
        others = [asyncio.create_task(backend.call_tool("greet", {"name": "x"}, 10))]
        result = await call(backend, "elicit", {"message": "Which colour?"}, client)
        await asyncio.gather(*others)
    assert client.methods() == ["elicitation/create"]
    assert result["structuredContent"] == ELICITED


async def test_an_unnamed_sse_request_is_refused_while_two_calls_could_be_asked(
    sdk_sse: Upstream,
) -> None:
    """With two calls in progress whose clients could be asked, a request naming neither
    could be about either: it is refused at once rather than put to a client it may not be
    about (the SDK makes the refusal the tool's error). Once that call has ended, the other
    call's own request, asked later, goes to its client."""
    later, now = Client(), Client()
    async with backend_for(sdk_sse, tool_timeout=30) as backend:
        waiting = asyncio.create_task(
            call(backend, "sample_later", {"prompt": "later", "delay": 2}, later, timeout=20)
        )

        async def in_progress() -> bool:
            # The session's own record of the requests awaiting their replies.
            link = backend._link
            return waiting.done() or (link is not None and bool(link.pending))

        await eventually(in_progress, what="the first call is in progress")
        refused = await client_error(
            sdk_sse, call(backend, "sample", {"prompt": "now"}, now, timeout=10)
        )
        result = await waiting
    assert refused == {
        "code": -32601,
        "message": "no client can be asked for sampling/createMessage outside a request",
    }
    assert now.asked == []
    assert later.methods() == ["sampling/createMessage"]
    assert result["isError"] is False


# --- requests about no call -----------------------------------------------------------------


async def test_requests_about_no_call_go_to_the_listeners_ask(own: Upstream) -> None:
    client = Client()
    async with backend_for(own) as backend:
        await listening(backend, own, client)
        roots = await ask_unrelated(own, "roots/list")
        pong = await ask_unrelated(own, "ping")
    assert [answer["result"] for answer in roots + pong] == [ROOTS, {}]
    assert client.methods() == ["roots/list", "ping"]


async def test_without_ask_ping_is_answered_and_the_rest_refused_with_32601(
    own: Upstream,
) -> None:
    async with backend_for(own) as backend:
        await listening(backend, own, None)
        [pong] = await ask_unrelated(own, "ping")
        [roots] = await ask_unrelated(own, "roots/list")
    assert pong["result"] == {}
    assert roots["error"] == {
        "code": -32601,
        "message": "no client can be asked for roots/list outside a request",
    }


async def test_a_client_error_from_ask_reaches_the_upstream(own: Upstream) -> None:
    client = Client(failure=ClientRequestError(-1, "declined by the user"))
    async with backend_for(own) as backend:
        await listening(backend, own, client)
        [answer] = await ask_unrelated(own, "sampling/createMessage", {"messages": []})
    assert answer["error"] == {"code": -1, "message": "declined by the user"}


async def test_an_ask_that_never_answers_is_given_up_after_the_tool_timeout(
    own: Upstream,
) -> None:
    client = Client(hold=True)
    async with backend_for(own, tool_timeout=1) as backend:
        await listening(backend, own, client)
        [answer] = await ask_unrelated(own, "roots/list")
    assert answer["error"] == {
        "code": -32603,
        "message": "roots/list: no answer from the client within 1s",
    }
    assert client.cancelled == 1


async def test_a_legacy_request_naming_no_request_in_progress_is_refused_with_32602(
    own_sse: Upstream,
) -> None:
    client = Client()
    async with backend_for(own_sse) as backend:
        await listening(backend, own_sse, client)
        [answer] = await ask_unrelated(own_sse, "roots/list", {"_meta": {"relatedRequestId": 999}})
    assert answer["error"] == {
        "code": -32602,
        "message": "relatedRequestId 999 names no request in progress",
    }
    assert client.asked == []


async def test_the_sdk_servers_own_list_roots_relates_to_no_call_and_goes_to_ask(
    sdk: Upstream,
) -> None:
    """The SDK sends `ctx.session.list_roots()` on the session's GET stream, related to no
    request: it reaches `ask`, not the call's `on_request`."""
    asked, on_request = Client(), Client()
    async with backend_for(sdk) as backend:
        backend.set_listener(Recorder(), asked)
        await backend.request("ping", {}, 5)
        # The SDK drops what it sends while no GET stream is open; ours opens just after
        # the first request, so try until one gets through.
        for _ in range(10):
            try:
                result = await call(backend, "roots_standalone", {}, on_request, timeout=2)
                break
            except BackendError:
                continue
        else:
            pytest.fail("roots/list never came on the GET stream")
    assert result["structuredContent"] == ROOTS
    assert asked.methods() == ["roots/list"]
    assert on_request.asked == []
