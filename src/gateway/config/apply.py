"""Applying a configuration file as desired state, through the same services the admin
API uses, so every worker hears of each change.

Everything the file says is checked before the first write: its YAML, its `${VAR}`
references and every entry's fields. Upstreams are then created or updated (each one
discovered before it is written, so an unreachable upstream stops the apply with the store
untouched for it), then tool settings and virtual servers, then what the file no longer
declares is removed. Names only discovery can confirm (a tool's, a server's members) are
checked after the upstreams are in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog

from gateway.admin import Invalid
from gateway.config.document import ConfigError, Desired, Entry, load
from gateway.config.managed import (
    Lease,
    LeaseBusy,
    managed,
    record_applied,
    set_managed,
    was_applied,
)
from gateway.config.plan import (
    SERVER,
    TOOL,
    TOOL_DEFAULTS,
    UPSTREAM,
    Change,
    Current,
    Plan,
    declared_server,
    make_plan,
)
from gateway.curation import CURATED_FIELDS
from gateway.registry import Registry
from gateway.servers import check_members
from gateway.store import NotFound, Store, StoreError
from gateway.upstream_validation import InvalidUpstream
from gateway.upstreams import DiscoveryFailed, UpstreamService

log = structlog.get_logger(__name__)

_FAILURES = (InvalidUpstream, DiscoveryFailed, StoreError, ValueError)


class Applier:
    def __init__(self, store: Store, upstreams: UpstreamService, registry: Registry) -> None:
        self.store = store
        self.upstreams = upstreams
        self.registry = registry

    async def current(self) -> Current:
        return Current(
            upstreams=await self.store.list_upstreams(),
            tools=await self.store.list_tools(),
            servers=await self.store.list_servers(),
            managed=await managed(self.store),
            overrides={o.name: o for o in await self.store.list_tool_overrides()},
        )

    async def plan(self, desired: Desired) -> Plan:
        return make_plan(desired, await self.current(), self.upstreams)

    async def apply(self, desired: Desired, dry_run: bool = False) -> Plan:
        """Bring the store to what `desired` declares; raise `ConfigError` naming the line."""
        plan = await self.plan(desired)
        await self.registry.reload()
        self._check_names(desired, plan)
        if dry_run:
            return plan
        entries: dict[tuple[str, str], Entry] = {
            **{(UPSTREAM, e.key): e for e in desired.upstreams},
            **{(SERVER, e.key): e for e in desired.servers},
            **{(TOOL, e.key): e for e in desired.tools},
        }
        order = {"create": 0, "update": 0, "set": 1, "reset": 1, "remove": 2}
        kinds = {UPSTREAM: 0, TOOL: 1, SERVER: 2}
        for change in sorted(
            plan.changes,
            key=lambda c: (
                order[c.action],
                -kinds[c.kind] if c.action == "remove" else kinds[c.kind],
            ),
        ):
            if change.kind == SERVER and change.action != "remove":
                await self.registry.reload()
                server = entries[(SERVER, change.name)]
                try:
                    check_members(
                        declared_server(change.fields, self.upstreams.plugins),
                        self.registry.catalogue,
                    )
                except Invalid as exc:
                    raise desired.error(server, f"server '{server.key}': {exc}") from None
            try:
                await self._write(change)
            except _FAILURES as exc:
                entry = entries.get((change.kind, change.name))
                line = entry.line if entry is not None else None
                raise ConfigError(
                    desired.file, line, f"{change.kind} '{change.name}': {exc}"
                ) from None
        await set_managed(self.store, plan.managed)
        if any(c.kind != UPSTREAM for c in plan.changes):
            await self.registry.changed()
        return plan

    async def _write(self, change: Change) -> None:
        if change.kind == UPSTREAM:
            if change.action == "create":
                await self.upstreams.create(change.fields)
            elif change.action == "update":
                await self.upstreams.update(change.name, change.fields)
            else:
                await self.upstreams.delete(change.name)
        elif change.kind == TOOL:
            if await self.store.get_tool(change.name) is None:
                raise NotFound("no such tool in the catalogue")
            # No tags is a cleared field, as null is for the others.
            curation = {
                k: None if k == "tags" and not v else v
                for k, v in change.fields.items()
                if k in CURATED_FIELDS
            }
            if curation:  # first: an alias may conflict, and then nothing is changed
                await self.store.curate_tool(change.name, curation)
            settings = {k: v for k, v in change.fields.items() if k in TOOL_DEFAULTS}
            if settings:
                await self.store.update_tool(change.name, settings)
        elif change.action == "create":
            await self.store.create_server(declared_server(change.fields, self.upstreams.plugins))
        elif change.action == "update":
            current = await self.store.get_server(change.name)
            created = current.created_at if current is not None else 0.0
            record = declared_server(change.fields, self.upstreams.plugins)
            await self.store.update_server(replace(record, created_at=created))
        else:
            await self.store.delete_server(change.name)

    def _check_names(self, desired: Desired, plan: Plan) -> None:
        """Before any write: every tool and prompt the file names is in the catalogue (and
        its upstream stays), or may come from an upstream this plan discovers (it is under
        that upstream's prefix). Discovery confirms the rest after the upstreams."""
        sep = self.upstreams.settings.tool_name_separator
        changing = {c.name for c in plan.changes if c.kind == UPSTREAM}
        everything = self.registry.catalogue.everything
        known = {n for n, t in everything.tools.items() if t.record.upstream not in changing}
        known |= {n for n, p in everything.prompts.items() if p.upstream not in changing}

        def missing(names: object) -> list[str]:
            if not isinstance(names, list):
                return []
            return [
                n
                for n in names
                if n not in known
                and not any(p == "" or str(n).startswith(p + sep) for p in plan.prefixes)
            ]

        for entry in desired.tools:
            if missing([entry.key]):
                raise desired.error(entry, f"tool '{entry.key}': no upstream offers it")
        for entry in desired.servers:
            absent = missing(entry.fields.get("tools")) + missing(entry.fields.get("prompts"))
            if absent:
                raise desired.error(
                    entry,
                    f"server '{entry.key}': not in the catalogue: {', '.join(absent[:10])}",
                )


async def apply_at_start(
    path: str,
    environ: Mapping[str, str],
    applier: Applier,
    store: Store,
    wait: float,
    marker: str | None = None,
) -> Plan | None:
    """Apply the file once for all the workers starting together: the first to take the
    lease applies and records `marker` (what names this start: instance, master process and
    the file's bytes); the others, once it is done, find the record and change nothing, so
    a change made through the admin API meanwhile stays. With no marker, each one applies
    in turn and finds nothing left to change. None when the lease stayed taken for `wait`
    seconds (the holder's changes reach this worker as any catalogue change does), or the
    start was already applied."""
    desired = load(path, environ)
    try:
        async with Lease(store).held(wait):
            if marker is not None and await was_applied(store, marker):
                return None
            plan = await applier.apply(desired)
            if marker is not None:
                await record_applied(store, marker)
    except LeaseBusy:
        log.warning(
            "configuration file not applied here: another process holds the lease", file=path
        )
        return None
    if plan.changes:
        log.info("configuration file applied", file=path, changes=plan.describe().splitlines())
    return plan
