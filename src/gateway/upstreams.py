"""Registering upstreams: discover their tools, store them in one transaction, and tell
every worker. Also keeps the in-process (local) backends registered. What a registration
may say is checked in `gateway.upstream_validation`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from gateway.contracts import (
    Backend,
    BackendError,
    DiscoveryNotes,
    FullBackend,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
    UpstreamConfig,
    UpstreamError,
)
from gateway.listing_bounds import CONTROL, bounded
from gateway.naming import gateway_name, invalid_tool_names
from gateway.netguard import AddressPolicy, AddressRefused
from gateway.plugins import Plugins
from gateway.registry import Registry, backend_config
from gateway.settings import Settings
from gateway.store import (
    Conflict,
    Features,
    NotFound,
    Offered,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    Store,
    ToolRecord,
    UpstreamRecord,
    as_discovered,
)
from gateway.upstream_validation import InvalidUpstream, upstream_record

log = structlog.get_logger(__name__)


class DiscoveryFailed(Exception):
    """The upstream could not be reached or listed (502)."""


class UpstreamService:
    def __init__(
        self, settings: Settings, plugins: Plugins, store: Store, registry: Registry
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.store = store
        self.registry = registry
        self.guard = AddressPolicy.of(settings)

    # --- discovery ---------------------------------------------------------------------

    def _names(self, upstream: UpstreamRecord, kind: str, originals: list[str]) -> list[str]:
        """The gateway names of an upstream's tools or prompts, which MCP must accept."""
        sep = self.settings.tool_name_separator
        names = [gateway_name(upstream.prefix, sep, original) for original in originals]
        bad = invalid_tool_names(names)
        if bad:
            raise InvalidUpstream(
                f"upstream '{upstream.name}' has {kind} names MCP does not allow "
                f"(1-128 of A-Z a-z 0-9 _ - .): {', '.join(bad[:10])}"
            )
        return names

    def _tools(self, upstream: UpstreamRecord, defs: list[ToolDef]) -> list[ToolRecord]:
        names = self._names(upstream, "tool", [d.name for d in defs])
        defs = bounded(upstream.name, "tools", defs)
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InvalidUpstream(f"upstream '{upstream.name}' lists tool '{name}' twice")
            seen.add(name)
        return [
            ToolRecord(name=name, upstream=upstream.name, definition=d)
            for name, d in zip(names, defs, strict=True)
        ]

    def _features(
        self,
        upstream: UpstreamRecord,
        resources: list[ResourceDef],
        templates: list[ResourceTemplateDef],
        prompts: list[PromptDef],
    ) -> Features:
        prompt_names = self._names(upstream, "prompt", [p.name for p in prompts])
        _check_uris(upstream, "resource URIs", [r.uri for r in resources])
        _check_uris(upstream, "resource templates", [t.uri_template for t in templates])
        resources = bounded(upstream.name, "resources", resources)
        templates = bounded(upstream.name, "resource templates", templates)
        prompts = bounded(upstream.name, "prompts", prompts)
        # Discovery's records wrap the definitions, under their owner; a resource or template
        # listed twice is stored once.
        return Features(
            resources=list({r.uri: ResourceRecord(upstream.name, r) for r in resources}.values()),
            templates=list(
                {
                    t.uri_template: ResourceTemplateRecord(upstream.name, t) for t in templates
                }.values()
            ),
            prompts=[
                PromptRecord(name=name, upstream=upstream.name, definition=p)
                for name, p in zip(prompt_names, prompts, strict=True)
            ],
        )

    async def _list_all(
        self, upstream: UpstreamRecord, backend: Backend
    ) -> tuple[list[ToolRecord], Features]:
        tools = self._tools(upstream, await backend.list_tools())
        if not isinstance(backend, FullBackend):
            return tools, Features()
        features = self._features(
            upstream,
            await backend.list_resources(),
            await backend.list_resource_templates(),
            await backend.list_prompts(),
        )
        return tools, features

    async def _discover(
        self, upstream: UpstreamRecord
    ) -> tuple[UpstreamRecord, list[ToolRecord], Features]:
        """The upstream's tools and features, and the record with discovery's notes."""
        spec = self.plugins.backend_for(upstream.transport)
        assert spec is not None
        config = backend_config(upstream)
        try:
            await self.guard.check_url(upstream.url)
        except AddressRefused as exc:
            raise InvalidUpstream(f"'url' {exc}") from None
        backend = spec.factory(config, self.settings)
        try:
            await backend.start()
            tools, features = await self._list_all(upstream, backend)
            notes = backend.discovery_notes() if isinstance(backend, DiscoveryNotes) else {}
            return replace(upstream, notes=notes), tools, features
        except BackendError as exc:
            raise DiscoveryFailed(_without_body(upstream.name, exc)) from None
        finally:
            await backend.close()

    # --- operations --------------------------------------------------------------------

    def check(self, payload: Mapping[str, Any]) -> UpstreamRecord:
        """The upstream a `POST /upstreams` body would register, checked without contacting
        it (a configuration file's entries); raise `InvalidUpstream`."""
        return upstream_record(payload, None, self.plugins, self.settings)

    async def create(self, payload: Mapping[str, Any]) -> UpstreamRecord:
        record = upstream_record(payload, None, self.plugins, self.settings)
        if await self.store.get_upstream(record.name) is not None:
            raise Conflict(f"upstream '{record.name}' already exists")
        record, tools, features = await self._discover(record)
        await self.store.create_upstream(record, tools, features)
        log.info(
            "upstream registered",
            upstream=record.name,
            tools=len(tools),
            resources=len(features.resources),
            prompts=len(features.prompts),
        )
        await self.registry.changed()
        return record

    async def update(self, name: str, payload: Mapping[str, Any]) -> UpstreamRecord:
        current = await self._existing(name)
        record = upstream_record(payload, current, self.plugins, self.settings)
        record, tools, features = await self._discover(record)
        await self.store.update_upstream(record, tools, features)
        log.info("upstream updated", upstream=name, tools=len(tools))
        await self.registry.changed()
        return record

    async def refresh(self, name: str) -> UpstreamRecord:
        current = await self._existing(name)
        if current.builtin:
            return await self._sync_local(current.transport)
        record, tools, features = await self._discover(current)
        if record.notes == current.notes and await self._unchanged(name, tools, features):
            return current
        record = replace(record, updated_at=time.time())
        await self.store.update_upstream(record, tools, features)
        log.info("upstream refreshed", upstream=name, tools=len(tools))
        await self.registry.changed()
        return record

    async def delete(self, name: str) -> None:
        current = await self.store.get_upstream(name)
        if current is not None and current.builtin:
            # Every worker's start registers it again: a delete would hold until then only.
            raise Conflict(
                f"upstream '{name}' is built in (an installed plugin's tools); disable its "
                "tools with PATCH /tools/{name}, or keep the plugin out with PLUGINS_BLOCKED"
            )
        if not await self.store.delete_upstream(name):
            raise NotFound(f"upstream '{name}' does not exist")
        log.info("upstream deleted", upstream=name)
        await self.registry.changed()

    async def _unchanged(self, name: str, tools: list[ToolRecord], features: Features) -> bool:
        """True when discovery found exactly what the store already holds for `name`."""
        store = self.store
        return (
            _discovered(await store.list_tools(), name) == _discovered(tools, name)
            and _discovered(await store.list_resources(), name)
            == _discovered(features.resources, name)
            and _discovered(await store.list_resource_templates(), name)
            == _discovered(features.templates, name)
            and _discovered(await store.list_prompts(), name) == _discovered(features.prompts, name)
        )

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
            tools, features = await self._list_all(record, backend)
        finally:
            await backend.close()
        existing = await self.store.get_upstream(spec.name)
        if existing is None:
            try:
                await self.store.create_upstream(record, tools, features)
            except Conflict:
                existing = await self.store.get_upstream(spec.name)
                if existing is None:
                    raise
        if existing is not None:
            if await self._unchanged(spec.name, tools, features):
                return existing
            await self.store.update_upstream(replace(existing, updated_at=now), tools, features)
        await self.registry.changed()
        return record


