"""What applying a configuration file would change: the diff between the store and the file.

Upstream entries go through the same validation as `POST /upstreams`, so every transport's
fields are accepted here as there. An object counts as the file's once an apply has created
or adopted it (`gateway.config.managed`); objects added by hand are left alone unless the
file says `prune: all`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway import upstream_oauth
from gateway.admin import Invalid, tool_settings
from gateway.config.document import Desired, Entry
from gateway.curation import CURATED_FIELDS, curation_changes
from gateway.plugins import Plugins
from gateway.servers import server_record
from gateway.store import (
    ServerRecord,
    ToolOverride,
    ToolRecord,
    UpstreamRecord,
    operator_settings,
)
from gateway.upstream_validation import InvalidUpstream
from gateway.upstreams import UpstreamService

UPSTREAM = "upstream"
SERVER = "server"
TOOL = "tool"

_UPSTREAM_FIELDS = ("transport", "url", "prefix", "session")
SECRET_FIELDS = frozenset({"headers", "env"})
"""Fields a diff shows as `<secret>`: headers, and the credentials of transports that have
them in a field of their own."""
TOOL_DEFAULTS: dict[str, Any] = operator_settings(ToolRecord)
"""A tool's settings when no one has changed them."""


@dataclass(frozen=True, slots=True)
class Change:
    """One write: `create`, `update` or `remove` (tools: `set` or `reset`) of one object."""

    action: str
    kind: str
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    """What is sent: the whole entry to create, every registration field to update."""

    def describe(self) -> str:
        sign = {"create": "+", "remove": "-"}.get(self.action, "~")
        shown = ", ".join(
            f"{key}=<secret>" if key in SECRET_FIELDS else f"{key}={value!r}"
            for key, value in sorted(self.fields.items())
            if self.action != "create" or key in {"transport", "url"}
        )
        return f"{sign} {self.kind} {self.name}" + (f": {shown}" if shown else "")


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    managed: frozenset[tuple[str, str]]
    """Every (kind, name) the file declares, which the store records as the file's."""
    prefixes: frozenset[str] = frozenset()
    """The prefixes of upstreams this plan creates or updates: names under them can only be
    confirmed once they are discovered."""

    def describe(self) -> str:
        if not self.changes:
            return "no changes"
        return "\n".join(change.describe() for change in self.changes)


@dataclass(frozen=True, slots=True)
class Current:
    upstreams: list[UpstreamRecord]
    tools: list[ToolRecord]
    servers: list[ServerRecord]
    managed: frozenset[tuple[str, str]]
    overrides: dict[str, ToolOverride] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def secrets_field(plugins: Plugins, transport: str) -> str:
    """The field holding an upstream's credentials: `headers`, or the transport's own (a
    process's `env`), whose values the store keeps encrypted where headers are."""
    spec = plugins.backend_for(transport)
    return (spec.secrets_field if spec is not None else None) or "headers"


def upstream_fields(record: UpstreamRecord, secrets: str = "headers") -> dict[str, Any]:
    """The registration fields of a record, as `POST /upstreams` takes them; `secrets` names
    the field its credentials go in."""
    values = {key: _plain(getattr(record, key)) for key in _UPSTREAM_FIELDS}
    values.update({k: _plain(v) for k, v in record.options.items() if k != secrets})
    values[secrets] = dict(record.headers)
    # An OAuth client secret is kept with the headers but registered inside `oauth`.
    client_secret = values[secrets].pop(upstream_oauth.SECRET_KEY, None)
    if client_secret is not None and isinstance(values.get(upstream_oauth.FIELD), dict):
        values[upstream_oauth.FIELD] = {
            **values[upstream_oauth.FIELD],
            "client_secret": client_secret,
        }
    return values


def make_plan(desired: Desired, current: Current, upstreams: UpstreamService) -> Plan:
    """Check every entry and compute the changes; raise `ConfigError` naming the line."""
    changes: list[Change] = []
    prefixes: set[str] = set()
    changes += _upstream_changes(desired, current, upstreams, prefixes)
    changes += _server_changes(desired, current, upstreams.plugins)
    changes += _tool_changes(desired, current)
    managed = frozenset(
        [(UPSTREAM, e.key) for e in desired.upstreams]
        + [(SERVER, e.key) for e in desired.servers]
        + [(TOOL, e.key) for e in desired.tools]
    )
    return Plan(tuple(changes), managed, frozenset(prefixes))


def _pruned(desired: Desired, current: Current, kind: str, name: str) -> bool:
    return desired.prune == "all" or (kind, name) in current.managed


