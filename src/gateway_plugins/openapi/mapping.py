"""Operations to tools: one tool per operation of a valid OpenAPI document, or the reason
it has none.

- Name: the `operationId`, else `<method>_<path>`, with every run of characters MCP does not
  allow in a tool name turned into `_`, cut to fit beside the upstream's prefix.
- Description: the summary and the description; the summary is also the title.
- Input schema: an object whose properties are the path, query and header parameters by
  name, and the JSON request body as the property `body`; no other property is allowed.
  `$ref`s are resolved by `referencing` and inlined; a recursive one is inlined to
  `REF_DEPTH` levels, then accepts anything. OpenAPI 3.0's `nullable` and boolean
  `exclusiveMinimum`/`exclusiveMaximum` become their JSON Schema forms, so the gateway
  validates arguments as the API would.
- Skipped, each with its reason: an operation whose only request bodies are not JSON (a
  required one), with a required cookie parameter, with a path parameter it does not
  declare, with two parameters (or a parameter and `body`) of one name, whose name another
  operation already took, whose schema is too large once expanded, or past
  `OPENAPI_MAX_TOOLS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from gateway.plugin import ToolDef

JSON = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BASE_URI = "https://openapi.invalid/document"
"""Where `referencing` files the document: its local `#/...` references resolve against it."""
REF_DEPTH = 3
"""How many times a recursive schema is inlined into itself before it accepts anything."""
SCHEMA_NODES = 20_000
"""The most JSON values one tool's input schema may hold once its `$ref`s are inlined."""
BODY = "body"
# OpenAPI: header parameters of these names are ignored (they come from elsewhere); the
# others are fields an HTTP client sets for each connection.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_REFUSED_HEADERS = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host"}
    | {"content-length", "cookie"}
)
# RFC 9110 section 5.1: a field name is a token; any other name makes a malformed request.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_TOOL_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_TEMPLATE = re.compile(r"\{([^{}/]+)\}")


class Unmappable(Exception):
    """This operation cannot be a tool; the message says why."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: str
    """`path`, `query` or `header`."""
    style: str
    explode: bool
    as_json: bool = False
    """The parameter is described by `content` (a JSON media type), not by `schema`."""


@dataclass(frozen=True, slots=True)
class Operation:
    tool: ToolDef
    method: str
    path: str
    server: str
    """The operation's own server URL (its `servers` or its path's), or '' for the API's."""
    params: tuple[Param, ...]
    body_type: str | None = None
    """The JSON media type of the request body, or None when the tool sends none."""

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"


