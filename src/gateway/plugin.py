"""The plugin API of aio-mcp-gateway: everything a plugin imports comes from this module.

Writing a plugin
================

A plugin is a Python package with an entry point in the `aio_mcp_gateway` group; the key
is the plugin's name (what `PLUGINS_BLOCKED` lists), the value the module holding its
hooks::

    [project.entry-points.aio_mcp_gateway]
    time = "gateway_time"

In that module, functions named after a hook and marked `@hookimpl` are called at start.
A hook name that matches no hook stops start-up with one line naming the plugin and the
hook, so a misspelt name never goes unnoticed. `plugins/gateway-time` in the repository
is a complete, tested example package.

Hooks
-----

Registrar hooks receive `register` (a `Registrar`) and call `register.add(spec)`. The
first registration of a name wins and the built-ins register last (`trylast=True`), so a
plugin replaces a built-in by registering the same name. Hooks are synchronous and only
register factories; the objects those build do their async work in `start()` and
`close()`, which the gateway runs from one `cleanup_ctx`.

- `gateway_register_caches(register)`: add a `CacheSpec(name, factory, description,
  shared)`. `factory(settings, store)` returns a `Cache`. `CACHE_TYPE` selects one by name.
- `gateway_register_auth(register)`: add an `AuthSpec(name, factory, description)`.
  `factory(settings, secret)` returns an `Authenticator`, whose `authenticate(request)`
  returns a `Principal` or raises `AuthError` (401, or 403 with the `scope` it lacked,
  which the challenge names as `insufficient_scope`). `AUTH_TYPE` selects one by name. An
  authenticator that also implements `Challenging` (`challenge(request, error)`) writes
  the `WWW-Authenticate` of its refusals, as the `oauth` one points to its metadata.
- `gateway_register_backends(register)`: add a `BackendSpec(name, transport, factory,
  description, local)`. `factory(upstream, settings)` returns a `Backend` (or a
  `FullBackend`, which speaks the whole protocol). An upstream's `transport` selects it;
  with `local=True` the gateway registers one upstream for it at start, without a prefix.
  A transport with registration fields of its own names them in `fields` and checks them
  with `check_options(options, url, settings)`, which returns what to keep (the
  backend gets it as `upstream.options`) or raises `ValueError` for a 422; `needs_url=False`
  lets its upstreams do without a `url`. A backend that also implements `DiscoveryNotes`
  (`discovery_notes()`, called after `list_tools`) has what it returns shown with the
  upstream, as the `openapi` backend lists the operations it skipped. `secrets_field`
  names a field of string values that are credentials (the `stdio` backend's `env`): kept
  encrypted like headers, reaching the backend as `upstream.headers`, shown by name only.
  A backend implementing `Supervised` (`async status()`) has its status shown in
  `GET /upstreams/{name}`, as the `stdio` backend shows its process's. A backend that
  writes its own JSON-RPC requests passes each one's params through
  `with_trace_meta(params)`, which puts the open upstream span's W3C trace context in
  `params._meta` (as MCP reserves it) when tracing is on, so the upstream joins the trace.
- `gateway_register_interceptors(register)`: add an `InterceptorSpec(name, factory,
  priority, description)`. `factory(settings)` returns an `Interceptor` (subclass
  `BaseInterceptor`), built and started once per worker. Its async `before(call)` sees a
  `Call` (caller `Principal`, virtual server, kind `tool`/`resource`/`prompt`, name,
  arguments, upstream) of every `tools/call`, `resources/read` and `prompts/get`, and
  returns None, `UseArguments(arguments)`, `Refuse(message)` or `Answer(result)` (no
  upstream call); its async `after(call, result)` returns None, `UseResult(result)` or
  `Refuse(message)`. `INTERCEPTORS=a,b` chooses which run, a virtual server's
  `interceptors` list replaces it for that server; lower `priority` runs its `before`
  first and its `after` last. A step that raises, overruns `INTERCEPTOR_TIMEOUT` or
  returns anything else fails the call, naming the interceptor (`INTERCEPTORS_FAIL_OPEN`
  skips it instead); a tool call fails as an `isError` result, a resource read or prompt
  as a JSON-RPC error (-32602 refused, -32603 failed). `plugins/gateway-guardrails` is
  the example, and `gateway.testing.interceptor_conformance` the suite to run.
- `gateway_register_settings(register)`: add a `SettingSpec(name, default, parse, help)`
  per environment variable the plugin reads. The gateway reads it with its own settings,
  from the environment and `.env`, and a bad value stops start-up with one line. The
  plugin reads the value with `settings.plugin_value(spec)`. Parsers for `parse`:
  `text`, `boolean`, `integer(minimum)`, `number(above)`, `choice(*choices)`, or any
  function `(variable, raw) -> value` that raises `SettingsError` with one line.
- `gateway_register_commands(register)`: add a `CommandSpec(name, help, run, arguments,
  subcommands)`: a subcommand of `aio-mcp-gateway`. `arguments(parser)` adds options to
  its `argparse` parser; `run(args, settings)` returns the exit status (it may be a
  coroutine function). The jwt plugin adds `token create` this way; `auth_secret(settings)`
  gives such a command the secret the authenticators get.
- `gateway_configure_app(app, settings)`: add routes, middlewares or cleanup contexts to
  the aiohttp application before it starts. Mark a route `@public` or `@admin`; routes
  are otherwise for any authenticated caller. A plugin's cleanup context runs after the
  gateway's, so `app[SETTINGS]`, `app[STORE]`, `app[CACHE]` and, when auth is on,
  `app[AUTHENTICATOR]` are there. A command reaches the store with `command_store(settings)`.
  An authenticator that mints tokens may set `app[MANAGED_TOKENS]` to a `ManagedTokens`
  (list, issue, revoke), as the `jwt` plugin does: the admin UI then has a tokens page.

A small plugin::

    from gateway.plugin import CacheSpec, Registrar, SettingSpec, hookimpl, integer

    SIZE = SettingSpec("TINY_CACHE_SIZE", 100, integer(minimum=1), "entries per worker")

    @hookimpl
    def gateway_register_settings(register: Registrar[SettingSpec[int]]) -> None:
        register.add(SIZE)

    @hookimpl
    def gateway_register_caches(register: Registrar[CacheSpec]) -> None:
        register.add(CacheSpec(name="tiny", factory=lambda settings, store:
                               TinyCache(settings.plugin_value(SIZE)), shared=False))

Testing
-------

Register a plugin object directly in a test: `pm = build_plugin_manager()`,
`pm.register(plugin, name="...")`, then `Plugins(pm)`. A cache plugin can run the
gateway's cache conformance suite, which installs as the pytest plugin
`gateway.testing.cache_conformance`. `PLUGINS_TRACE=true` prints every hook call.
"""

