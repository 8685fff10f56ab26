"""An upstream built with the official `mcp` SDK, so the gateway is tested against a
server it did not write: Streamable HTTP, stateful sessions, SSE answers by default.

Run as `python -m tests.upstreams.sdk_server --port N` from the repository root.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

server: MCPServer = MCPServer("sdk-upstream")


@server.tool()
def greet(name: str) -> str:
    """Say hello to someone."""
    return f"Hello, {name}!"


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--json", action="store_true", help="answer with JSON bodies instead of SSE streams"
    )
    args = parser.parse_args(argv)
    # Stateful on purpose: the gateway must carry the session id the SDK issues.
    app = server.streamable_http_app(json_response=args.json, stateless_http=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    uvicorn_server.run()


if __name__ == "__main__":
    main()
