"""An immutable snapshot of everything the gateway serves, and its views.

A `View` is what one endpoint sees: the whole gateway (`/rpc`, `/mcp`, `/sse`) or one
virtual server (`/servers/{id}/...`). Listings are built once per snapshot, sorted, so
cursor pagination is stable across workers that hold the same catalogue version.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import structlog

from gateway.contracts import EXTRA, Definition, mcp_key, modelled_keys
from gateway.schemas import Check, lazy_schema
from gateway.store import (
    CatalogueData,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
    ToolOverride,
    ToolRecord,
    UpstreamRecord,
)
from gateway.toolsearch import META_TOOLS, Entry, ToolIndex

log = structlog.get_logger(__name__)

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tool:
    record: ToolRecord
    check: Check
    listing: JSON
    """The MCP `Tool` object shown by `tools/list`: the curated view."""
    tags: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The name agents see: the curated alias, else the gateway name."""
        return str(self.listing["name"])


@dataclass(frozen=True, slots=True)
class Template:
    record: ResourceTemplateRecord
    pattern: re.Pattern[str]

    @property
    def uri_template(self) -> str:
        return self.record.definition.uri_template


def mcp_object(definition: Definition, **gateway: Any) -> JSON:
    """The MCP object of a backend's definition, with the fields the gateway sets itself
    (a tool's or a prompt's `name`) replaced; empty fields are left out. The upstream's
    extra fields come first, without any key the gateway models, so that nothing in them
    stands for a field of the gateway's."""
    modelled = modelled_keys(type(definition))
    extra = definition.extra or {}
    listing: JSON = {key: value for key, value in extra.items() if key not in modelled}
    for spec in fields(definition):
        if spec.name == EXTRA:
            continue
        value = gateway.get(spec.name, getattr(definition, spec.name))
        if value is None or value == "" or value == ():
            continue
        listing[mcp_key(spec.name)] = list(value) if isinstance(value, tuple) else value
    return listing


def tool_listing(record: ToolRecord, override: ToolOverride | None = None) -> JSON:
    """What agents see of a tool: the upstream's definition under the gateway name, with the
    operator's curation laid over it."""
    if override is None:
        return mcp_object(record.definition, name=record.name)
    curated: JSON = {"name": override.alias or record.name}
    if override.title is not None:
        curated["title"] = override.title
    if override.description is not None:
        curated["description"] = override.description
    if override.annotations is not None:
        curated["annotations"] = {**(record.definition.annotations or {}), **override.annotations}
    return mcp_object(record.definition, **curated)


def resource_listing(record: ResourceRecord) -> JSON:
    return mcp_object(record.definition)


def template_listing(record: ResourceTemplateRecord) -> JSON:
    return mcp_object(record.definition)


def prompt_listing(record: PromptRecord) -> JSON:
    return mcp_object(record.definition, name=record.name)


