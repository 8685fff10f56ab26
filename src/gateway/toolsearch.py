"""Ranking tools for a query: BM25 (the `bm25s` library) over each tool's name, title,
description and tags, with a tokenizer that splits identifiers the way tools are named.

A `ToolIndex` belongs to one view of one catalogue snapshot. Each worker builds it once per
catalogue version, never per request, in a thread (loading numpy and indexing 1,000 tools
takes most of a second on a busy machine; the event loop must not wait for it): the
registry starts the build when it loads a catalogue, and a search awaits it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

JSON = dict[str, Any]

NAME_WEIGHT = 2
"""A word in a tool's name counts as this many words of its description, as do its title's
and tags' words: they are short and say what a tool does; descriptions ramble. Chosen with
`bench/bench_tool_search.py` (2 beat 1 and 3 there)."""
TITLE_WEIGHT = 2
TAG_WEIGHT = 2
QUERY_TOKENS_MAX = 64

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by can for from has have how i in into is it its of on "
    "or that the their this to tool use uses using was what when which will with you your".split()
)


def _stem(word: str) -> str:
    """A light suffix strip, so that 'emails', 'emailing' and 'emailed' meet 'email'.
    `tokenize` keeps the word as written too: 'orders' matches a text saying 'orders'
    better than one saying 'order'."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """The lower-case words of `text`, each followed by its stem where that differs,
    identifiers split at '_', '-', '.', case changes and digits: `listGitHubIssues` and
    `list_github_issues` both give list, git, hub / github, issues, issue."""
    tokens: list[str] = []
    for chunk in _WORD.findall(text):
        parts = [p.lower() for p in _CAMEL.findall(chunk)]
        if len(parts) > 1:
            parts.append(chunk.lower())  # the joined word too: 'GitHub' also as 'github'
        for part in parts:
            if len(part) < 2 or part in _STOPWORDS:
                continue
            tokens.append(part)
            stem = _stem(part)
            if stem != part:
                tokens.append(stem)
    return tokens


@dataclass(frozen=True, slots=True)
class Entry:
    """One searchable tool: the name agents see it by, and what is shown in a hit."""

    name: str
    title: str
    description: str
    tags: tuple[str, ...]


def document(entry: Entry) -> list[str]:
    return (
        tokenize(entry.name) * NAME_WEIGHT
        + tokenize(entry.title) * TITLE_WEIGHT
        + tokenize(" ".join(entry.tags)) * TAG_WEIGHT
        + tokenize(entry.description)
    )


class ToolIndex:
    """The BM25 index of one view's enabled tools."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)
        self._bm25: Any = None
        self._building: asyncio.Future[None] | None = None

    def _build(self) -> None:
        import bm25s  # numpy and all: loaded only by workers that serve a search

        bm25 = bm25s.BM25()
        corpus = [document(e) or ["\x00"] for e in self.entries]
        bm25.index(corpus, show_progress=False)
        self._bm25 = bm25

    async def ready(self) -> None:
        """Build the index once, in a thread; every caller waits for that one build."""
        if self._bm25 is not None or not self.entries:
            return
        if self._building is None:
            self._building = asyncio.ensure_future(asyncio.to_thread(self._build))
        await asyncio.shield(self._building)

    async def warm(self) -> None:
        """Build ahead of the first search; a failure is logged, and a search retries it."""
        try:
            await self.ready()
        except Exception as exc:
            self._building = None
            log.warning("tool search index not built", error=str(exc))

    def search(self, query: str, limit: int) -> list[tuple[Entry, float]]:
        """The best `limit` tools for `query`, best first; only tools sharing a word with it.
        Call `ready()` first on the event loop: here the index is built in place if needed."""
        terms = tokenize(query)[:QUERY_TOKENS_MAX]
        if not terms or not self.entries:
            return []
        if self._bm25 is None:
            self._build()
        scores = self._bm25.get_scores(terms)
        ranked = sorted(
            (i for i in range(len(self.entries)) if scores[i] > 0),
            key=lambda i: (-float(scores[i]), self.entries[i].name),
        )
        return [(self.entries[i], float(scores[i])) for i in ranked[:limit]]


SEARCH_TOOLS = "search_tools"
DESCRIBE_TOOL = "describe_tool"
CALL_TOOL = "call_tool"
SEARCH_LIMIT_DEFAULT = 10
SEARCH_LIMIT_MAX = 50
QUERY_CHARS_MAX = 1_000

META_TOOLS: list[JSON] = [
    {
        "name": SEARCH_TOOLS,
        "title": "Search tools",
        "description": (
            "Find the tools that can do a task. Give a few keywords or a short description of "
            "the task; get the best matching tools' names with a one-line summary, best first. "
            "Then describe_tool for a tool's arguments, and call_tool to run it."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": QUERY_CHARS_MAX},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": SEARCH_LIMIT_MAX,
                    "default": SEARCH_LIMIT_DEFAULT,
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    },
    {
        "name": DESCRIBE_TOOL,
        "title": "Describe a tool",
        "description": (
            "The full definition of one tool found with search_tools: its description, input "
            "schema (the arguments call_tool needs), output schema and annotations."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    },
    {
        "name": CALL_TOOL,
        "title": "Call a tool",
        "description": (
            "Run one tool found with search_tools, with arguments matching the input schema "
            "describe_tool showed; answers with that tool's own result."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "arguments": {"type": "object"},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    },
]
META_NAMES = frozenset(tool["name"] for tool in META_TOOLS)
