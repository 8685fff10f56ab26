"""A plugin whose hook name is misspelt: the gateway must refuse it at start."""

from __future__ import annotations

from gateway.plugin import CacheSpec, Registrar, hookimpl


@hookimpl
def gateway_register_cache(register: Registrar[CacheSpec]) -> None:
    raise AssertionError("a hook without a spec is never called")
