"""`aio-mcp-gateway config export` and `config apply [--dry-run] FILE`.

Both run the gateway's own parts for a moment without serving (an application started and
cleaned up), so an apply from the command line validates, discovers and announces its
changes to running workers exactly as the admin API would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from gateway.cli import CommandSpec
from gateway.config.apply import Applier
from gateway.config.document import load
from gateway.config.export import export
from gateway.config.managed import Lease
from gateway.keys import PLUGINS, REGISTRY, STORE, UPSTREAMS
from gateway.logconfig import configure_logging
from gateway.plugins import Plugins
from gateway.settings import Settings


@asynccontextmanager
async def _gateway(settings: Settings) -> AsyncIterator[web.Application]:
    from gateway.app import build_app

    # The file given on the command line is the one to apply, not GATEWAY_CONFIG.
    settings = settings.replace(config_file="")
    configure_logging(settings)  # to standard error: standard output is the command's
    plugins = Plugins.load(settings)
    plugins.check(settings)
    app = build_app(settings, plugins)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    async with _gateway(settings) as app:
        text = await export(app[STORE], app[PLUGINS])
    if args.output and args.output != "-":
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


async def _apply(args: argparse.Namespace, settings: Settings) -> int:
    # Checked before anything starts: a bad file changes nothing and costs nothing.
    desired = load(args.file, os.environ)
    async with _gateway(settings) as app:
        applier = Applier(app[STORE], app[UPSTREAMS], app[REGISTRY])
        if args.dry_run:
            plan = await applier.apply(desired, dry_run=True)
        else:
            async with Lease(app[STORE]).held(wait=settings.gunicorn_timeout):
                plan = await applier.apply(desired)
    print(plan.describe())
    if args.dry_run and plan.changes:
        print("(dry run: nothing changed)")
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file (default: standard output)")


def _apply_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the configuration file (YAML)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the changes without making them"
    )


COMMAND = CommandSpec(
    name="config",
    help="export the configuration, or apply a configuration file",
    subcommands=(
        CommandSpec(
            "export",
            "write upstreams, servers and tool settings as YAML",
            run=_export,
            arguments=_export_arguments,
        ),
        CommandSpec(
            "apply",
            "apply a configuration file, printing the changes",
            run=_apply,
            arguments=_apply_arguments,
        ),
    ),
)
