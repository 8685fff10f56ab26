"""The `aio-mcp-gateway token` commands of the `jwt` authenticator: `token create` prints
a token signed with the gateway's secret (and may record it as a managed token),
`token list` lists the managed tokens and `token revoke` revokes one by its jti.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jwt
import orjson

from gateway.plugin import CommandSpec, Plugins, Settings, Store, auth_secret, command_store
from gateway_plugins import jwt_managed, jwt_revocations
from gateway_plugins.jwt_tokens import ALGORITHM, MAX_LIFETIME, create_token


def _token_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sub", required=True, help="the subject (who the token is for)")
    parser.add_argument(
        "--scope", action="append", default=[], help="a scope to grant, e.g. admin (repeatable)"
    )
    parser.add_argument("--exp", type=float, default=60.0, help="minutes until it expires")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        help="restrict the token to this virtual server (repeatable)",
    )
    parser.add_argument(
        "--name",
        help="record it as a managed token of this name (listed by token list, as GET /tokens)",
    )


async def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    secret = await auth_secret(settings)
    scopes = [s for scope in args.scope for s in scope.split()]
    algorithm = settings.plugin_value(ALGORITHM)
    max_lifetime = settings.plugin_value(MAX_LIFETIME)
    try:
        token = create_token(
            secret, args.sub, scopes, args.exp, algorithm, args.server, max_lifetime
        )
    except ValueError as exc:
        print(f"aio-mcp-gateway: token create: {exc}", file=sys.stderr)
        return 2
    if args.name is not None:
        claims = jwt.decode(token, secret, algorithms=[algorithm])
        managed = jwt_managed.ManagedToken(
            claims["jti"],
            args.name,
            args.sub,
            tuple(scopes),
            tuple(args.server),
            float(claims["iat"]),
            float(claims["exp"]),
        )
        async with command_store(settings) as store:
            await jwt_managed.record(store, managed)
    print(token)
    return 0


async def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    async with command_store(settings) as store:
        tokens = await jwt_managed.listed(store)
    for managed in tokens:
        print(orjson.dumps(managed.view()).decode())
    return 0


def _token_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jti",
        required=True,
        help="the jti claim of the token to revoke (write --jti=VALUE for one that starts with -)",
    )


async def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    spec = Plugins.load(settings).cache_for(settings)

    def shared_cache(store: Store) -> Any:
        return spec.factory(settings, store)

    async with command_store(settings) as store:
        await jwt_managed.mark_revoked(store, args.jti, time.time())

    return await jwt_revocations.revoke_command(
        args, settings, settings.plugin_value(MAX_LIFETIME), shared_cache if spec.shared else None
    )


TOKEN_COMMAND = CommandSpec(
    name="token",
    help="JWT tokens",
    subcommands=(
        CommandSpec(
            name="create",
            help="print a token signed with the gateway's secret",
            run=_token_create,
            arguments=_token_create_arguments,
        ),
        CommandSpec(
            name="list",
            help="list the managed tokens, one JSON object a line (never the tokens)",
            run=_token_list,
        ),
        CommandSpec(
            name="revoke",
            help="revoke a token by its jti, on every worker and instance",
            run=_token_revoke,
            arguments=_token_revoke_arguments,
        ),
    ),
)