_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def template_pattern(uri_template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can expand to.

    Simple expansion `{x}` matches one path segment; reserved expansion `{+x}` and the other
    operators match anything, which is enough to route a read to the template's owner.
    """
    parts: list[str] = []
    position = 0
    for match in _EXPRESSION.finditer(uri_template):
        parts.append(re.escape(uri_template[position : match.start()]))
        parts.append("[^/?#]+" if match.group(1) == "" else ".*")
        position = match.end()
    parts.append(re.escape(uri_template[position:]))
    return re.compile("".join(parts))


@dataclass(frozen=True, slots=True)
class View:
    server: ServerRecord | None
    tools: dict[str, Tool]
    """Every tool this view contains, enabled or not (to tell 'disabled' from 'unknown')."""
    tool_list: list[JSON]
    resources: dict[str, ResourceRecord]
    resource_list: list[JSON]
    templates: list[Template]
    template_list: list[JSON]
    prompts: dict[str, PromptRecord]
    prompt_list: list[JSON]
    search: ToolIndex | None = None
    """Set in search mode, where `tool_list` shows only the search tools."""

    def resource_owner(self, uri: str) -> str | None:
        """The upstream that serves `uri`: an exact resource first, then a template."""
        record = self.resources.get(uri)
        if record is not None and record.enabled:
            return record.upstream
        for template in self.templates:
            if template.record.enabled and template.pattern.fullmatch(uri):
                return template.record.upstream
        return None


def _view(
    server: ServerRecord | None,
    tools: Iterable[Tool],
    resources: Iterable[ResourceRecord],
    templates: Iterable[Template],
    prompts: Iterable[PromptRecord],
) -> View:
    keep: Callable[[str, tuple[str, ...]], bool] = (
        (lambda key, bundle: True) if server is None else (lambda key, bundle: key in bundle)
    )
    bundle_resources = server.resources if server else ()
    bundle_prompts = server.prompts if server else ()
    members = sorted((t for t in tools if _member(server, t)), key=lambda t: t.shown)
    # Callable by alias and by gateway name; the store keeps the two from colliding.
    tool_map = {t.record.name: t for t in members} | {t.shown: t for t in members}
    listed = [t for t in members if t.record.enabled]
    search = server is not None and server.tool_mode == "search"
    resource_map = {
        r.definition.uri: r for r in resources if keep(r.definition.uri, bundle_resources)
    }
    template_items = [t for t in templates if keep(t.uri_template, bundle_resources)]
    prompt_map = {p.name: p for p in prompts if keep(p.name, bundle_prompts)}
    return View(
        server=server,
        tools=tool_map,
        tool_list=META_TOOLS if search else [t.listing for t in listed],
        resources=resource_map,
        resource_list=[
            resource_listing(resource_map[u])
            for u in sorted(resource_map)
            if resource_map[u].enabled
        ],
        templates=template_items,
        template_list=[
            template_listing(t.record)
            for t in sorted(template_items, key=lambda t: t.uri_template)
            if t.record.enabled
        ],
        prompts=prompt_map,
        prompt_list=[
            prompt_listing(prompt_map[n]) for n in sorted(prompt_map) if prompt_map[n].enabled
        ],
        search=ToolIndex([_entry(t) for t in listed]) if search else None,
    )


def _member(server: ServerRecord | None, tool: Tool) -> bool:
    """Whether a virtual server has the tool: named (by gateway name or alias) or tagged."""
    if server is None:
        return True
    return (
        tool.record.name in server.tools
        or tool.shown in server.tools
        or not set(tool.tags).isdisjoint(server.tags)
    )


def _entry(tool: Tool) -> Entry:
    listing = tool.listing
    return Entry(
        name=tool.shown,
        title=str(listing.get("title") or (listing.get("annotations") or {}).get("title") or ""),
        description=str(listing.get("description") or ""),
        tags=tool.tags,
    )


def _curations(data: CatalogueData) -> dict[str, ToolOverride]:
    """Each tool's curation; an alias a tool registered later now has as its name is
    dropped (the tool's own name wins), with a warning."""
    names = {t.name for t in data.tools}
    curations: dict[str, ToolOverride] = {}
    for override in data.overrides:
        if (
            override.alias is not None
            and override.alias != override.name
            and override.alias in names
        ):
            log.warning(
                "tool alias ignored: another tool has that name",
                tool=override.name,
                alias=override.alias,
            )
            override = dataclasses.replace(override, alias=None)
        curations[override.name] = override
    return curations


def changed_kinds(before: View | None, after: View | None) -> list[str]:
    """Which of tools, resources and prompts a client of the view would see differently."""
    if before is None or after is None:
        return [] if before is after else ["tools", "resources", "prompts"]
    kinds = []
    if before.tool_list != after.tool_list:
        kinds.append("tools")
    if (before.resource_list, before.template_list) != (after.resource_list, after.template_list):
        kinds.append("resources")
    if before.prompt_list != after.prompt_list:
        kinds.append("prompts")
    return kinds


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: int
    upstreams: dict[str, UpstreamRecord]
    tools: dict[str, Tool]
    everything: View
    servers: dict[str, View] = field(default_factory=dict)

    @property
    def listed(self) -> list[JSON]:
        return self.everything.tool_list

    def view(self, server: str | None) -> View | None:
        return self.everything if server is None else self.servers.get(server)

    def search_indexes(self) -> list[ToolIndex]:
        """The tool search index of each search-mode virtual server."""
        return [v.search for v in self.servers.values() if v.search is not None]

    @classmethod
    def empty(cls) -> Catalogue:
        return cls.build(CatalogueData(version=-1, upstreams=[], tools=[]), {})

    @classmethod
    def build(cls, data: CatalogueData, checks: dict[tuple[str, bytes], Check]) -> Catalogue:
        """Build a snapshot; `checks` carries compiled schemas over from the last one and is
        replaced in place by the ones this snapshot uses."""
        fresh: dict[tuple[str, bytes], Check] = {}
        tools: dict[str, Tool] = {}
        curations = _curations(data)
        for record in data.tools:
            schema = record.definition.input_schema
            key = (record.name, orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
            check = checks.get(key) or lazy_schema(record.name, schema)
            fresh[key] = check
            override = curations.get(record.name)
            tools[record.name] = Tool(
                record=record,
                check=check,
                listing=tool_listing(record, override),
                tags=override.tags if override else (),
            )
        checks.clear()
        checks.update(fresh)
        templates = [
            Template(t, template_pattern(t.definition.uri_template)) for t in data.templates
        ]
        parts = (tools.values(), data.resources, templates, data.prompts)
        return cls(
            version=data.version,
            upstreams={u.name: u for u in data.upstreams},
            tools=tools,
            everything=_view(None, *parts),
            servers={s.id: _view(s, *parts) for s in data.servers},
        )
