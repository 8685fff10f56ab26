"""The plugin system: one API module, entry points, registrar hooks, blocking, misspelt
hooks, and a test and docs per hook."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any

import pytest

import gateway.plugin
from gateway import cli, hookspecs
from gateway.plugin import (
    CacheSpec,
    CommandSpec,
    Plugins,
    Registrar,
    Settings,
    SettingsError,
    SettingSpec,
    build_plugin_manager,
    hookimpl,
    integer,
)
from gateway.settings import load_settings
from tests.conftest import GatewayFactory
from tests.plugins import faulty, misspelt

REPO = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("gateway_"))


def test_built_in_plugins_load_through_entry_points() -> None:
    plugins = Plugins.load(Settings())
    assert {"memory", "database"} <= set(plugins.caches.names())
    assert {"jwt", "none"} <= set(plugins.auth.names())
    assert plugins.backend_for("streamable-http") is not None
    names = {name for name, _ in build_plugin_manager().list_name_plugin()}
    assert {"cache_memory", "cache_database", "auth_jwt", "auth_none", "backend_mcp_http"} <= names


def test_plugins_blocked_keeps_a_plugin_out() -> None:
    plugins = Plugins.load(Settings(plugins_blocked=("cache_memory",)))
    assert "memory" not in plugins.caches.names()
    assert "database" in plugins.caches.names()


def test_unknown_cache_type_lists_the_installed_caches() -> None:
    plugins = Plugins.load(Settings())
    with pytest.raises(SettingsError) as raised:
        plugins.check(Settings(cache_type="nope"))
    message = str(raised.value)
    assert message.startswith("CACHE_TYPE='nope' is not an installed cache plugin")
    assert "database" in message and "memory" in message


def test_unknown_auth_type_lists_the_installed_authenticators() -> None:
    with pytest.raises(SettingsError, match=r"AUTH_TYPE='ldap'.*jwt"):
        Plugins.load(Settings()).check(Settings(auth_type="ldap"))


def test_an_installed_plugin_replaces_a_built_in_of_the_same_name() -> None:
    class Replacement:
        @hookimpl
        def gateway_register_caches(self, register: Registrar[CacheSpec]) -> None:
            register.add(
                CacheSpec(
                    name="memory",
                    factory=lambda s, st: None,  # type: ignore[arg-type,return-value]
                    description="replacement",
                )
            )

    pm = build_plugin_manager()
    pm.register(Replacement(), name="replacement")
    assert Plugins(pm).caches.items["memory"].description == "replacement"


def test_hook_gateway_register_caches() -> None:
    spec = Plugins.load(Settings()).caches.items["memory"]
    assert spec.shared is False and callable(spec.factory)


def test_hook_gateway_register_auth() -> None:
    assert callable(Plugins.load(Settings()).auth.items["jwt"].factory)


def test_hook_gateway_register_settings() -> None:
    size = SettingSpec("TINY_CACHE_SIZE", 10, integer(minimum=1), "entries per worker")

    class DeclaresASetting:
        @hookimpl
        def gateway_register_settings(self, register: Registrar[SettingSpec[Any]]) -> None:
            register.add(size)

    pm = build_plugin_manager()
    pm.register(DeclaresASetting(), name="tiny")
    declared = Plugins(pm).declared_settings
    assert {"TINY_CACHE_SIZE", "REDIS_URL", "JWT_ALGORITHM"} <= set(declared.names())
    settings = load_settings({"TINY_CACHE_SIZE": "3"}, None, declared.items.values())
    assert settings.plugin_value(size) == 3
    with pytest.raises(SettingsError, match=r"^TINY_CACHE_SIZE='0' must be at least 1$"):
        load_settings({"TINY_CACHE_SIZE": "0"}, None, declared.items.values())


def test_hook_gateway_register_commands(capsys: pytest.CaptureFixture[str]) -> None:
    def greet(args: argparse.Namespace, settings: Settings) -> int:
        print(f"hello {args.name} on port {settings.port}")
        return 0

    class AddsACommand:
        @hookimpl
        def gateway_register_commands(self, register: Registrar[CommandSpec]) -> None:
            register.add(
                CommandSpec(
                    name="greet",
                    help="say hello",
                    run=greet,
                    arguments=lambda parser: parser.add_argument("--name", required=True),
                )
            )

    pm = build_plugin_manager()
    pm.register(AddsACommand(), name="greeter")
    plugins = Plugins(pm)
    assert {"greet", "token"} <= set(plugins.commands.names())
    args = cli.parser(plugins).parse_args(["greet", "--name", "ann"])
    assert args.run(args, Settings(port=5000)) == 0
    assert capsys.readouterr().out == "hello ann on port 5000\n"


def test_a_plugin_command_may_not_take_the_name_of_a_gateway_command() -> None:
    class AddsCheck:
        @hookimpl
        def gateway_register_commands(self, register: Registrar[CommandSpec]) -> None:
            register.add(CommandSpec(name="check", help="mine", run=lambda args, settings: 0))

    pm = build_plugin_manager()
    pm.register(AddsCheck(), name="adds_check")
    with pytest.raises(SettingsError, match=r"^a plugin adds the command 'check'"):
        cli.parser(Plugins(pm))


def test_a_misspelt_hook_name_fails_with_one_line_naming_the_plugin_and_the_hook() -> None:
    pm = build_plugin_manager()
    pm.register(misspelt, name="misspelt")
    with pytest.raises(SettingsError) as raised:
        Plugins(pm)
    assert str(raised.value) == (
        "plugin 'misspelt' implements unknown hook 'gateway_register_cache' "
        "(did you mean 'gateway_register_caches'?)"
    )


async def test_a_misspelt_hook_name_stops_a_gateway_before_it_starts(
    gateway: GatewayFactory,
) -> None:
    with pytest.raises(SettingsError, match="unknown hook 'gateway_register_cache'"):
        await gateway(plugins=[misspelt])


def test_the_core_never_imports_a_built_in_plugin() -> None:
    importers = []
    for path in sorted((REPO / "src" / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "gateway_plugins" for name in names):
                importers.append(str(path.relative_to(REPO)))
    assert importers == []


@pytest.mark.parametrize(
    "module",
    [
        "src/gateway_plugins/auth_jwt.py",
        "src/gateway_plugins/auth_none.py",
        "src/gateway_plugins/auth_oauth.py",
        "src/gateway_plugins/oauth/jwks.py",
        "src/gateway_plugins/oauth/resource.py",
        "src/gateway_plugins/oauth/tokens.py",
        "src/gateway_plugins/cache_database.py",
        "src/gateway_plugins/cache_memory.py",
        "src/gateway_plugins/cache_redis.py",
        "src/gateway_plugins/jwt_commands.py",
        "src/gateway_plugins/jwt_revocations.py",
        "src/gateway_plugins/jwt_tokens.py",
        *(
            str(path.relative_to(REPO))
            for path in sorted((REPO / "plugins" / "gateway-time").rglob("*.py"))
        ),
        *(
            str(path.relative_to(REPO))
            for path in sorted((REPO / "plugins" / "gateway-guardrails" / "src").rglob("*.py"))
        ),
    ],
)
def test_plugins_import_the_gateway_only_through_gateway_plugin(module: str) -> None:
    imported = {
        node.module
        for node in ast.walk(ast.parse((REPO / module).read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {name for name in imported if name.split(".")[0] == "gateway"} <= {"gateway.plugin"}


def test_hook_gateway_register_backends() -> None:
    pm = build_plugin_manager()
    pm.register(faulty, name="faulty")
    plugins = Plugins(pm)
    assert plugins.backend_for("streamable-http") is not None
    assert [spec.name for spec in plugins.local_backends() if spec.name == "faulty"] == ["faulty"]


def test_hook_gateway_register_interceptors() -> None:
    from tests.plugins.intercepting import Intercepting

    pm = build_plugin_manager()
    pm.register(Intercepting(), name="intercepting")
    plugins = Plugins(pm)
    assert plugins.interceptors.items["upper"].priority == 50
    assert {"stamp", "refuse", "answer"} <= set(plugins.interceptors.names())


async def test_hook_gateway_configure_app(gateway: GatewayFactory) -> None:
    from aiohttp import web

    from gateway.access import public

    @public
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    class AddsRoute:
        @hookimpl
        def gateway_configure_app(self, app: web.Application, settings: Settings) -> None:
            app.router.add_get("/hello", hello)

    client = await gateway(plugins=[AddsRoute()])
    response = await client.get("/hello")
    assert response.status == 200
    assert await response.json() == {"hello": "world"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    assert f"def test_hook_{hook}" in Path(__file__).read_text()


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("where", ["README.md", "the plugin guide"])
def test_every_hook_is_documented_with_its_arguments(hook: str, where: str) -> None:
    text = (REPO / where).read_text() if where == "README.md" else str(gateway.plugin.__doc__)
    argnames = getattr(build_plugin_manager().hook, hook).spec.argnames
    assert re.search(rf"`{hook}\({', '.join(argnames)}\)`", text), hook


async def test_a_built_in_upstream_can_be_neither_changed_nor_deleted_through_the_api(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty])
    listed = await (await client.get("/upstreams", headers=admin_headers)).json()
    builtin = [u["name"] for u in listed["upstreams"] if u["builtin"]]
    assert builtin, listed
    name = builtin[0]
    changed = await client.patch(
        f"/upstreams/{name}", json={"url": "http://127.0.0.1:9/"}, headers=admin_headers
    )
    assert changed.status == 422
    assert "is built in" in (await changed.json())["error"]["message"]
    deleted = await client.delete(f"/upstreams/{name}", headers=admin_headers)
    assert deleted.status == 409
    message = (await deleted.json())["error"]["message"]
    assert f"upstream '{name}' is built in" in message and "PLUGINS_BLOCKED" in message
    # Still registered, its tools still served.
    assert (await client.get(f"/upstreams/{name}", headers=admin_headers)).status == 200
    tools = await (await client.get("/tools", headers=admin_headers)).json()
    assert any(t["name"] == "faulty_count" for t in tools["tools"])
