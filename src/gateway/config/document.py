"""Reading a configuration file: YAML to the desired state, every problem named with the
file and line, before anything is written.

The file declares `upstreams` (each entry exactly what `POST /upstreams` accepts),
`servers` (what `POST /servers` accepts) and `tools` (gateway tool name to the settings
`PATCH /tools/{name}` accepts). `${VAR}` in any string is replaced by the environment
variable `VAR` (`$$` is a literal `$`); a variable that is not set is an error. Header
values are secrets: each must come from a `${VAR}` reference, never be written in clear.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.settings import Settings, SettingsError

MAX_FILE_BYTES = 1_048_576
"""A configuration file larger than this is refused unread."""

PRUNE_MODES = ("managed", "all")
"""`managed`: remove only what an earlier apply of a file created; `all`: also what was
added by hand."""

_TOP_LEVEL = {"version", "prune", "upstreams", "servers", "tools"}
_REFERENCE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")

Path_ = tuple[str | int, ...]


class ConfigError(ValueError):
    """A configuration file the gateway cannot use; `str()` is one line naming the file,
    the line and the problem."""

    def __init__(self, file: str, line: int | None, problem: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Entry:
    """One declared object: its fields after `${VAR}` expansion, and where it was written."""

    key: str
    fields: Mapping[str, Any]
    line: int | None
    path: Path_ = ()
    """Where the entry sits in the document, e.g. `("upstreams", 0)`."""


@dataclass(frozen=True, slots=True)
class Desired:
    """What a configuration file asks for."""

    file: str
    prune: str = "managed"
    upstreams: tuple[Entry, ...] = ()
    servers: tuple[Entry, ...] = ()
    tools: tuple[Entry, ...] = ()
    lines: Mapping[Path_, int] = field(default_factory=dict)
    referenced: frozenset[Path_] = frozenset()
    """Where a string held a `${VAR}` reference: secret fields must come from one."""

    def error(self, entry: Entry, problem: str) -> ConfigError:
        return ConfigError(self.file, entry.line, problem)


class _Reader:
    """Turns a composed YAML node tree into plain values, remembering each value's line."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[Path_, int] = {}
        self.referenced: set[Path_] = set()
        self.constructor = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, problem: str) -> ConfigError:
        return ConfigError(self.file, node.start_mark.line + 1, problem)

    def value(self, node: yaml.Node, path: Path_, secret: bool = False) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node)
                if not isinstance(key, str):
                    raise self.fail(key_node, f"keys must be strings, not {key!r}")
                if key in result:
                    raise self.fail(key_node, f"'{key}' is given twice")
                inner = secret or (path[:1] == ("upstreams",) and path[-1:] == ("headers",))
                result[key] = self.value(value_node, (*path, key), inner)
                # A problem with a key's value is reported on the key's line.
                self.lines[(*path, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i), secret) for i, item in enumerate(node.value)]
        scalar = self.constructor.construct_object(node)
        if isinstance(scalar, str):
            if _REFERENCE.search(scalar.replace("$$", "")):
                self.referenced.add(path)
            if secret and not _REFERENCE.search(scalar.replace("$$", "")):
                raise self.fail(
                    node,
                    f"the value of header '{path[-1]}' is written in clear; header values are "
                    "secrets, so write them as ${ENV_VAR} references",
                )
            return self.expand(node, scalar)
        return scalar

    def expand(self, node: yaml.Node, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1) == "$":
                return "$"
            name = match.group(2)
            if name not in self.environ:
                raise self.fail(
                    node, f"environment variable {name} is not set (used as ${{{name}}})"
                )
            return self.environ[name]

        return _REFERENCE.sub(replace, text)


def load(path: str | Path, environ: Mapping[str, str]) -> Desired:
    """Read and check the configuration file at `path`; raise one `ConfigError`."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(file, None, f"the file is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, None, "the file is not UTF-8 text") from None
    return parse(text, file, environ)


def parse(text: str, file: str, environ: Mapping[str, str]) -> Desired:
    """Check the YAML `text` of the file named `file`; raise one `ConfigError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, line, f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, f"not valid YAML: {exc}") from None
    if node is None:
        return Desired(file=file)
    reader = _Reader(file, environ)
    if not isinstance(node, yaml.MappingNode):
        raise reader.fail(node, "the file must be a mapping with upstreams, servers and tools")
    try:
        document = reader.value(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise ConfigError(file, mark.line + 1 if mark else None, str(exc.problem)) from None
    return _desired(document, file, reader.lines, frozenset(reader.referenced))


def _desired(
    document: dict[str, Any], file: str, lines: dict[Path_, int], referenced: frozenset[Path_]
) -> Desired:
    def fail(path: Path_, problem: str) -> ConfigError:
        return ConfigError(file, lines.get(path), problem)

    unknown = sorted(set(document) - _TOP_LEVEL)
    if unknown:
        raise fail(
            (unknown[0],),
            f"unknown key '{unknown[0]}'; the file declares {', '.join(sorted(_TOP_LEVEL))}",
        )
    if document.get("version", 1) != 1:
        raise fail(("version",), "'version' must be 1")
    prune = document.get("prune", "managed")
    if prune not in PRUNE_MODES:
        raise fail(("prune",), f"'prune' must be one of: {', '.join(PRUNE_MODES)}")

    def listed(section: str, key: str) -> tuple[Entry, ...]:
        items = document.get(section) or []
        if not isinstance(items, list):
            raise fail((section,), f"'{section}' must be a list")
        entries: dict[str, Entry] = {}
        for index, item in enumerate(items):
            where = (section, index)
            if not isinstance(item, dict):
                raise fail(where, f"each entry of '{section}' must be a mapping")
            name = item.get(key)
            if not isinstance(name, str) or not name:
                raise fail(where, f"each entry of '{section}' needs a '{key}'")
            if name in entries:
                raise fail(where, f"'{name}' is declared twice in '{section}'")
            entries[name] = Entry(name, item, lines.get(where), where)
        return tuple(entries.values())

    tools = document.get("tools") or {}
    if not isinstance(tools, dict):
        raise fail(("tools",), "'tools' must map tool names to their settings")
    tool_entries = []
    for name, changes in tools.items():
        if not isinstance(changes, dict) or not changes:
            raise fail(("tools", name), f"tool '{name}' needs a mapping of settings")
        tool_entries.append(Entry(name, changes, lines.get(("tools", name)), ("tools", name)))
    for entry in listed("upstreams", "name"):
        _check_url_secret(entry, file)
    return Desired(
        file=file,
        prune=prune,
        upstreams=listed("upstreams", "name"),
        servers=listed("servers", "id"),
        tools=tuple(tool_entries),
        lines=lines,
        referenced=referenced,
    )


def _check_url_secret(entry: Entry, file: str) -> None:
    url = entry.fields.get("url")
    if isinstance(url, str) and urlsplit(url).password is not None:
        # Expanded already, so a password that came from ${VAR} cannot be told from one
        # written in clear; header values are the one place for credentials.
        raise ConfigError(
            file,
            entry.line,
            f"upstream '{entry.key}': put credentials in 'headers' (Authorization: "
            "${ENV_VAR}), not in the URL",
        )


def check_file(settings: Settings) -> None:
    """Read and check `GATEWAY_CONFIG` without applying it (gunicorn's master does this
    before any worker starts); raise `SettingsError` with one line."""
    if settings.config_file:
        try:
            load(settings.config_file, os.environ)
        except ConfigError as exc:
            raise SettingsError(f"GATEWAY_CONFIG: {exc}") from None
