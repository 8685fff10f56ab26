"""The plugin system: entry points, registrar hooks, blocking, and a test and docs per hook."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import hookspecs
from gateway.contracts import CacheSpec
from gateway.hookspecs import hookimpl
from gateway.plugins import Plugins, Registrar, build_plugin_manager
from gateway.settings import Settings, SettingsError
from tests.plugins import faulty

REPO = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("gateway_"))


def test_built_in_plugins_load_through_entry_points() -> None:
    plugins = Plugins.load(Settings())
    assert {"memory", "database"} <= set(plugins.caches.names())
    assert {"jwt", "none"} <= set(plugins.auth.names())
    assert "mcp-http" in plugins.backends.names()
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


def test_hook_gateway_register_backends() -> None:
    pm = build_plugin_manager()
    pm.register(faulty, name="faulty")
    plugins = Plugins(pm)
    assert plugins.backend_for("streamable-http") is not None
    assert [spec.name for spec in plugins.local_backends() if spec.name == "faulty"] == ["faulty"]


async def test_hook_gateway_configure_app(gateway) -> None:  # type: ignore[no-untyped-def]
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
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    readme = (REPO / "README.md").read_text()
    pm = build_plugin_manager()
    argnames = getattr(pm.hook, hook).spec.argnames
    assert re.search(rf"`{hook}\({', '.join(argnames)}\)`", readme), hook
