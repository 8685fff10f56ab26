"""Registering upstreams: validate, discover their tools, store them in one transaction,
and tell every worker. Also keeps the in-process (local) backends registered."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from gateway.contracts import (
    Backend,
    BackendError,
    FullBackend,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
    UpstreamConfig,
    UpstreamError,
)
from gateway.mcpclient.http import HttpStatusError
from gateway.naming import PREFIX, UPSTREAM_NAME, gateway_name, invalid_tool_names
from gateway.netguard import AddressPolicy, AddressRefused
from gateway.plugins import Plugins
from gateway.registry import Registry, backend_config
from gateway.settings import Settings
from gateway.store import (
    PER_CLIENT_SESSION,
    SESSION_MODES,
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
from gateway.upstream_sessions import adoptable

log = structlog.get_logger(__name__)


class InvalidUpstream(ValueError):
    """The request to register or change an upstream is not acceptable (422)."""


class DiscoveryFailed(Exception):
    """The upstream could not be reached or listed (502)."""


_FIELDS = {"name", "url", "transport", "headers", "prefix", "session"}
_PATCHABLE = {"url", "transport", "headers", "prefix", "session"}


def _string(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise InvalidUpstream(f"'{key}' must be a string")
    return value


def _session(payload: Mapping[str, Any], default: str) -> str:
    value = payload.get("session", default)
    if value not in SESSION_MODES:
        raise InvalidUpstream(f"'session' must be one of: {', '.join(SESSION_MODES)}")
    return str(value)


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidUpstream("'headers' must be an object of string values")
    for name, value in headers.items():
        _check_header(name, value)
    return headers


# RFC 9110 section 5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Hop-by-hop fields (RFC 9110 section 7.6.1) describe one connection, and Host and
# Content-Length describe the request the client builds: an override would split or
# misroute the request.
_REFUSED = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _check_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise InvalidUpstream(f"header {name!r}: a field name must be an RFC 9110 token")
    if any(c in value for c in "\r\n\0"):
        raise InvalidUpstream(f"header {name!r}: the value must not contain CR, LF or NUL")
    lowered = name.lower()
    if lowered in _REFUSED or lowered.startswith("proxy-"):
        raise InvalidUpstream(
            f"header {name!r} is set by the gateway's client for each connection and "
            "cannot be given for an upstream"
        )


class UpstreamService:
    def __init__(
        self, settings: Settings, plugins: Plugins, store: Store, registry: Registry
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.store = store
        self.registry = registry
        self.guard = AddressPolicy.of(settings)

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
            session=_session(payload, base.session),
            updated_at=now,
        )
        record = _credentials_out_of_url(record)
        spec = self.plugins.backend_for(record.transport)
        if spec is None or spec.local:
            raise InvalidUpstream(
                f"'transport' {record.transport!r} is not served by an installed backend; "
                f"use one of: {', '.join(self.plugins.transports())}"
            )
        if record.session == PER_CLIENT_SESSION and not adoptable(
            spec.factory(backend_config(record), self.settings)
        ):
            raise InvalidUpstream(
                f"'session': 'per-client' needs a transport whose sessions every worker can "
                f"resume by id, such as streamable-http; {record.transport!r} ties a session "
                "to one connection held by one worker, so use 'shared' with it"
            )
        if not record.url.startswith(("http://", "https://")):
            raise InvalidUpstream("'url' must be an http:// or https:// URL")
        if not PREFIX.fullmatch(record.prefix):
            raise InvalidUpstream("'prefix' must be up to 64 characters of letters, digits, _ - .")
        return record

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

    async def _discover(self, upstream: UpstreamRecord) -> tuple[list[ToolRecord], Features]:
        spec = self.plugins.backend_for(upstream.transport)
        assert spec is not None
        config = UpstreamConfig(
            name=upstream.name,
            transport=upstream.transport,
            url=upstream.url,
            headers=dict(upstream.headers),
            prefix=upstream.prefix,
        )
        try:
            await self.guard.check_url(upstream.url)
        except AddressRefused as exc:
            raise InvalidUpstream(f"'url' {exc}") from None
        backend = spec.factory(config, self.settings)
        try:
            await backend.start()
            return await self._list_all(upstream, backend)
        except BackendError as exc:
            raise DiscoveryFailed(_without_body(upstream.name, exc)) from None
        finally:
            await backend.close()

    # --- operations --------------------------------------------------------------------

    async def create(self, payload: Mapping[str, Any]) -> UpstreamRecord:
        record = self._record(payload, None)
        if await self.store.get_upstream(record.name) is not None:
            raise Conflict(f"upstream '{record.name}' already exists")
        tools, features = await self._discover(record)
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
        record = self._record(payload, current)
        tools, features = await self._discover(record)
        await self.store.update_upstream(record, tools, features)
        log.info("upstream updated", upstream=name, tools=len(tools))
        await self.registry.changed()
        return record

    async def refresh(self, name: str) -> UpstreamRecord:
        current = await self._existing(name)
        if current.builtin:
            return await self._sync_local(current.transport)
        tools, features = await self._discover(current)
        if await self._unchanged(name, tools, features):
            return current
        await self.store.update_upstream(replace(current, updated_at=time.time()), tools, features)
        log.info("upstream refreshed", upstream=name, tools=len(tools))
        await self.registry.changed()
        return current

    async def delete(self, name: str) -> None:
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


def _credentials_out_of_url(record: UpstreamRecord) -> UpstreamRecord:
    """`user:password@` in a URL becomes the `Authorization: Basic` header an HTTP client
    would send for it, so it is encrypted at rest and never shown, like any header."""
    parts = urlsplit(record.url)
    if parts.username is None and parts.password is None:
        return record
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    basic = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    headers = {k: v for k, v in record.headers.items() if k.lower() != "authorization"}
    return replace(
        record,
        url=urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
        headers={**headers, "Authorization": f"Basic {basic}"},
    )


def _without_body(name: str, exc: BackendError) -> str:
    """What failed, for the admin, without what the upstream said: a URL may reach a
    service that is not MCP, and its answers are no business of whoever registers it."""
    if isinstance(exc, UpstreamError):
        return f"upstream {name!r} answered with JSON-RPC error {exc.code}"
    if isinstance(exc, HttpStatusError):
        return exc.summary
    return str(exc)


def _discovered(records: Iterable[Offered], upstream: str) -> list[Offered]:
    """Records of `upstream` as discovery makes them: operator settings reset, sorted."""
    return sorted((as_discovered(r) for r in records if r.upstream == upstream), key=repr)
