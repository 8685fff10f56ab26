"""The store's current state as a configuration file: what `config export` writes.

Header values (and a transport's own credentials, such as a process's `env`) never appear:
each becomes a `${VAR}` reference named after its upstream and header, to be set in the
environment of whoever applies the file. Built-in upstreams are left out (they register
themselves), and so are tool settings still at their defaults.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import yaml

from gateway import upstream_oauth
from gateway.config.plan import (
    TOOL_RESET,
    secrets_field,
    tool_state,
    upstream_fields,
)
from gateway.plugins import Plugins
from gateway.store import SHARED_SESSION, ServerRecord, Store, UpstreamRecord


def secret_variable(upstream: str, header: str) -> str:
    """The environment variable an exported header value refers to."""
    return re.sub(r"[^A-Z0-9]+", "_", f"UPSTREAM_{upstream}_{header}".upper()).strip("_")


def upstream_entry(record: UpstreamRecord, secrets: str = "headers") -> dict[str, Any]:
    """The entry that declares `record`; its credentials (in the field `secrets`) become
    references."""
    values = upstream_fields(record, secrets)
    entry: dict[str, Any] = {"name": record.name}
    for key, value in values.items():
        if key == secrets:
            if value:
                entry[key] = {h: f"${{{secret_variable(record.name, h)}}}" for h in value}
        elif key == upstream_oauth.FIELD and "client_secret" in value:
            reference = f"${{{secret_variable(record.name, 'oauth_client_secret')}}}"
            entry[key] = {**value, "client_secret": reference}
        elif key == "prefix" and value == record.name:
            continue
        elif key == "session" and value == SHARED_SESSION:
            continue
        elif value not in ("", None, {}, []):
            entry[key] = value
    return entry


def server_entry(record: ServerRecord) -> dict[str, Any]:
    """The entry that declares `record`: its fields that are not at their defaults."""
    entry: dict[str, Any] = {"id": record.id, "name": record.name}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name in entry or f.name in {"created_at", "updated_at"} or value == f.default:
            continue
        entry[f.name] = list(value) if isinstance(value, tuple) else value
    return entry


async def export(store: Store, plugins: Plugins) -> str:
    """The YAML of everything in the store a configuration file can declare."""
    upstreams = [
        upstream_entry(r, secrets_field(plugins, r.transport))
        for r in await store.list_upstreams()
        if not r.builtin
    ]
    servers = [server_entry(r) for r in await store.list_servers()]
    tools: dict[str, dict[str, Any]] = {}
    overrides = {o.name: o for o in await store.list_tool_overrides()}
    for tool in sorted(await store.list_tools(), key=lambda t: t.name):
        state = tool_state(tool, overrides.get(tool.name))
        changed = {k: v for k, v in state.items() if TOOL_RESET[k] != v}
        if changed:
            tools[tool.name] = changed
    document: dict[str, Any] = {"version": 1, "upstreams": upstreams, "servers": servers}
    if tools:
        document["tools"] = tools
    header = "# aio-mcp-gateway configuration (config export). Header values are ${VAR}\n"
    header += "# references: set these variables where the file is applied.\n"
    body: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return header + body
