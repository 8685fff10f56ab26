"""A stdio MCP server that breaks the stdio contract after a correct `initialize`, for the
stdio backend's tests. It speaks raw JSON-RPC (no SDK), so each fault is exactly what it
says:

- `close-stdout`: close its stdout, then keep running (reading stdin, answering nothing);
- `fork-and-exit`: fork a child that sleeps holding stdin, stdout and stderr, then exit 0;
- `ask-flood`: send `count` requests to its client (roots/list) without reading a line of
  its stdin any more, create the file `tag` once all are written, then sleep.

Run as `python tests/upstreams/stdio_unruly.py MODE [count] [tag]` (`tag` is ignored: it
lets a test find its processes).
"""

from __future__ import annotations

import json
import os
import sys
import time

VERSION = "2025-06-18"


def send(message: dict[str, object]) -> None:
    sys.stdout.buffer.write(json.dumps(message).encode() + b"\n")
    sys.stdout.buffer.flush()


def initialized(request_id: object) -> None:
    capabilities = {"tools": {}}
    info = {"name": "stdio-unruly", "version": "1"}
    result = {"protocolVersion": VERSION, "capabilities": capabilities, "serverInfo": info}
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


def misbehave(mode: str, count: int, tag: str | None) -> None:
    if mode == "close-stdout":
        os.close(1)
        for _ in sys.stdin.buffer:
            pass
        time.sleep(3600)
    elif mode == "fork-and-exit":
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        os._exit(0)
    elif mode == "ask-flood":
        for number in range(count):
            send({"jsonrpc": "2.0", "id": number, "method": "roots/list"})
        if tag is not None:
            open(tag, "w").close()
        time.sleep(3600)


def main() -> None:
    mode = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    tag = sys.argv[3] if len(sys.argv) > 3 else None
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if message.get("method") == "initialize":
            initialized(message["id"])
        elif message.get("method") == "notifications/initialized":
            misbehave(mode, count, tag)


if __name__ == "__main__":
    main()
