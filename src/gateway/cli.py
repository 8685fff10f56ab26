"""The `aio-mcp-gateway` command: `serve` for development, `check`, `demo-upstream`, `bridge`
(stdio to a gateway), and the commands that plugins add (the jwt plugin's `token create`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.plugins import Plugins
from gateway.settings import Settings, SettingsError, load_settings
from gateway.stdiobridge import command as stdio_bridge

Run = Callable[[argparse.Namespace, Settings], int | Coroutine[Any, Any, int]]
"""A command: gets the parsed arguments and the settings, returns the exit status."""
Subparsers = argparse._SubParsersAction  # argparse exports no public name for it


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A subcommand of `aio-mcp-gateway` that a plugin adds (`gateway_register_commands`).

    A command either runs (`run`, with `arguments` adding its options to its parser) or
    groups `subcommands`, as `token` groups `token create`.
    """

    name: str
    help: str
    run: Run | None = None
    """May be a coroutine function; the command line then runs it with `asyncio.run`."""
    arguments: Callable[[argparse.ArgumentParser], object] | None = None
    subcommands: tuple[CommandSpec, ...] = ()


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.eventloop import new_event_loop
    from gateway.logconfig import configure_logging
    from gateway.startup import log_startup_warnings

    host = args.host or settings.host
    port = args.port or settings.port
    configure_logging(settings)
    log_startup_warnings(settings)
    loop = new_event_loop(settings)
    web.run_app(create_app(settings), host=host, port=port, access_log=None, print=None, loop=loop)
    return 0


def _check(plugins: Plugins, settings: Settings) -> int:
    plugins.check(settings)
    print(
        f"settings ok; caches: {', '.join(plugins.caches.names())}; "
        f"auth: {', '.join(plugins.auth.names())}; "
        f"backends: {', '.join(plugins.backends.names())}; "
        f"interceptors: {', '.join(plugins.interceptors.names()) or 'none'}"
    )
    return 0


def _add_command(sub: Subparsers[argparse.ArgumentParser], spec: CommandSpec) -> None:
    if spec.name in sub.choices:
        raise SettingsError(f"a plugin adds the command {spec.name!r}, which the gateway has")
    command = sub.add_parser(spec.name, help=spec.help)
    if spec.arguments is not None:
        spec.arguments(command)
    if spec.subcommands:
        nested = command.add_subparsers(dest=f"{spec.name}_command", required=True)
        for subcommand in spec.subcommands:
            _add_command(nested, subcommand)
    elif spec.run is not None:
        command.set_defaults(run=spec.run)
    else:
        raise SettingsError(f"the plugin command {spec.name!r} has neither run nor subcommands")


def _demo_upstream(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.demo import run

    run(args.host, args.port)
    return 0


def parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The command line; without `plugins`, only the gateway's own commands."""
    p = argparse.ArgumentParser(prog="aio-mcp-gateway", description=__doc__)
    p.add_argument("--version", action="version", version=f"aio-mcp-gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one gateway process (development)")
    serve.add_argument("--host", help="bind address (default: HOST)")
    serve.add_argument("--port", type=int, help="port (default: PORT)")
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check", help="validate settings and list installed plugins")
    check.set_defaults(
        run=lambda args, settings: _check(plugins or Plugins.load(settings), settings)
    )

    demo = sub.add_parser("demo-upstream", help="run a small MCP server to try the gateway with")
    demo.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=9000, help="port (default: 9000)")
    demo.set_defaults(run=_demo_upstream)

    from gateway.config.commands import COMMAND as config  # it builds on CommandSpec

    _add_command(sub, config)
    bridge = sub.add_parser(
        "bridge", help="serve MCP on stdio, forwarding everything to a gateway over HTTP"
    )
    stdio_bridge.add_arguments(bridge)
    bridge.set_defaults(run=stdio_bridge.run)

    for spec in plugins.commands.items.values() if plugins is not None else ():
        _add_command(sub, spec)
    return p


def _run(run: Run, args: argparse.Namespace, settings: Settings) -> int:
    status = run(args, settings)
    return status if isinstance(status, int) else asyncio.run(status)


def _asks_for_help(argv: Iterable[str] | None) -> bool:
    return not {"-h", "--help", "--version"}.isdisjoint(sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    try:
        # Plugins add commands, and which plugins load is a setting: settings come first.
        settings = load_settings()
        args = parser(Plugins.load(settings)).parse_args(argv)
        return _run(args.run, args, settings)
    except SettingsError as exc:
        if _asks_for_help(argv):
            parser().parse_args(argv)  # help and version need no settings
        for problem in exc.problems:
            print(f"aio-mcp-gateway: configuration error: {problem}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for the operator, not a traceback
        print(f"aio-mcp-gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
