"""Argument rules per tool and result caps, read from `GUARDRAILS_RULES`.

The setting is a JSON object, or the path of a file holding one. Each key is a glob over
gateway names (tools, prompts, resource URIs: `search__*`, `*`); each value may set
`deny` (regular expressions; a string anywhere in the arguments that one matches is
refused), `max_argument_bytes` and `max_result_bytes` (sizes as compact JSON). Every rule
whose glob matches a call applies::

    {"db__*": {"deny": ["(?i)\\\\bdrop\\\\s+table\\\\b"], "max_argument_bytes": 4096},
     "*": {"max_result_bytes": 262144}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import orjson
from gateway.plugin import After, BaseInterceptor, Before, Call, Refuse, SettingsError

JSON = dict[str, Any]
_FIELDS = {"deny", "max_argument_bytes", "max_result_bytes"}


@dataclass(frozen=True, slots=True)
class Rule:
    glob: str
    deny: tuple[re.Pattern[str], ...] = ()
    max_argument_bytes: int | None = None
    max_result_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    rules: tuple[Rule, ...] = ()

    def for_name(self, name: str) -> list[Rule]:
        return [rule for rule in self.rules if fnmatchcase(name, rule.glob)]


def _size(name: str, glob: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{name}: '{glob}'.{field} must be a positive integer")
    return value


def _rule(name: str, glob: str, spec: Any) -> Rule:
    if not isinstance(spec, dict):
        raise SettingsError(f"{name}: the rule for '{glob}' must be an object")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise SettingsError(
            f"{name}: the rule for '{glob}' has unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_FIELDS))}"
        )
    deny = spec.get("deny", [])
    if not isinstance(deny, list) or not all(isinstance(p, str) for p in deny):
        raise SettingsError(f"{name}: '{glob}'.deny must be a list of regular expressions")
    patterns = []
    for pattern in deny:
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise SettingsError(f"{name}: '{glob}'.deny {pattern!r} is not valid: {exc}") from None
    return Rule(
        glob,
        tuple(patterns),
        _size(name, glob, "max_argument_bytes", spec.get("max_argument_bytes")),
        _size(name, glob, "max_result_bytes", spec.get("max_result_bytes")),
    )


def parse_rules(name: str, raw: str) -> Rules:
    """The `GUARDRAILS_RULES` parser: JSON text, or the path of a JSON file."""
    text = raw.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise SettingsError(
                f"{name}={raw!r} is neither a JSON object nor a file: {exc}"
            ) from None
    try:
        loaded = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{name}: the rules are not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise SettingsError(f"{name}: the rules must be a JSON object of glob -> rule")
    return Rules(tuple(_rule(name, glob, spec) for glob, spec in loaded.items()))


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string in `value` (keys too), with where it is."""
    if isinstance(value, str):
        return [(path, value)]
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((f"{path}.{key}", str(key)))
            found += _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _strings(item, f"{path}[{index}]")
    return found


class RulesInterceptor(BaseInterceptor):
    """Refuses arguments a rule denies or finds too large, and results over a cap."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    async def before(self, call: Call) -> Before:
        matching = self.rules.for_name(call.name)
        if not matching:
            return None
        size = len(orjson.dumps(call.arguments))
        for rule in matching:
            if rule.max_argument_bytes is not None and size > rule.max_argument_bytes:
                return Refuse(
                    f"the arguments are {size} bytes; rule '{rule.glob}' allows "
                    f"{rule.max_argument_bytes}"
                )
            if rule.deny:
                for where, text in _strings(call.arguments, "arguments"):
                    if any(pattern.search(text) for pattern in rule.deny):
                        return Refuse(f"{where} is denied by rule '{rule.glob}'")
        return None

    async def after(self, call: Call, result: JSON) -> After:
        caps = [r for r in self.rules.for_name(call.name) if r.max_result_bytes is not None]
        if not caps:
            return None
        size = len(orjson.dumps(result))
        for rule in caps:
            assert rule.max_result_bytes is not None
            if size > rule.max_result_bytes:
                return Refuse(
                    f"the result is {size} bytes; rule '{rule.glob}' allows {rule.max_result_bytes}"
                )
        return None