def _upstream_changes(
    desired: Desired, current: Current, upstreams: UpstreamService, prefixes: set[str]
) -> list[Change]:
    stored = {r.name: r for r in current.upstreams if not r.builtin}
    builtin = {r.name for r in current.upstreams if r.builtin}
    changes: list[Change] = []
    for entry in desired.upstreams:
        if entry.key in builtin:
            raise desired.error(entry, f"upstream '{entry.key}' is built in and cannot be declared")
        try:
            # The same check `POST /upstreams` makes, without contacting the upstream.
            wanted = upstreams.check(entry.fields)
        except InvalidUpstream as exc:
            raise desired.error(entry, f"upstream '{entry.key}': {exc}") from None
        secrets = secrets_field(upstreams.plugins, wanted.transport)
        _check_referenced(desired, entry, secrets)
        have = stored.get(entry.key)
        if have is None:
            changes.append(Change("create", UPSTREAM, entry.key, dict(entry.fields)))
            prefixes.add(wanted.prefix)
            continue
        target = upstream_fields(wanted, secrets)
        now = upstream_fields(have, secrets_field(upstreams.plugins, have.transport))
        differs = {k: v for k, v in target.items() if now.get(k) != v}
        dropped = set(now) - set(target)
        if differs or dropped:
            changes.append(Change("update", UPSTREAM, entry.key, target))
            prefixes.add(wanted.prefix)
    declared = {e.key for e in desired.upstreams}
    for name in sorted(set(stored) - declared):
        if _pruned(desired, current, UPSTREAM, name):
            changes.append(Change("remove", UPSTREAM, name))
    return changes


def _check_referenced(desired: Desired, entry: Entry, secrets: str) -> None:
    """Credentials come from the environment: every value of the secrets field must have
    been written as a `${VAR}` reference."""
    oauth = entry.fields.get(upstream_oauth.FIELD)
    if isinstance(oauth, dict) and "client_secret" in oauth:
        if (*entry.path, upstream_oauth.FIELD, "client_secret") not in desired.referenced:
            raise desired.error(
                entry,
                f"upstream '{entry.key}': oauth.client_secret is written in clear; it is a "
                "secret, so write it as a ${ENV_VAR} reference",
            )
    values = entry.fields.get(secrets) or {}
    if not isinstance(values, dict):
        return  # the upstream validation has refused it already
    for name in values:
        if (*entry.path, secrets, name) not in desired.referenced:
            raise desired.error(
                entry,
                f"upstream '{entry.key}': the value of {secrets} '{name}' is written in clear; "
                "it is a secret, so write it as a ${ENV_VAR} reference",
            )


def declared_server(values: Mapping[str, Any], plugins: Plugins) -> ServerRecord:
    """The server an entry declares, checked as `POST /servers` checks a body (members
    apart: `servers.check_members`); raise `Invalid`."""
    return server_record(dict(values), None, plugins)


def _server_changes(desired: Desired, current: Current, plugins: Plugins) -> list[Change]:
    stored = {r.id: r for r in current.servers}
    changes: list[Change] = []
    for entry in desired.servers:
        try:
            wanted = declared_server(entry.fields, plugins)
        except Invalid as exc:
            raise desired.error(entry, f"server '{entry.key}': {exc}") from None
        have = stored.get(entry.key)
        if have is None:
            changes.append(Change("create", SERVER, entry.key, dict(entry.fields)))
        elif not _same(wanted, have):
            changes.append(Change("update", SERVER, entry.key, dict(entry.fields)))
    declared = {e.key for e in desired.servers}
    for name in sorted(set(stored) - declared):
        if _pruned(desired, current, SERVER, name):
            changes.append(Change("remove", SERVER, name))
    return changes


def _same(a: ServerRecord, b: ServerRecord) -> bool:
    return replace(a, created_at=0.0, updated_at=0.0) == replace(b, created_at=0.0, updated_at=0.0)


def tool_state(record: ToolRecord | None, override: ToolOverride | None) -> dict[str, Any]:
    """A tool's settings and curation as a configuration file writes them."""
    state = {k: getattr(record, k) if record else v for k, v in TOOL_DEFAULTS.items()}
    for key in CURATED_FIELDS:
        value = getattr(override, key) if override is not None else None
        state[key] = list(value or ()) if key == "tags" else value
    return state


TOOL_RESET: dict[str, Any] = tool_state(None, None)
"""A tool no one has set or curated: what a tool the file no longer declares returns to."""


def _wanted_tool(desired: Desired, entry: Entry) -> dict[str, Any]:
    fields_ = dict(entry.fields)
    try:
        # The same checks `PATCH /tools/{name}` makes.
        settings = tool_settings(fields_)
        curation = curation_changes(fields_)
    except (Invalid, ValueError) as exc:
        raise desired.error(entry, f"tool '{entry.key}': {exc}") from None
    curation = {k: list(v) if k == "tags" and v is not None else v for k, v in curation.items()}
    if curation.get("tags", []) is None:
        curation["tags"] = []
    return {**TOOL_RESET, **settings, **curation}


def _tool_changes(desired: Desired, current: Current) -> list[Change]:
    stored = {r.name: r for r in current.tools}
    changes: list[Change] = []
    for entry in desired.tools:
        wanted = _wanted_tool(desired, entry)
        now = tool_state(stored.get(entry.key), current.overrides.get(entry.key))
        differs = {k: v for k, v in wanted.items() if now[k] != v}
        if differs or entry.key not in stored:
            changes.append(Change("set", TOOL, entry.key, differs))
    declared = {e.key for e in desired.tools}
    for name in sorted(set(stored) | set(current.overrides)):
        if name in declared or not _pruned(desired, current, TOOL, name):
            continue
        now = tool_state(stored.get(name), current.overrides.get(name))
        differs = {k: v for k, v in TOOL_RESET.items() if now[k] != v}
        if differs and name in stored:
            changes.append(Change("reset", TOOL, name, differs))
    return changes
