"""The worker's side of the stdio host's channel: a connection counts only once the host has
greeted it, so requests are never written into one a dying host queued and then drops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway_plugins.stdio.channel import SOCKET_NAME, dumps, read_message
from gateway_plugins.stdio.hub import HostCommand, Hub, Pending


async def test_a_connection_closed_before_the_hosts_hello_is_dropped_and_made_again(
    tmp_path: Path,
) -> None:
    accepted = 0
    requests: list[dict[str, object]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        if accepted == 1:  # what a dying host's listening socket does
            writer.close()
            return
        writer.write(dumps({"op": "hello", "pid": 1}))
        while (message := await read_message(reader)) is not None:
            requests.append(message)
            if message.get("op") == "status":
                writer.write(dumps({"op": "result", "id": message["id"], "result": {"ok": 1}}))
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(tmp_path / SOCKET_NAME))
    hub = Hub(tmp_path, HostCommand(max_processes=1, initialize_timeout=1, tool_timeout=1))
    try:
        call_id = hub.next_id()
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        hub.pending[call_id] = Pending(future)
        await hub.send({"op": "status", "ref": 1, "id": call_id})
        answer = await asyncio.wait_for(future, 5)
    finally:
        await hub.close()
        server.close()
    assert accepted == 2
    assert answer == {"op": "result", "id": call_id, "result": {"ok": 1}}
    assert [r["op"] for r in requests] == ["status"]
