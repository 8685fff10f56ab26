"""Argument validation against a tool's input schema, compiled once per catalogue load.

fastjsonschema compiles each schema to Python code for the hot path (about 20 times faster
than interpreting it); jsonschema explains a failure, naming the field and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import structlog
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing.exceptions import Unresolvable

log = structlog.get_logger(__name__)

Check = Callable[[Any], str | None]
"""Returns None when the arguments are valid, else a message naming the field and why."""

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _unchecked(tool: str, why: str) -> Check:
    # An upstream's broken schema must not make its tool uncallable; the upstream still
    # validates its own arguments.
    log.warning("tool input schema is unusable; arguments not checked", tool=tool, error=why)
    return lambda arguments: None


def _outside_ref(schema: Any) -> str | None:
    """A reference of `schema` to anything but a part of itself, if it has one: both
    validators would fetch it (any URL, a local file), a request the upstream chooses."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for keyword in _REF_KEYWORDS:
                ref = node.get(keyword)
                if isinstance(ref, str) and not ref.startswith("#"):
                    return ref
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    message = str(error.message)
    if not where and error.validator in {"required", "additionalProperties"}:
        return message
    return f"field '{where or '(arguments)'}': {message}"


def compile_schema(tool: str, schema: dict[str, Any]) -> Check:
    outside = _outside_ref(schema)
    if outside is not None:
        return _unchecked(tool, f"$ref {outside[:200]!r} is outside the schema")
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except SchemaError as exc:
        return _unchecked(tool, exc.message)
    validator = cls(schema)
    try:
        fast = fastjsonschema.compile(schema)
    except Exception:  # a dialect or format fastjsonschema lacks: interpret instead
        fast = None

    def check(arguments: Any) -> str | None:
        if fast is not None:
            try:
                fast(arguments)
                return None
            except fastjsonschema.JsonSchemaException:
                pass
        try:
            if fast is None and validator.is_valid(arguments):
                return None
            error = best_match(validator.iter_errors(arguments))
        except Unresolvable as exc:  # a `$ref` to a part the schema does not have
            log.warning(
                "tool input schema is unusable; arguments not checked", tool=tool, error=str(exc)
            )
            return None
        return _describe(error) if error is not None else "arguments are invalid"

    return check


def lazy_schema(tool: str, schema: dict[str, Any]) -> Check:
    """A check compiled on the tool's first call, not when the catalogue loads: a catalogue
    change must reach every worker fast, and most tools of a big upstream are rarely called."""
    compiled: list[Check] = []

    def check(arguments: Any) -> str | None:
        if not compiled:
            compiled.append(compile_schema(tool, schema))
        return compiled[0](arguments)

    return check
