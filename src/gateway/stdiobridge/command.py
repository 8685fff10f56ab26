"""`aio-mcp-gateway bridge`: its options, and running the bridge until its input ends.

The token comes from an environment variable (`--token-env`, GATEWAY_TOKEN by default), so
it never shows in the process list; `--token` exists for trying things by hand. Logs go to
standard error; standard output carries protocol messages only.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

import aiohttp

from gateway.logconfig import configure_logging
from gateway.settings import Settings
from gateway.stdiobridge.bridge import Bridge
from gateway.stdiobridge.gateway_client import GatewayClient
from gateway.stdiobridge.lines import open_stdin, open_stdout

DEFAULT_TOKEN_ENV = "GATEWAY_TOKEN"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 64


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        required=True,
        help="the gateway's MCP endpoint, e.g. http://host:4444/mcp or .../servers/NAME/mcp",
    )
    parser.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="NAME",
        help=f"environment variable holding the bearer token (default: {DEFAULT_TOKEN_ENV})",
    )
    parser.add_argument(
        "--token",
        help="the bearer token itself; other local users can see it in the process list, "
        "so prefer --token-env",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=_positive,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="longest message taken from the client or the gateway (default: 16 MiB)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"requests carried at once; more are refused (default: {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to connect to the gateway (default: 10)",
    )


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"--url must be an http:// or https:// URL with a host, not {url!r}"
    return None


async def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)
    problem = _check_url(args.url)
    if problem is not None:
        print(f"aio-mcp-gateway bridge: {problem}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(args.token_env) or None
    if token is None:
        print(
            f"aio-mcp-gateway bridge: no token (set {args.token_env}); "
            "a gateway that requires one will refuse every message",
            file=sys.stderr,
        )
    lines = await open_stdin(args.max_message_bytes)
    outlet = await open_stdout()
    timeout = aiohttp.ClientTimeout(total=None, connect=args.connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        bridge = Bridge(lines, outlet, args.max_in_flight)
        gateway = GatewayClient(http, args.url, token, bridge.deliver, args.max_message_bytes)
        carried = await bridge.run(gateway)
    return 0 if carried else 1