def _without_body(name: str, exc: BackendError) -> str:
    """What failed, for the admin, without what the upstream said: a URL may reach a
    service that is not MCP, and its answers are no business of whoever registers it."""
    if isinstance(exc, UpstreamError):
        return f"upstream {name!r} answered with JSON-RPC error {exc.code}"
    return exc.summary


def _discovered(records: Iterable[Offered], upstream: str) -> list[Offered]:
    """Records of `upstream` as discovery makes them: operator settings reset, sorted."""
    return sorted((as_discovered(r) for r in records if r.upstream == upstream), key=repr)


URI_CHARS_MAX = 8192
"""The longest resource URI or template an upstream may list."""


def _check_uris(upstream: UpstreamRecord, kind: str, uris: list[str]) -> None:
    """Refuse URIs no client could send back: with control characters (which RFC 3986
    leaves out and PostgreSQL cannot store, for NUL), or past `URI_CHARS_MAX`."""
    bad = [u for u in uris if len(u) > URI_CHARS_MAX or CONTROL.search(u)]
    if bad:
        shown = ", ".join(repr(u[:80]) for u in bad[:5])
        raise InvalidUpstream(
            f"upstream '{upstream.name}' lists {kind} with control characters or longer "
            f"than {URI_CHARS_MAX} characters: {shown}"
        )
