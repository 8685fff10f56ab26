"""The SSE streams of Streamable HTTP POSTs on one worker: several at once on a session,
the 2025-11-25 priming event (and its absence before), and a 2025-11-25 client resuming a
lost response stream with GET + `Last-Event-ID` while the call runs on.

The `paced` backend's tool steps only when the test releases it, so a test can hang up
between two progress notifications and know what the call did meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, cast

import orjson
import pytest
from aiohttp import ClientResponse

from gateway.keys import EVENTS, HUB, REGISTRY
from gateway.mcp.streams import ResponseRecord
from tests.conftest import Client, GatewayFactory
from tests.plugins import paced, rich
from tests.plugins.paced import PacedBackend
from tests.transports.conftest import (
    JSON,
    EventReader,
    eventually,
    open_get_stream,
    open_session,
    session_headers,
    streams_attached,
)

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
PRIMING = re.compile(rb"id: ((r?[0-9a-f]+)-0)\nretry: 1000\ndata: ")


@pytest.fixture
async def client(gateway: GatewayFactory, user_headers: dict[str, str]) -> Client:
    client = await gateway(plugins=[rich, paced], tool_timeout=20.0)
    client.session.headers.update(user_headers)
    return client


def backend(client: Client) -> PacedBackend:
    return cast(PacedBackend, client.app[REGISTRY].backends["paced"])


def paced_call(request_id: Any, gate: str, steps: int) -> JSON:
    params = {
        "name": "paced_steps",
        "arguments": {"steps": steps, "gate": gate},
        "_meta": {"progressToken": f"token-{gate}"},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def post_stream(client: Client, session: str, message: JSON) -> ClientResponse:
    response = await client.post("/mcp", json=message, headers=session_headers(session))
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    return response


async def priming_id(response: ClientResponse) -> str:
    """The id of the priming event a 2025-11-25 stream starts with."""
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    primed = PRIMING.fullmatch(first.removesuffix(b"\n\n"))
    assert primed is not None, first
    return primed.group(1).decode()


async def hang_up(client: Client, response: ClientResponse, detached: int = 1) -> None:
    """Close the connection and wait until the gateway keeps `detached` calls running."""
    response.close()
    hub = client.app[HUB]
    await eventually(lambda: len(hub.detached) == detached, what=f"{detached} detached call(s)")


def next_id(event_id: str, steps: int = 1) -> str:
    epoch, _, number = event_id.rpartition("-")
    return f"{epoch}-{int(number) + steps}"


async def logged_after(client: Client, session: str, event_id: str) -> bool:
    """Whether the event log holds an event of the same stream after `event_id`."""
    epoch, _, number = event_id.rpartition("-")
    return bool(await client.app[EVENTS].after(session, epoch, int(number)))


async def rest(reader: EventReader) -> list[JSON]:
    """Every message up to the end of the stream, which must end."""
    messages: list[JSON] = []
    while True:
        try:
            messages.append(await reader.message())
        except EOFError:
            return messages


# --- several streams on one session --------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
async def test_concurrent_posts_on_one_session_each_stream_their_own_progress_and_answer(
    client: Client, version: str
) -> None:
    session = await open_session(client, version)
    gates = ("a", "b", "c")
    responses = await asyncio.gather(
        *(post_stream(client, session, paced_call(n, gate, 2)) for n, gate in enumerate(gates))
    )
    readers = [EventReader(response) for response in responses]
    for gate in gates:
        await asyncio.wait_for(backend(client).running(gate), 5)
    for gate in ("b", "c", "a", "c", "a", "b"):
        backend(client).release(gate)
    for n, (gate, reader) in enumerate(zip(gates, readers, strict=True)):
        messages = [await reader.message() for _ in range(3)]
        progress = [m["params"] for m in messages[:2]]
        assert [p["progressToken"] for p in progress] == [f"token-{gate}"] * 2
        assert [p["progress"] for p in progress] == [1, 2]
        assert messages[2]["id"] == n
        assert messages[2]["result"]["content"][0]["text"] == "2 steps"


# --- priming events ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_a_post_stream_starts_with_a_priming_event_only_in_2025_11_25(
    client: Client, version: str
) -> None:
    session = await open_session(client, version)
    call = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"name": "rich_progress", "arguments": {}, "_meta": {"progressToken": 1}},
    }
    body = await (await post_stream(client, session, call)).read()
    blocks = body.removesuffix(b"\n\n").split(b"\n\n")
    if version == "2025-11-25":
        primed = PRIMING.fullmatch(blocks[0])
        assert primed is not None, blocks[0]
        epoch = primed.group(2).decode()
        assert epoch.startswith("r")
        for number, block in enumerate(blocks[1:], start=1):
            assert block.startswith(
                b"id: %s-%d\nevent: message\ndata: {" % (epoch.encode(), number)
            )
    else:
        # Earlier versions get exactly what they always got: events without ids.
        assert all(block.startswith(b"event: message\ndata: {") for block in blocks), body
    last = orjson.loads(blocks[-1].rpartition(b"data: ")[2])
    assert last["id"] == 5 and last["result"]["content"][0]["text"] == "done"


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
async def test_the_get_stream_starts_with_a_priming_event_only_in_2025_11_25(
    client: Client, version: str, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client, version)
    response = await client.get(
        "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": session}
    )
    await streams_attached(client, 1)
    if version == "2025-11-25":
        epoch = (await priming_id(response)).rpartition("-")[0]
        assert not epoch.startswith("r")
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert re.fullmatch(rb"id: [0-9a-f]+-1\nevent: message\ndata: \{.*\}\n\n", first), first
    if version == "2025-11-25":
        assert first.startswith(b"id: %s-1\n" % epoch.encode())
    response.close()


async def test_a_resumed_get_stream_is_primed_with_the_id_it_resumes_from(
    client: Client, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client)
    first = await open_get_stream(client, session)
    await streams_attached(client, 1)
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    seen = await first.next()
    first.response.close()
    resumed = await client.get(
        "/mcp",
        headers={
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session,
            "Last-Event-ID": seen.id or "",
        },
    )
    head = await asyncio.wait_for(resumed.content.readuntil(b"\n\n"), 5)
    assert head == b"id: %s\nretry: 1000\ndata: \n\n" % (seen.id or "").encode()
    resumed.close()


# --- resuming a POST's stream -------------------------------------------------------------------


async def test_a_hang_up_does_not_cancel_the_call_and_get_with_last_event_id_resumes_it(
    client: Client,
) -> None:
    session = await open_session(client)
    response = await post_stream(client, session, paced_call(9, "r", 3))
    primed = await priming_id(response)
    backend(client).release("r")
    first = await EventReader(response).next()
    assert first.id == next_id(primed)
    assert first.message["params"]["progress"] == 1
    await hang_up(client, response)
    # A step while nobody listens goes to the event log.
    backend(client).release("r")
    await eventually(lambda: logged_after(client, session, next_id(primed)), what="step 2 logged")
    resumed = await open_get_stream(client, session, last_event_id=first.id)
    second = await resumed.next()
    assert second.id == next_id(primed, 2)
    assert second.message["params"]["progress"] == 2
    # The next step happens while the resumed stream listens.
    backend(client).release("r")
    third, answer = await resumed.next(), await resumed.next()
    assert third.id == next_id(primed, 3)
    assert third.message["params"] == {"progressToken": "token-r", "progress": 3, "total": 3}
    assert answer.id == next_id(primed, 4)
    assert answer.message["id"] == 9
    assert answer.message["result"]["content"][0]["text"] == "3 steps"
    assert await rest(resumed) == []
    assert backend(client).cancelled == [] and backend(client).finished == ["r"]
    assert client.app[HUB].detached == set()


async def test_a_call_that_ended_while_nobody_listened_is_replayed_in_full(
    client: Client,
) -> None:
    session = await open_session(client)
    response = await post_stream(client, session, paced_call("whole", "w", 2))
    primed = await priming_id(response)
    await hang_up(client, response)
    backend(client).release("w", 2)
    await eventually(lambda: not client.app[HUB].detached, what="the call answered")
    resumed = await open_get_stream(client, session, last_event_id=primed)
    messages = await rest(resumed)
    assert [m["params"]["progress"] for m in messages[:2]] == [1, 2]
    assert messages[2]["id"] == "whole" and messages[2]["result"]["content"][0]["text"] == "2 steps"
    assert len(messages) == 3


async def test_notifications_cancelled_still_cancels_a_call_whose_client_went_away(
    client: Client,
) -> None:
    session = await open_session(client)
    response = await post_stream(client, session, paced_call(11, "x", 2))
    primed = await priming_id(response)
    await hang_up(client, response)
    cancel = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 11}},
        headers=session_headers(session),
    )
    assert cancel.status == 202
    resumed = await open_get_stream(client, session, last_event_id=primed)
    (answer,) = await rest(resumed)
    assert answer["id"] == 11 and answer["error"]["code"] == -32800
    assert backend(client).cancelled == ["x"]


async def test_a_call_whose_client_went_away_still_ends_at_the_tool_timeout(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[paced], tool_timeout=3.0)
    client.session.headers.update(user_headers)
    session = await open_session(client)
    response = await post_stream(client, session, paced_call(12, "never", 1))
    primed = await priming_id(response)
    await hang_up(client, response)
    await eventually(lambda: not client.app[HUB].detached, what="the call to end")
    (answer,) = await rest(await open_get_stream(client, session, last_event_id=primed))
    assert answer["id"] == 12
    assert answer["result"]["isError"] is True
    assert "did not answer within 3s" in answer["result"]["content"][0]["text"]


async def test_past_detached_calls_max_a_hang_up_cancels_the_call(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[paced], tool_timeout=20.0, detached_calls_max=1)
    client.session.headers.update(user_headers)
    session = await open_session(client)
    kept = await post_stream(client, session, paced_call(1, "kept", 1))
    await priming_id(kept)
    await hang_up(client, kept)
    dropped = await post_stream(client, session, paced_call(2, "dropped", 1))
    primed = await priming_id(dropped)
    dropped.close()
    await eventually(lambda: backend(client).cancelled == ["dropped"], what="the cancellation")
    (answer,) = await rest(await open_get_stream(client, session, last_event_id=primed))
    assert answer["id"] == 2 and answer["error"]["code"] == -32800
    backend(client).release("kept")
    await eventually(lambda: backend(client).finished == ["kept"], what="the kept call to end")


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
async def test_before_2025_11_25_a_hang_up_cancels_the_call(client: Client, version: str) -> None:
    session = await open_session(client, version)
    response = await post_stream(client, session, paced_call(3, "old", 2))
    await asyncio.wait_for(backend(client).running("old"), 5)
    response.close()
    await eventually(lambda: backend(client).cancelled == ["old"], what="the cancellation")
    assert client.app[HUB].detached == set()


async def test_a_stream_nobody_can_resume_gets_404(client: Client) -> None:
    session = await open_session(client)
    response = await client.get(
        "/mcp",
        headers={
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session,
            "Last-Event-ID": "r0123456789ab-2",
        },
    )
    assert response.status == 404
    assert "no such stream" in (await response.json())["error"]["message"]


async def test_another_sessions_stream_cannot_be_resumed(client: Client) -> None:
    session, other = await open_session(client), await open_session(client)
    response = await post_stream(client, session, paced_call(4, "mine", 1))
    primed = await priming_id(response)
    refused = await client.get(
        "/mcp",
        headers={"Accept": "text/event-stream", "Mcp-Session-Id": other, "Last-Event-ID": primed},
    )
    assert refused.status == 404
    backend(client).release("mine")
    assert (await rest(EventReader(response)))[-1]["id"] == 4


async def test_a_call_lost_with_its_worker_is_answered_with_an_error_after_its_deadline(
    client: Client,
) -> None:
    session = await open_session(client)
    # What a worker that died mid-call leaves behind: the record, and no answer.
    record = ResponseRecord("lost", time.time() - 60)
    await client.app[EVENTS].open_response(session, "r00000000dead", record)
    reader = await open_get_stream(client, session, last_event_id="r00000000dead-0")
    (answer,) = await rest(reader)
    assert answer["id"] == "lost" and answer["error"]["code"] == -32603


async def test_ending_the_session_ends_the_stream_that_resumed_a_call(client: Client) -> None:
    session = await open_session(client)
    response = await post_stream(client, session, paced_call(6, "end", 1))
    primed = await priming_id(response)
    await hang_up(client, response)
    resumed = await open_get_stream(client, session, last_event_id=primed)
    await eventually(lambda: bool(client.app[HUB].followers), what="the resumed stream")
    deleted = await client.delete("/mcp", headers=session_headers(session))
    assert deleted.status == 204
    assert await rest(resumed) == []
    backend(client).release("end")
