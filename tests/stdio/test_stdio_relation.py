"""Which request a stdio server's message is about. Nothing on stdio says: the SDKs send a
server's requests to its client (`roots/list`, sampling, elicitation) and its log messages
with no mark of the request they belong to. With one request in progress that can hear
them they belong to it; with several, to none (the server's listener, as before)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.contracts import ClientRequestError, UpstreamError
from tests.stdio.conftest import SLOW, MakeBackend, server_config, text_of

JSON = dict[str, Any]
ROOTS = {"roots": [{"uri": "file:///srv/one"}, {"uri": "file:///srv/two"}]}


def call(tool: str, **arguments: Any) -> JSON:
    return {"name": tool, "arguments": arguments}


async def test_a_request_naming_no_call_goes_to_the_one_call_that_can_ask(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    asked: list[str] = []

    async def ask(method: str, params: JSON) -> JSON:
        asked.append(method)
        return ROOTS

    result = await backend.request("tools/call", call("roots"), SLOW, on_request=ask)
    assert text_of(result) == "file:///srv/one,file:///srv/two"
    assert asked == ["roots/list"]


async def test_with_two_calls_that_can_ask_a_request_naming_none_goes_to_neither(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    asked: list[str] = []

    async def ask(method: str, params: JSON) -> JSON:
        asked.append(method)
        return ROOTS

    sleeping = asyncio.create_task(
        backend.request("tools/call", call("sleep", seconds=1.5), SLOW, on_request=ask)
    )
    try:
        await asyncio.sleep(0.3)
        # The server passes its failed roots/list on as the call's error.
        with pytest.raises(UpstreamError, match="no client can be asked for roots/list"):
            await backend.request("tools/call", call("roots"), SLOW, on_request=ask)
    finally:
        slept = await sleeping
    assert text_of(slept) == "slept 1.5"
    assert asked == []


async def test_a_log_message_naming_no_call_goes_to_the_one_call_that_hears(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())
    heard: list[tuple[str, JSON]] = []

    async def on_notification(method: str, params: JSON) -> None:
        heard.append((method, params))

    result = await backend.request(
        "tools/call", call("log", text="about this call"), SLOW, on_notification
    )
    assert text_of(result) == "logged"
    assert [(method, params["data"]) for method, params in heard] == [
        ("notifications/message", "about this call")
    ]


async def test_a_call_that_cannot_ask_leaves_the_request_to_the_listener(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(server_config())

    async def listener(method: str, params: JSON) -> None:
        pass

    async def refuse(method: str, params: JSON) -> JSON:
        raise ClientRequestError(-32601, f"the listener refuses {method}")

    backend.set_listener(listener, refuse)
    with pytest.raises(UpstreamError, match="the listener refuses roots/list"):
        await backend.request("tools/call", call("roots"), SLOW)
