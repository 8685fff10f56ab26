"""The `aio-mcp-gateway` command: `serve` for development, `token create`, `check`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway import __version__
from gateway.settings import Settings, SettingsError, load_settings


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


async def _stored_secret(settings: Settings) -> str:
    from gateway.app import JWT_SECRET_NAME, new_secret
    from gateway.store import open_store

    store = open_store(settings.database_url, settings.auth_encryption_secret)
    await store.start()
    try:
        return await store.get_or_create_secret(JWT_SECRET_NAME, new_secret)
    finally:
        await store.close()


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from gateway_plugins.auth_jwt import create_token

    secret = settings.jwt_secret_key or asyncio.run(_stored_secret(settings))
    scopes = [s for scope in args.scope for s in scope.split()]
    print(create_token(secret, args.sub, scopes, args.exp, settings.jwt_algorithm, args.server))
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.plugins import Plugins

    plugins = Plugins.load(settings)
    plugins.check(settings)
    print(
        f"settings ok; caches: {', '.join(plugins.caches.names())}; "
        f"auth: {', '.join(plugins.auth.names())}; backends: {', '.join(plugins.backends.names())}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aio-mcp-gateway", description=__doc__)
    p.add_argument("--version", action="version", version=f"aio-mcp-gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one gateway process (development)")
    serve.add_argument("--host", help="bind address (default: HOST)")
    serve.add_argument("--port", type=int, help="port (default: PORT)")
    serve.set_defaults(run=_serve)

    token = sub.add_parser("token", help="JWT tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a token signed with the gateway's secret")
    create.add_argument("--sub", required=True, help="the subject (who the token is for)")
    create.add_argument(
        "--scope", action="append", default=[], help="a scope to grant, e.g. admin (repeatable)"
    )
    create.add_argument("--exp", type=float, default=60.0, help="minutes until it expires")
    create.add_argument(
        "--server",
        action="append",
        default=[],
        help="restrict the token to this virtual server (repeatable)",
    )
    create.set_defaults(run=_token)

    check = sub.add_parser("check", help="validate settings and list installed plugins")
    check.set_defaults(run=_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.run(args, settings))
    except SettingsError as exc:
        print(f"aio-mcp-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for the operator, not a traceback
        print(f"aio-mcp-gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
