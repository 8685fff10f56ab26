"""A stdio MCP server whose one tool, `meta`, answers with the `_meta` its call carried:
how a test sees the trace context a stdio upstream is sent (it has no headers)."""

from __future__ import annotations

import sys

import orjson

TOOL = {"name": "meta", "description": "The call's _meta.", "inputSchema": {"type": "object"}}


def answer(message: dict) -> dict | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "meta", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        text = orjson.dumps(params.get("_meta") or {}).decode()
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(orjson.loads(line))
        if reply is not None:
            sys.stdout.write(orjson.dumps(reply).decode() + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
