"""Which record type each catalogue table holds, keyed by which column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store import (
    Features,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
    ToolOverride,
    ToolRecord,
    UpstreamRecord,
)
from gateway.store.owned import Kind
from gateway.store.rows import Rows

UPSTREAMS = Rows(UpstreamRecord, "upstreams", key="name")
SERVERS = Rows(ServerRecord, "servers", key="id")
OVERRIDES = Rows(ToolOverride, "tool_overrides", key="name")

TOOLS = Kind(
    noun="tool",
    key_label="tool name",
    rows=Rows(ToolRecord, "tools", key="name"),
    original="original_name",
)
RESOURCES = Kind(
    noun="resource",
    key_label="resource URI",
    rows=Rows(ResourceRecord, "resources", key="uri"),
)
TEMPLATES = Kind(
    noun="resource template",
    key_label="resource template",
    rows=Rows(ResourceTemplateRecord, "resource_templates", key="uri_template"),
)
PROMPTS = Kind(
    noun="prompt",
    key_label="prompt name",
    rows=Rows(PromptRecord, "prompts", key="name"),
    original="original_name",
)


def offered(
    tools: Sequence[ToolRecord] | None, features: Features | None
) -> list[tuple[Kind[Any], Sequence[Any]]]:
    """Each record list a write brings, with its kind; None leaves that part alone."""
    parts: list[tuple[Kind[Any], Sequence[Any]]] = []
    if tools is not None:
        parts.append((TOOLS, tools))
    if features is not None:
        parts += [
            (RESOURCES, features.resources),
            (TEMPLATES, features.templates),
            (PROMPTS, features.prompts),
        ]
    return parts