@dataclass(frozen=True, slots=True)
class Skipped:
    operation: str
    reason: str

    def view(self) -> JSON:
        return {"operation": self.operation, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Api:
    operations: dict[str, Operation]
    """By tool name."""
    skipped: tuple[Skipped, ...]


def map_api(doc: Mapping[str, Any], name_room: int, max_tools: int) -> Api:
    """The tools of a valid document; tool names are at most `name_room` characters."""
    mapper = _Mapper(doc)
    operations: dict[str, Operation] = {}
    skipped: list[Skipped] = []
    for method, path, item, op in mapper.operations():
        label = f"{method.upper()} {path}"
        if len(operations) >= max_tools:
            skipped.append(Skipped(label, f"past OPENAPI_MAX_TOOLS ({max_tools}) operations"))
            continue
        try:
            operation = mapper.operation(method, path, item, op, name_room)
        except Unmappable as exc:
            skipped.append(Skipped(label, str(exc)))
            continue
        taken = operations.get(operation.tool.name)
        if taken is not None:
            skipped.append(
                Skipped(label, f"tool name {operation.tool.name!r} is taken by {taken.label}")
            )
            continue
        operations[operation.tool.name] = operation
    return Api(operations, tuple(skipped))


def tool_name(method: str, path: str, operation_id: object, room: int) -> str:
    if isinstance(operation_id, str) and operation_id:
        raw = operation_id
    else:
        raw = f"{method}_{path.strip('/')}"
    name = _NOT_TOOL_NAME.sub("_", raw).strip("_") or method
    return name[:room]


class _Mapper:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.v30 = str(doc.get("openapi", "")).startswith("3.0")
        registry: Registry[Any] = Registry().with_resource(
            BASE_URI, DRAFT202012.create_resource(dict(doc))
        )
        self.resolver = registry.resolver(base_uri=BASE_URI)
        self.left = SCHEMA_NODES
        """What the operation being mapped may still inline (see `SCHEMA_NODES`)."""

    def operations(self) -> Iterator[tuple[str, str, JSON, JSON]]:
        for path, item in (self.doc.get("paths") or {}).items():
            try:
                item = self.deref(item)
            except Unmappable:
                continue
            for method in METHODS:
                op = item.get(method)
                if isinstance(op, dict):
                    yield method, path, item, op

    def lookup(self, ref: str) -> Any:
        try:
            return self.resolver.lookup(ref).contents
        except Unresolvable:
            raise Unmappable(f"$ref {ref!r} does not resolve") from None

    def deref(self, node: Any) -> Any:
        """A parameter, body or path item that may be a `$ref` to one."""
        for _ in range(32):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            node = self.lookup(node["$ref"])
        raise Unmappable("a chain of $refs that does not end")

    def operation(self, method: str, path: str, item: JSON, op: JSON, room: int) -> Operation:
        properties: JSON = {}
        required: list[str] = []
        params: list[Param] = []
        self.left = SCHEMA_NODES
        for param, schema, needed in self.parameters(item, op):
            if param.name in properties:
                raise Unmappable(f"two parameters are named {param.name!r}")
            properties[param.name] = schema
            params.append(param)
            if needed:
                required.append(param.name)
        declared = {p.name for p in params if p.location == "path"}
        for name in _TEMPLATE.findall(path):
            if name not in declared:
                raise Unmappable(f"its path parameter {{{name}}} is not declared")
        body_type = None
        body = self.body(op)
        if body is not None:
            if BODY in properties:
                raise Unmappable(f"a parameter is named {BODY!r}, which the request body takes")
            body_type, schema, needed = body
            properties[BODY] = schema
            if needed:
                required.append(BODY)
        # Closed, so that a misspelt argument is refused rather than silently not sent.
        input_schema: JSON = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            input_schema["required"] = required
        summary = _text(op.get("summary"))
        description = _text(op.get("description"))
        if description.strip() == summary.strip():
            description = ""
        tool = ToolDef(
            name=tool_name(method, path, op.get("operationId"), room),
            input_schema=input_schema,
            description="\n\n".join(part for part in (summary, description) if part),
            title=summary or None,
            annotations=_hints(method),
        )
        server = self.server(op) or self.server(item)
        return Operation(tool, method, path, server, tuple(params), body_type)

    def parameters(self, item: JSON, op: JSON) -> Iterator[tuple[Param, JSON, bool]]:
        merged: dict[tuple[str, str], JSON] = {}
        for source in (item.get("parameters") or [], op.get("parameters") or []):
            for raw in source:
                param = self.deref(raw)
                merged[(str(param.get("name")), str(param.get("in")))] = param
        for (name, location), param in merged.items():
            required = bool(param.get("required")) or location == "path"
            unsendable = name.lower() in _REFUSED_HEADERS or not _FIELD_NAME.fullmatch(name)
            if location == "cookie" or (location == "header" and unsendable):
                if required:
                    raise Unmappable(f"its required {location} parameter {name!r} cannot be sent")
                continue
            if location == "header" and name.lower() in _IGNORED_HEADERS:
                continue
            schema, as_json = self.param_schema(param)
            if isinstance(param.get("description"), str) and "description" not in schema:
                schema["description"] = param["description"]
            style = param.get("style") or ("form" if location == "query" else "simple")
            explode = param.get("explode", style == "form")
            yield Param(name, location, str(style), bool(explode), as_json), schema, required

    def param_schema(self, param: JSON) -> tuple[JSON, bool]:
        if isinstance(param.get("schema"), dict):
            return self.schema(param["schema"]), False
        content = param.get("content")
        if isinstance(content, dict) and content:
            media = self.deref(next(iter(content.values())))
            schema = media.get("schema") if isinstance(media, dict) else None
            return self.schema(schema if isinstance(schema, dict) else {}), True
        return {}, False

    def body(self, op: JSON) -> tuple[str, JSON, bool] | None:
        if "requestBody" not in op:
            return None
        body = self.deref(op["requestBody"])
        content = body.get("content") or {}
        needed = bool(body.get("required"))
        media_type = next((t for t in content if _is_json(t)), None)
        if media_type is None:
            if needed:
                kinds = ", ".join(sorted(content)) or "no media type"
                raise Unmappable(f"its request body is not JSON ({kinds})")
            return None
        media = self.deref(content[media_type]) or {}
        schema = self.schema(media.get("schema") or {})
        if isinstance(body.get("description"), str) and "description" not in schema:
            schema["description"] = body["description"]
        return media_type, schema, needed

    def server(self, node: JSON) -> str:
        servers = node.get("servers")
        if not (isinstance(servers, list) and servers and isinstance(servers[0], dict)):
            return ""
        return server_url(servers[0])

    def schema(self, schema: Any) -> JSON:
        inlined = self._inline(schema, ())
        return inlined if isinstance(inlined, dict) else {}

    def _inline(self, node: Any, refs: tuple[str, ...]) -> Any:
        self.left -= 1
        if self.left < 0:
            raise Unmappable(
                f"its input schema holds more than {SCHEMA_NODES} values once $refs are inlined"
            )
        if isinstance(node, list):
            return [self._inline(item, refs) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if refs.count(ref) >= REF_DEPTH:
                return {"description": f"(recursive {ref.rsplit('/', 1)[-1]}, not expanded)"}
            target = self._inline(self.lookup(ref), (*refs, ref))
            if not isinstance(target, dict):
                return target
            return {**target, **self._inline(rest, refs)} if rest else target
        out = {
            key: value if key in _LITERAL_KEYWORDS else self._inline(value, refs)
            for key, value in node.items()
        }
        if self.v30:
            _from_openapi30(out)
        return out


_LITERAL_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})


def _from_openapi30(schema: JSON) -> None:
    """OpenAPI 3.0's schema dialect to JSON Schema's, in place."""
    if schema.pop("nullable", False) is True and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = schema.get(bound)
        if isinstance(flag, bool):
            del schema[bound]
            if flag and limit in schema:
                schema[bound] = schema.pop(limit)


def server_url(server: Mapping[str, Any]) -> str:
    """A Server Object's URL with each `{variable}` at its default."""
    url = str(server.get("url", ""))
    variables = server.get("variables")
    if isinstance(variables, dict):
        for name, variable in variables.items():
            if isinstance(variable, dict) and "default" in variable:
                url = url.replace("{" + str(name) + "}", str(variable["default"]))
    return url


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _is_json(media_type: str) -> bool:
    kind = media_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _hints(method: str) -> JSON:
    if method in ("get", "head", "options"):
        return {"readOnlyHint": True}
    if method == "delete":
        return {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True}
    if method == "put":
        return {"readOnlyHint": False, "idempotentHint": True}
    return {"readOnlyHint": False}
