"""Builds the plugin manager and offers a typed facade over its hooks.

Core code asks this module for implementations by name and never calls `pm.hook.*` itself.
Built-in plugins come through this distribution's own entry points, like any other plugin;
`PLUGINS_BLOCKED` names entry points that must not load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import pluggy

from gateway import hookspecs
from gateway.contracts import AuthSpec, BackendSpec, CacheSpec
from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from aiohttp import web


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
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    if trace:
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    return pm


class Plugins:
    """Typed facade: one method per hook."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.caches: Registrar[CacheSpec] = Registrar("cache")
        self.auth: Registrar[AuthSpec] = Registrar("auth")
        self.backends: Registrar[BackendSpec] = Registrar("backend")
        pm.hook.gateway_register_caches(register=self.caches)
        pm.hook.gateway_register_auth(register=self.auth)
        pm.hook.gateway_register_backends(register=self.backends)

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

    def configure_app(self, app: web.Application, settings: Settings) -> None:
        self.pm.hook.gateway_configure_app(app=app, settings=settings)
