"""The hook specifications: what a plugin can add to the gateway.

A plugin is a module or object with functions marked `@hookimpl`, found through the
`aio_mcp_gateway` entry-point group. The registrar hooks receive a `Registrar` and call
`register.add(spec)`; settings then pick an implementation by name. Hooks stay synchronous:
the async work lives on the objects the registered factories build. Plugin authors import
all of this from `gateway.plugin`, whose docstring is their guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.cli import CommandSpec
    from gateway.contracts import AuthSpec, BackendSpec, CacheSpec
    from gateway.interceptors import InterceptorSpec
    from gateway.plugins import Registrar
    from gateway.settings import Settings, SettingSpec

PROJECT = "aio_mcp_gateway"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gateway_register_caches(register: Registrar[CacheSpec]) -> None:
    """Register cache implementations, selected by `CACHE_TYPE`."""


@hookspec
def gateway_register_auth(register: Registrar[AuthSpec]) -> None:
    """Register authenticators, selected by `AUTH_TYPE`."""


@hookspec
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    """Register upstream backends, selected by an upstream's `transport`."""


@hookspec
def gateway_register_interceptors(register: Registrar[InterceptorSpec]) -> None:
    """Register interceptors of calls, run when `INTERCEPTORS` or a virtual server names them."""


@hookspec
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    """Declare the plugin's own settings, read from the environment and checked at start."""


@hookspec
def gateway_register_commands(register: Registrar[CommandSpec]) -> None:
    """Add subcommands to the `aio-mcp-gateway` command line."""


@hookspec
def gateway_configure_app(app: web.Application, settings: Settings) -> None:
    """Add routes, middlewares or cleanup contexts to the application before it starts."""
