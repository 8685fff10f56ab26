"""An upstream built with the official `mcp` SDK, so the gateway is also tested against a
server it did not write: tools (one reporting progress), a resource, a resource template and
a prompt, all declared with the SDK's own decorators.

By default it serves Streamable HTTP at /mcp with stateful sessions and SSE replies; with
`--legacy-sse` it serves the 2024-11-05 HTTP+SSE transport (GET /sse, POST /messages/).

Run as `python -m tests.upstreams.sdk_server --port N` from the repository root, or as
`python tests/upstreams/sdk_server.py --port N`.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server: MCPServer = MCPServer("sdk-upstream", log_level="WARNING")


@server.tool()
def greet(name: str) -> str:
    """Say hello to someone."""
    return f"Hello, {name}!"


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Count to `steps`, reporting progress at each step."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return f"counted to {steps}"


@server.resource(
    "memo://sdk/readme", name="readme", description="A text resource.", mime_type="text/plain"
)
def readme() -> str:
    return "Served by the SDK."


@server.resource(
    "memo://sdk/items/{item_id}",
    name="sdk-item",
    description="One item, by id.",
    mime_type="text/plain",
)
def item(item_id: str) -> str:
    return f"SDK item {item_id}"


@server.prompt(title="Haiku")
def haiku(topic: str) -> str:
    """Ask for a haiku about a topic."""
    return f"Write a haiku about {topic}."


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once its socket listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"listening on http://127.0.0.1:{self.config.port}", flush=True)


def serve(port: int, json_response: bool, legacy_sse: bool) -> None:
    if legacy_sse:
        app = server.sse_app()
    else:
        # Stateful on purpose (stateless_http=False): the client must carry the session id.
        app = server.streamable_http_app(json_response=json_response, stateless_http=False)
    _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An MCP upstream built with the official SDK.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--json", action="store_true", help="answer with JSON bodies instead of SSE streams"
    )
    parser.add_argument(
        "--legacy-sse",
        action="store_true",
        help="serve the 2024-11-05 HTTP+SSE transport (GET /sse, POST /messages/)",
    )
    args = parser.parse_args(argv)
    serve(args.port, args.json, args.legacy_sse)


if __name__ == "__main__":
    main()
