"""An upstream's catalogue: its listed tools, resources, resource templates and prompts,
mapped to the `gateway.contracts` definitions, page by page. `Catalogue` gives a backend
the four `list_*` methods of the `FullBackend` contract on top of its own `_collect`.

One malformed entry should not hide the rest of an upstream's catalogue: each mapping
returns None for an entry it cannot use, and the entry is skipped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.contracts import (
    JSON,
    BackendError,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
    UpstreamError,
)
from gateway.jsonrpc import METHOD_NOT_FOUND

T = TypeVar("T")

Fetch = Callable[[JSON | None], Awaitable[JSON]]
"""Sends one list request with the given params and returns its result."""


async def collect(
    upstream: str, method: str, key: str, convert: Callable[[Any], T | None], fetch: Fetch
) -> list[T]:
    """Every entry of a listing, following `nextCursor` to the end. An upstream that does
    not know the method has none; one that repeats a cursor would loop, so it fails."""
    items: list[T] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        try:
            result = await fetch({"cursor": cursor} if cursor is not None else None)
        except UpstreamError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return []
            raise
        listed = result.get(key)
        for item in listed if isinstance(listed, list) else []:
            converted = convert(item)
            if converted is not None:
                items.append(converted)
        next_cursor = result.get("nextCursor")
        if not next_cursor:
            return items
        if not isinstance(next_cursor, str) or next_cursor in seen:
            raise BackendError(f"upstream {upstream!r} sent a bad or repeated {method} cursor")
        seen.add(next_cursor)
        cursor = next_cursor


class Catalogue(ABC):
    """The `list_*` methods of a backend, each a `_collect` of one listing."""

    @abstractmethod
    async def _collect(
        self, method: str, key: str, capability: str | None, convert: Callable[[Any], T | None]
    ) -> list[T]:
        """Every entry of the listing `method` returns under `key`, mapped by `convert`;
        none when the upstream lacks `capability` (None: asked regardless)."""

    async def list_tools(self) -> list[ToolDef]:
        # Asked even without the capability: some servers with tools do not declare it.
        return await self._collect("tools/list", "tools", None, tool_def)

    async def list_resources(self) -> list[ResourceDef]:
        return await self._collect("resources/list", "resources", "resources", resource_def)

    async def list_resource_templates(self) -> list[ResourceTemplateDef]:
        return await self._collect(
            "resources/templates/list", "resourceTemplates", "resources", resource_template_def
        )

    async def list_prompts(self) -> list[PromptDef]:
        return await self._collect("prompts/list", "prompts", "prompts", prompt_def)


def _dict_or_none(value: Any) -> JSON | None:
    return value if isinstance(value, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _named(item: Any, key: str) -> bool:
    return isinstance(item, dict) and isinstance(item.get(key), str) and bool(item[key])


def tool_def(item: Any) -> ToolDef | None:
    if not _named(item, "name"):
        return None
    return ToolDef(
        name=item["name"],
        input_schema=_dict_or_none(item.get("inputSchema")) or {"type": "object"},
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        output_schema=_dict_or_none(item.get("outputSchema")),
        annotations=_dict_or_none(item.get("annotations")),
    )


def resource_def(item: Any) -> ResourceDef | None:
    if not _named(item, "uri"):
        return None
    size = item.get("size")
    return ResourceDef(
        uri=item["uri"],
        name=_str_or_none(item.get("name")) or item["uri"],
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        mime_type=_str_or_none(item.get("mimeType")),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        annotations=_dict_or_none(item.get("annotations")),
    )


def resource_template_def(item: Any) -> ResourceTemplateDef | None:
    if not _named(item, "uriTemplate"):
        return None
    template = item["uriTemplate"]
    return ResourceTemplateDef(
        uri_template=template,
        name=_str_or_none(item.get("name")) or template,
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        mime_type=_str_or_none(item.get("mimeType")),
        annotations=_dict_or_none(item.get("annotations")),
    )


def prompt_def(item: Any) -> PromptDef | None:
    if not _named(item, "name"):
        return None
    arguments = item.get("arguments")
    return PromptDef(
        name=item["name"],
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        arguments=tuple(
            argument
            for argument in (arguments if isinstance(arguments, list) else [])
            if isinstance(argument, dict) and isinstance(argument.get("name"), str)
        ),
    )