from __future__ import annotations

from gateway.access import admin, public
from gateway.authsecret import auth_secret
from gateway.cli import CommandSpec, Run
from gateway.commandstore import command_store
from gateway.contracts import (
    JSON,
    AskClient,
    Authenticator,
    AuthError,
    AuthFactory,
    AuthSpec,
    Backend,
    BackendError,
    BackendFactory,
    BackendSpec,
    Cache,
    CacheFactory,
    CacheSpec,
    Challenging,
    ClientRequestError,
    DiscoveryNotes,
    FullBackend,
    ManagedTokens,
    Notify,
    Principal,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    Supervised,
    ToolDef,
    UpstreamConfig,
    UpstreamError,
)
from gateway.hookspecs import hookimpl
from gateway.interceptors import (
    After,
    Answer,
    BaseInterceptor,
    Before,
    Call,
    CallKind,
    Interceptor,
    InterceptorFactory,
    InterceptorSpec,
    Refuse,
    UseArguments,
    UseResult,
)
from gateway.keys import AUTHENTICATOR, CACHE, MANAGED_TOKENS, SETTINGS, STORE
from gateway.plugins import Plugins, Registrar, build_plugin_manager
from gateway.setting_parsers import (
    Parser,
    SettingsError,
    boolean,
    choice,
    integer,
    number,
    text,
)
from gateway.settings import Settings, SettingSpec
from gateway.store import Store, StoreError, Unstorable
from gateway.tracing import with_trace_meta

__all__ = [
    "AUTHENTICATOR",
    "CACHE",
    "JSON",
    "MANAGED_TOKENS",
    "SETTINGS",
    "STORE",
    "After",
    "Answer",
    "AskClient",
    "AuthError",
    "AuthFactory",
    "AuthSpec",
    "Authenticator",
    "Backend",
    "BackendError",
    "BackendFactory",
    "BackendSpec",
    "BaseInterceptor",
    "Before",
    "Cache",
    "CacheFactory",
    "CacheSpec",
    "Call",
    "CallKind",
    "Challenging",
    "ClientRequestError",
    "CommandSpec",
    "DiscoveryNotes",
    "FullBackend",
    "Interceptor",
    "InterceptorFactory",
    "InterceptorSpec",
    "ManagedTokens",
    "Notify",
    "Parser",
    "Plugins",
    "Principal",
    "PromptDef",
    "Refuse",
    "Registrar",
    "ResourceDef",
    "ResourceTemplateDef",
    "Run",
    "SettingSpec",
    "Settings",
    "SettingsError",
    "Store",
    "StoreError",
    "Supervised",
    "ToolDef",
    "Unstorable",
    "UpstreamConfig",
    "UpstreamError",
    "UseArguments",
    "UseResult",
    "admin",
    "auth_secret",
    "boolean",
    "build_plugin_manager",
    "choice",
    "command_store",
    "hookimpl",
    "integer",
    "number",
    "public",
    "text",
    "with_trace_meta",
]
