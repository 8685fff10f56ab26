"""A stdio MCP server built with the official `mcp` SDK, for the stdio backend's tests.

Its tools tell which process answered (`pid`), echo, sleep, report progress, send a log
message (`log`), show an environment variable (`env`), ask the client for its roots
(`roots`), announce a changed tool list (`announce`) and die in the middle of a call (`die`).
`--misbehave` picks a fault instead of a well-behaved start:

- `exit`: write a line to stderr and exit at once with status 3;
- `hang`: read stdin and never answer `initialize`;
- `noise`: print lines that are not JSON on stdout, then serve;
- `flood`: serve while writing stderr lines as fast as it can.

Run as `python tests/upstreams/stdio_server.py [--misbehave X] [tag]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import warnings

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

# Roots are deprecated in the newest protocol, not in the versions spoken here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server: MCPServer = MCPServer("stdio-upstream", log_level="WARNING")


@server.tool()
def pid() -> str:
    """The id of the process serving this call."""
    return str(os.getpid())


@server.tool()
def echo(text: str) -> str:
    """Return `text`."""
    return text


@server.tool()
def env(name: str) -> str:
    """The value of environment variable `name` (empty if unset)."""
    return os.environ.get(name, "")


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then say how long."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report `steps` progress notifications, then finish."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps)
    return "done"


@server.tool()
async def log(text: str, ctx: Context) -> str:
    """Send `text` as an info log message (nothing on stdio says which request it is about)."""
    await ctx.info(text)
    return "logged"


@server.tool()
async def roots(ctx: Context) -> str:
    """Ask the client for its roots (related to no request, as the SDK does); list them."""
    result = await ctx.session.list_roots()
    return ",".join(str(root.uri) for root in result.roots)


@server.tool()
async def announce(ctx: Context) -> str:
    """Tell the client the tool list changed (a notification about no request)."""
    await ctx.session.send_tool_list_changed()
    return "announced"


@server.tool()
def die() -> str:
    """Exit the process in the middle of the call."""
    os._exit(7)


def _flood() -> None:
    line = b"x" * 200 + b"\n"
    while True:
        try:
            os.write(2, line)
        except OSError:
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misbehave", choices=["exit", "hang", "noise", "flood"])
    parser.add_argument("tag", nargs="?", help="ignored: lets a test find its processes")
    args = parser.parse_args()
    if args.misbehave == "exit":
        sys.stderr.write("cannot start: no configuration\n")
        sys.exit(3)
    if args.misbehave == "hang":
        for _ in sys.stdin:
            pass
        time.sleep(3600)
    if args.misbehave == "noise":
        sys.stdout.write("starting up...\nnot json {\n[1, 2]\n")
        sys.stdout.flush()
    if args.misbehave == "flood":
        threading.Thread(target=_flood, daemon=True).start()
    server.run("stdio")


if __name__ == "__main__":
    main()
