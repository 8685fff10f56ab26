"""Builds the plugin manager and offers a typed facade over its hooks.

Core code asks this module for implementations by name and never calls `pm.hook.*` itself.
Built-in plugins come through this distribution's own entry points, like any other plugin;
`PLUGINS_BLOCKED` names entry points that must not load. A plugin that pluggy refuses (a
misspelt hook, an argument no spec has) stops start-up with a one-line `SettingsError`.
Plugin authors import `gateway.plugin`, not this module.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pluggy

from gateway import hookspecs
from gateway.contracts import AuthSpec, BackendSpec, CacheSpec
from gateway.interceptors import InterceptorSpec
from gateway.settings import Settings, SettingsError, SettingSpec

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.cli import CommandSpec


class _Named(Protocol):
    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=_Named)


@dataclass
class Registrar(Generic[S]):
    """Collects what plugins register. The first registration of a name wins, and
    built-ins run last (`trylast`), so an installed plugin can replace one."""

    kind: str
    items: dict[str, S] = field(default_factory=dict)

    def add(self, spec: S) -> None:
        self.items.setdefault(spec.name, spec)

    def names(self) -> list[str]:
        return sorted(self.items)

    def select(self, setting: str, name: str) -> S:
        try:
            return self.items[name]
        except KeyError:
            installed = ", ".join(self.names()) or "none"
            raise SettingsError(
                f"{setting}={name!r} is not an installed {self.kind} plugin; installed: {installed}"
            ) from None


def build_plugin_manager(blocked: Iterable[str] = (), trace: bool = False) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    except pluggy.PluginValidationError as exc:
        plugin = getattr(exc.plugin, "__name__", repr(exc.plugin))
        reason = "; ".join(line.strip() for line in str(exc).splitlines())
        raise SettingsError(f"plugin {plugin!r} cannot load: {reason}") from None
    if trace:
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    return pm


def check_hooks(pm: pluggy.PluginManager) -> None:
    """Raise `SettingsError` naming the plugin and the hook when a plugin implements a hook
    that has no spec, which is a misspelt name: pluggy would otherwise never call it."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin)
        unknown = [c.name for c in pm.get_hookcallers(exc.plugin) or () if c.spec is None]
        hook = unknown[0] if unknown else "?"
        known = [n for n in vars(hookspecs) if n.startswith("gateway_")]
        close = difflib.get_close_matches(hook, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; hooks: {', '.join(known)}"
        raise SettingsError(f"plugin {name!r} implements unknown hook {hook!r}{hint}") from None


class Plugins:
    """Typed facade: one method per hook."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        check_hooks(pm)
        self.pm = pm
        self.caches: Registrar[CacheSpec] = Registrar("cache")
        self.auth: Registrar[AuthSpec] = Registrar("auth")
        self.backends: Registrar[BackendSpec] = Registrar("backend")
        self.interceptors: Registrar[InterceptorSpec] = Registrar("interceptor")
        self.declared_settings: Registrar[SettingSpec[Any]] = Registrar("setting")
        self.commands: Registrar[CommandSpec] = Registrar("command")
        pm.hook.gateway_register_caches(register=self.caches)
        pm.hook.gateway_register_auth(register=self.auth)
        pm.hook.gateway_register_backends(register=self.backends)
        pm.hook.gateway_register_interceptors(register=self.interceptors)
        pm.hook.gateway_register_settings(register=self.declared_settings)
        pm.hook.gateway_register_commands(register=self.commands)

    @classmethod
    def load(cls, settings: Settings) -> Plugins:
        return cls(build_plugin_manager(settings.plugins_blocked, settings.plugins_trace))

    def cache_for(self, settings: Settings) -> CacheSpec:
        return self.caches.select("CACHE_TYPE", settings.cache_type)

    def auth_for(self, settings: Settings) -> AuthSpec:
        return self.auth.select("AUTH_TYPE", settings.auth_type)

    def backend_for(self, transport: str) -> BackendSpec | None:
        for spec in self.backends.items.values():
            if spec.transport == transport:
                return spec
        return None

    def transports(self) -> list[str]:
        return sorted({spec.transport for spec in self.backends.items.values() if not spec.local})

    def local_backends(self) -> list[BackendSpec]:
        return [spec for spec in self.backends.items.values() if spec.local]

    def check(self, settings: Settings) -> None:
        """Raise `SettingsError` when the settings select a plugin that is not installed."""
        self.cache_for(settings)
        if settings.auth_required:
            self.auth_for(settings)
        for name in settings.interceptors:
            self.interceptors.select("INTERCEPTORS", name)

    def configure_app(self, app: web.Application, settings: Settings) -> None:
        self.pm.hook.gateway_configure_app(app=app, settings=settings)
