"""An OpenAPI document: parsed from JSON or YAML, bounded in size, validated as OpenAPI 3.0
or 3.1 against the specification's own JSON Schema (as openapi-spec-validator ships it, run
by jsonschema-rs), and fetched, when given by URL, over the same SSRF-guarded client the MCP
backends use, without following redirects.

Only the schema check runs, not openapi-spec-validator's further semantic checks: those
walk every `$ref` in Python and take seconds for a document of a few hundred kilobytes
(minutes for the large public APIs), and what they add that matters here (an operationId
used twice, a path parameter left undeclared) the mapping finds per operation and skips
that one, with the reason.

Only the document itself is ever fetched: a `$ref` to another file or URL would make the
gateway open connections the admin never registered, so a document with one is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import orjson
import yaml
from jsonschema.exceptions import ValidationError
from openapi_spec_validator.schemas import (
    openapi_v30_schema_validator,
    openapi_v31_schema_validator,
)

from gateway.mcpclient.bounded import TooLarge, read_bounded

JSON = dict[str, Any]
MESSAGE_CHARS = 300
"""How much of a validation message the admin is shown."""


MAX_DEPTH = 200
"""Deepest nesting of a document: the store keeps it as JSON, and orjson writes at most 254
levels; no real API document comes near this."""
TOO_DEEP = f"the document is nested more than {MAX_DEPTH} levels deep"

# libyaml's safe loader when PyYAML was built with it: many times faster on big documents.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InvalidDocument(ValueError):
    """The document cannot be used; the message says why, for the admin."""


def parse(raw: bytes | str, limit: int) -> JSON:
    """The document in `raw` (JSON or YAML), at most `limit` bytes."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > limit:
        raise InvalidDocument(f"the document is larger than OPENAPI_MAX_SPEC_BYTES ({limit} bytes)")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            doc = yaml.load(data, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise InvalidDocument(f"the document is neither JSON nor YAML: {_short(exc)}") from None
        except RecursionError:  # the YAML composer recurses once per level
            raise InvalidDocument(TOO_DEEP) from None
    if not isinstance(doc, dict):
        raise InvalidDocument("the document is not a JSON or YAML object")
    _check_expansion(doc, len(data) + 16)
    return doc


def _check_expansion(doc: JSON, most: int) -> None:
    """YAML aliases (`*name`) repeat a node without repeating its text, so repeats of repeats
    make a small document hold billions of values for whatever walks it. Without them,
    every value takes at least a byte of the text, so a document holds at most `most`. The
    same walk refuses a document nested deeper than `MAX_DEPTH`."""
    count = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > most:
            raise InvalidDocument(
                "the document expands (through YAML aliases) to more values than it has bytes"
            )
        if depth > MAX_DEPTH and isinstance(item, dict | list):
            raise InvalidDocument(TOO_DEEP)
        if isinstance(item, dict):
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)


def validate(doc: Mapping[str, Any]) -> None:
    """Raise `InvalidDocument` unless `doc` is a valid OpenAPI 3.0 or 3.1 document with
    local `$ref`s only."""
    version = doc.get("openapi")
    if not isinstance(version, str) or not version.startswith(("3.0", "3.1")):
        found = "Swagger 2.0" if "swagger" in doc else f"'openapi': {version!r}"
        raise InvalidDocument(f"only OpenAPI 3.0 and 3.1 documents are supported, not {found}")
    for ref in _refs(doc):
        if not ref.startswith("#"):
            raise InvalidDocument(
                f"$ref {ref[:200]!r} points outside the document; the gateway fetches only "
                "the document itself, so bundle it into one file"
            )
    schema = (
        openapi_v30_schema_validator if version.startswith("3.0") else openapi_v31_schema_validator
    )
    try:
        error = next(schema.iter_errors(doc), None)
    except RecursionError:
        raise InvalidDocument("the document nests too deeply to validate") from None
    if error is not None:
        raise InvalidDocument(f"not a valid OpenAPI {version} document: {_describe(error)}")


def _refs(node: Any) -> Iterator[str]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    # The first paragraph: the rest repeats the schema and the instance.
    message = _short(error.message.split("\n\n", 1)[0])
    return f"{message} (at {where})" if where else message


def _short(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


class Unreachable(Exception):
    """The document's URL did not give a document; the message names the URL and why."""


async def fetch(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str], limit: int
) -> bytes:
    """The bytes at `url`, at most `limit` of them. A redirect is refused rather than
    followed: the upstream's headers (its credentials) must stay at the registered origin."""
    accept = {"Accept": "application/json, application/yaml;q=0.9, */*;q=0.5"}
    try:
        async with http.get(url, headers={**accept, **headers}, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                where = resp.headers.get("Location", "elsewhere")
                raise Unreachable(
                    f"the document URL {url} redirects (HTTP {resp.status}) to {where[:200]}; "
                    "register the final URL"
                )
            if resp.status >= 400:
                raise Unreachable(f"the document URL {url} answered HTTP {resp.status}")
            length = resp.content_length
            too_large = TooLarge("the document", "OPENAPI_MAX_SPEC_BYTES", limit)
            if length is not None and length > limit:
                raise too_large
            return await read_bounded(resp.content, limit, too_large)
    except TooLarge as exc:
        raise Unreachable(f"{url}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise Unreachable(f"the document URL {url} could not be read: {_reason(exc)}") from None


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error is not None:
        return _short(exc.os_error.strerror or exc.os_error)
    return _short(exc) or type(exc).__name__
