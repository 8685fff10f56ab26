"""An upstream built with the official `mcp` SDK, so the gateway is also tested against a
server it did not write: Streamable HTTP with stateful sessions, SSE replies by default.

Run as `python -m tests.upstreams.sdk_server --port N` from the repository root, or as
`python tests/upstreams/sdk_server.py --port N`.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from mcp.server.mcpserver import MCPServer

server: MCPServer = MCPServer("sdk-upstream", log_level="WARNING")


@server.tool()
def greet(name: str) -> str:
    """Say hello to someone."""
    return f"Hello, {name}!"


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once its socket listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"listening on http://127.0.0.1:{self.config.port}", flush=True)


def serve(port: int, json_response: bool) -> None:
    # Stateful on purpose (stateless_http=False): the client must carry the session id.
    app = server.streamable_http_app(json_response=json_response, stateless_http=False)
    _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An MCP upstream built with the official SDK.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--json", action="store_true", help="answer with JSON bodies instead of SSE streams"
    )
    args = parser.parse_args(argv)
    serve(args.port, args.json)


if __name__ == "__main__":
    main()
