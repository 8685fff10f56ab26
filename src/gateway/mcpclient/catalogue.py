"""An upstream's catalogue: its listed tools, resources, resource templates and prompts,
mapped to the `gateway.contracts` definitions, page by page. `Catalogue` gives a backend
the four `list_*` methods of the `FullBackend` contract on top of its own `_collect`.

One malformed entry should not hide the rest of an upstream's catalogue: each mapping
returns None for an entry it cannot use, and the entry is skipped. So is a tool that runs
only as a task, which no call through the gateway can run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.contracts import (
    JSON,
    BackendError,
    Definition,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
    UpstreamError,
    modelled_keys,
)
from gateway.jsonrpc import METHOD_NOT_FOUND

T = TypeVar("T")

MAX_PAGES = 1000
"""The most pages one listing follows: an upstream whose cursors never repeat and never end
would otherwise be listed for ever, holding more with each page."""

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
        if len(seen) + 1 >= MAX_PAGES:
            raise BackendError(
                f"upstream {upstream!r} sent more than {MAX_PAGES} pages of {method}"
            )
        seen.add(next_cursor)
        cursor = next_cursor


class Catalogue(ABC):
    """The `list_*` methods of a backend, each a `_collect` of one listing."""

    name: str
    capabilities: JSON
    """What the upstream declared when it was connected."""

    @abstractmethod
    async def connect(self) -> None:
        """Learn the upstream's capabilities, if not known yet."""

    @abstractmethod
    async def _list_page(self, method: str, params: JSON | None) -> JSON:
        """The result of one request of the listing `method` with `params`."""

    async def _collect(
        self, method: str, key: str, capability: str | None, convert: Callable[[Any], T | None]
    ) -> list[T]:
        """Every entry of the listing `method` returns under `key`, mapped by `convert`;
        none when the upstream lacks `capability` (None: asked regardless)."""
        if capability is not None:
            await self.connect()
            if capability not in self.capabilities:
                return []

        async def fetch(params: JSON | None) -> JSON:
            return await self._list_page(method, params)

        return await collect(self.name, method, key, convert, fetch)

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


def _icons(value: Any) -> tuple[JSON, ...]:
    """The `Icon` objects of a listed `icons`: those with a string `src`, each as it is."""
    if not isinstance(value, list):
        return ()
    return tuple(i for i in value if isinstance(i, dict) and isinstance(i.get("src"), str))


SIZE_MAX = 2**63 - 1
"""The largest `size` a store column (a signed 64-bit integer) holds."""


def _size(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= SIZE_MAX else None


def _extra(item: JSON, kind: type[Definition]) -> JSON | None:
    """The entry's top-level fields the gateway does not model, each as it is; None for
    none. A modelled field it cannot use (a `title` that is no string) is not among them."""
    modelled = modelled_keys(kind)
    extra = {key: value for key, value in item.items() if key not in modelled}
    return extra or None


def _named(item: Any, key: str) -> bool:
    return isinstance(item, dict) and isinstance(item.get(key), str) and bool(item[key])


def needs_a_task(item: JSON) -> bool:
    """Whether the tool runs only as a task (`execution.taskSupport: "required"`). The
    gateway declares no `tasks` capability and calls every tool plainly, which such a tool
    refuses; its other tools lose `execution`, whose absence means `forbidden`."""
    execution = item.get("execution")
    return isinstance(execution, dict) and execution.get("taskSupport") == "required"


def tool_def(item: Any) -> ToolDef | None:
    """The tool the gateway can offer; None for a malformed entry or one that `needs_a_task`."""
    if not _named(item, "name") or needs_a_task(item):
        return None
    return ToolDef(
        name=item["name"],
        input_schema=_dict_or_none(item.get("inputSchema")) or {"type": "object"},
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        output_schema=_dict_or_none(item.get("outputSchema")),
        annotations=_dict_or_none(item.get("annotations")),
        icons=_icons(item.get("icons")),
        meta=_dict_or_none(item.get("_meta")),
        extra=_extra(item, ToolDef),
    )


def resource_def(item: Any) -> ResourceDef | None:
    if not _named(item, "uri"):
        return None
    return ResourceDef(
        uri=item["uri"],
        name=_str_or_none(item.get("name")) or item["uri"],
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        mime_type=_str_or_none(item.get("mimeType")),
        size=_size(item.get("size")),
        annotations=_dict_or_none(item.get("annotations")),
        icons=_icons(item.get("icons")),
        meta=_dict_or_none(item.get("_meta")),
        extra=_extra(item, ResourceDef),
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
        icons=_icons(item.get("icons")),
        meta=_dict_or_none(item.get("_meta")),
        extra=_extra(item, ResourceTemplateDef),
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
        icons=_icons(item.get("icons")),
        meta=_dict_or_none(item.get("_meta")),
        extra=_extra(item, PromptDef),
    )
