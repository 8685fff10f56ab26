"""Registering upstreams: validate, discover their tools, store them in one transaction,
and tell every worker. Also keeps the in-process (local) backends registered."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from gateway.contracts import BackendError, ToolDef, UpstreamConfig
from gateway.naming import PREFIX, UPSTREAM_NAME, gateway_name, invalid_tool_names
from gateway.plugins import Plugins
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store import Conflict, NotFound, Store, ToolRecord, UpstreamRecord

log = structlog.get_logger(__name__)


class InvalidUpstream(ValueError):
    """The request to register or change an upstream is not acceptable (422)."""


class DiscoveryFailed(Exception):
    """The upstream could not be reached or listed (502)."""


_FIELDS = {"name", "url", "transport", "headers", "prefix"}
_PATCHABLE = {"url", "transport", "headers", "prefix"}


def _string(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise InvalidUpstream(f"'{key}' must be a string")
    return value


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidUpstream("'headers' must be an object of string values")
    return headers


class UpstreamService:
    def __init__(
        self, settings: Settings, plugins: Plugins, store: Store, registry: Registry
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.store = store
        self.registry = registry

    # --- validation --------------------------------------------------------------------

    def _record(self, payload: Mapping[str, Any], current: UpstreamRecord | None) -> UpstreamRecord:
        unknown = set(payload) - (_PATCHABLE if current else _FIELDS)
        if unknown:
            raise InvalidUpstream(f"unknown field(s): {', '.join(sorted(unknown))}")
        now = time.time()
        if current is None:
            name = _string(payload, "name")
            if not UPSTREAM_NAME.fullmatch(name):
                raise InvalidUpstream(
                    "'name' must be 1-64 characters of letters, digits, '_' and '-'"
                )
            base = UpstreamRecord(
                name=name, transport="streamable-http", url="", prefix=name, created_at=now
            )
        else:
            if current.builtin:
                raise InvalidUpstream(f"upstream '{current.name}' is built in and cannot change")
            base = current
        record = replace(
            base,
            transport=_string(payload, "transport", base.transport),
            url=_string(payload, "url", base.url),
            prefix=_string(payload, "prefix", base.prefix),
            headers=_headers(payload) if "headers" in payload else base.headers,
            updated_at=now,
        )
        spec = self.plugins.backend_for(record.transport)
        if spec is None or spec.local:
            raise InvalidUpstream(
                f"'transport' {record.transport!r} is not served by an installed backend; "
                f"use one of: {', '.join(self.plugins.transports())}"
            )
        if not record.url.startswith(("http://", "https://")):
            raise InvalidUpstream("'url' must be an http:// or https:// URL")
        if not PREFIX.fullmatch(record.prefix):
            raise InvalidUpstream("'prefix' must be up to 64 characters of letters, digits, _ - .")
        return record

    def _tools(self, upstream: UpstreamRecord, defs: list[ToolDef]) -> list[ToolRecord]:
        sep = self.settings.tool_name_separator
        names = [gateway_name(upstream.prefix, sep, d.name) for d in defs]
        bad = invalid_tool_names(names)
        if bad:
            raise InvalidUpstream(
                f"upstream '{upstream.name}' has tool names MCP does not allow "
                f"(1-128 of A-Z a-z 0-9 _ - .): {', '.join(bad[:10])}"
            )
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InvalidUpstream(f"upstream '{upstream.name}' lists tool '{name}' twice")
            seen.add(name)
        return [
            ToolRecord(
                name=name,
                upstream=upstream.name,
                original_name=d.name,
                input_schema=d.input_schema,
                description=d.description,
                title=d.title,
                output_schema=d.output_schema,
                annotations=d.annotations,
            )
            for name, d in zip(names, defs, strict=True)
        ]

    async def _discover(self, upstream: UpstreamRecord) -> list[ToolRecord]:
        spec = self.plugins.backend_for(upstream.transport)
        assert spec is not None
        config = UpstreamConfig(
            name=upstream.name,
            transport=upstream.transport,
            url=upstream.url,
            headers=dict(upstream.headers),
            prefix=upstream.prefix,
        )
        backend = spec.factory(config, self.settings)
        try:
            await backend.start()
            defs = await backend.list_tools()
        except BackendError as exc:
            raise DiscoveryFailed(str(exc)) from None
        finally:
            await backend.close()
        return self._tools(upstream, defs)

    # --- operations --------------------------------------------------------------------

    async def create(self, payload: Mapping[str, Any]) -> UpstreamRecord:
        record = self._record(payload, None)
        if await self.store.get_upstream(record.name) is not None:
            raise Conflict(f"upstream '{record.name}' already exists")
        tools = await self._discover(record)
        await self.store.create_upstream(record, tools)
        log.info("upstream registered", upstream=record.name, tools=len(tools))
        await self.registry.changed()
        return record

    async def update(self, name: str, payload: Mapping[str, Any]) -> UpstreamRecord:
        current = await self._existing(name)
        record = self._record(payload, current)
        tools = await self._discover(record)
        await self.store.update_upstream(record, tools)
        log.info("upstream updated", upstream=name, tools=len(tools))
        await self.registry.changed()
        return record

    async def refresh(self, name: str) -> UpstreamRecord:
        current = await self._existing(name)
        if current.builtin:
            return await self._sync_local(current.transport)
        tools = await self._discover(current)
        if _same_tools(await self.store.list_tools(), name, tools):
            return current
        await self.store.update_upstream(replace(current, updated_at=time.time()), tools)
        log.info("upstream refreshed", upstream=name, tools=len(tools))
        await self.registry.changed()
        return current

    async def delete(self, name: str) -> None:
        if not await self.store.delete_upstream(name):
            raise NotFound(f"upstream '{name}' does not exist")
        log.info("upstream deleted", upstream=name)
        await self.registry.changed()

    async def _existing(self, name: str) -> UpstreamRecord:
        current = await self.store.get_upstream(name)
        if current is None:
            raise NotFound(f"upstream '{name}' does not exist")
        return current

    # --- local (in-process) backends ----------------------------------------------------

    async def sync_local_backends(self) -> None:
        """Register each installed local backend as a built-in upstream with no prefix."""
        for spec in self.plugins.local_backends():
            try:
                await self._sync_local(spec.transport)
            except (Conflict, InvalidUpstream, BackendError) as exc:
                log.error("local backend not registered", backend=spec.name, error=str(exc))
        # Another worker may have registered them first: serve them before the first request.
        await self.registry.reload()

    async def _sync_local(self, transport: str) -> UpstreamRecord:
        spec = self.plugins.backend_for(transport)
        assert spec is not None and spec.local
        now = time.time()
        record = UpstreamRecord(
            name=spec.name,
            transport=spec.transport,
            url="",
            prefix="",
            builtin=True,
            created_at=now,
            updated_at=now,
        )
        backend = spec.factory(
            UpstreamConfig(name=spec.name, transport=spec.transport), self.settings
        )
        await backend.start()
        try:
            tools = self._tools(record, await backend.list_tools())
        finally:
            await backend.close()
        existing = await self.store.get_upstream(spec.name)
        if existing is None:
            try:
                await self.store.create_upstream(record, tools)
            except Conflict:
                existing = await self.store.get_upstream(spec.name)
                if existing is None:
                    raise
        if existing is not None:
            if _same_tools(await self.store.list_tools(), spec.name, tools):
                return existing
            await self.store.update_upstream(replace(existing, updated_at=now), tools)
        await self.registry.changed()
        return record


def _same_tools(stored: list[ToolRecord], upstream: str, tools: list[ToolRecord]) -> bool:
    def key(t: ToolRecord) -> tuple[Any, ...]:
        return (
            t.name,
            t.original_name,
            t.description,
            t.title,
            t.input_schema,
            t.output_schema,
            t.annotations,
        )

    mine = sorted((key(t) for t in stored if t.upstream == upstream), key=lambda k: k[0])
    return mine == sorted((key(t) for t in tools), key=lambda k: k[0])
