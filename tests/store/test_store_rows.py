"""Row mapping from the record types: every record round-trips through its row, columns follow
the fields' types and metadata (JSON, tuples, booleans, renamed, encrypted), and a new field
needs no mapping code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.contracts import PromptDef, ResourceDef, ResourceTemplateDef, ToolDef
from gateway.store import (
    Features,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
    Store,
    ToolRecord,
    UpstreamRecord,
)
from gateway.store.crypto import HeaderCipher
from gateway.store.rows import Rows, column
from gateway.store.tables import PROMPTS, RESOURCES, SERVERS, TEMPLATES, TOOLS, UPSTREAMS
from tests.store.conftest import raw_rows, upstream

CIPHER = HeaderCipher("rows-test-secret")

FULL_TOOL = ToolRecord(
    name="a__echo",
    upstream="a",
    definition=ToolDef(
        name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        description="Echo text",
        title="Echo",
        output_schema={"type": "object"},
        annotations={"readOnlyHint": True},
        icons=({"src": "https://a.example/echo.png", "mimeType": "image/png", "sizes": ["48x48"]},),
        meta={"a.example/kind": "echo", "nested": {"n": [1, 2.5, None]}},
        extra={"x-vendor": {"tier": "gold", "n": [1, None]}, "futureField": "later"},
    ),
    enabled=False,
    cache_ttl=2.5,
    rate_limit=10,
)
FULL_RESOURCE = ResourceRecord(
    upstream="a",
    definition=ResourceDef(
        uri="file:///a/readme",
        name="readme",
        description="The read-me",
        title="Read me",
        mime_type="text/markdown",
        size=1234,
        annotations={"audience": ["user"], "priority": 0.5},
        icons=({"src": "data:image/png;base64,AAAA", "theme": "dark"},),
        meta={"a.example/kind": "readme"},
        extra={"x-vendor": {"kind": "readme"}},
    ),
    enabled=False,
)
FULL_TEMPLATE = ResourceTemplateRecord(
    upstream="a",
    definition=ResourceTemplateDef(
        uri_template="file:///a/{path}",
        name="path",
        description="Any file",
        title="File",
        mime_type="text/plain",
        annotations={"audience": ["assistant"]},
        icons=({"src": "https://a.example/file.svg", "sizes": ["any"]},),
        meta={"a.example/kind": "file"},
        extra={"x-vendor": {"kind": "file"}},
    ),
    enabled=False,
)
FULL_PROMPT = PromptRecord(
    name="a__greet",
    upstream="a",
    definition=PromptDef(
        name="greet",
        description="Say hello",
        title="Greeting",
        arguments=({"name": "who", "title": "Who", "required": True}, {"name": "tone"}),
        icons=({"src": "https://a.example/greet.png"},),
        meta={"a.example/kind": "greet"},
        extra={"x-vendor": {"kind": "greet"}, "x-empty": None},
    ),
    enabled=False,
)
FULL_SERVER = ServerRecord(
    id="s1",
    name="Support",
    description="For the support team",
    tools=("a__echo",),
    resources=("file:///a/readme", "file:///a/{path}"),
    prompts=("a__greet",),
    created_at=1.5,
    updated_at=2.5,
    tags=("support",),
    tool_mode="search",
)
FULL_UPSTREAM = UpstreamRecord(
    name="a",
    transport="streamable-http",
    url="http://a.example/mcp",
    prefix="a",
    headers={"Authorization": "Bearer t0k3n"},
    builtin=True,
    created_at=1.5,
    updated_at=2.5,
)

EVERY_RECORD: list[tuple[Rows[Any], Any]] = [
    (TOOLS.rows, FULL_TOOL),
    (RESOURCES.rows, FULL_RESOURCE),
    (TEMPLATES.rows, FULL_TEMPLATE),
    (PROMPTS.rows, FULL_PROMPT),
    (SERVERS, FULL_SERVER),
    (UPSTREAMS, FULL_UPSTREAM),
]
BARE_RECORDS: list[tuple[Rows[Any], Any]] = [
    (TOOLS.rows, ToolRecord("t", "a", ToolDef("t", {}))),
    (RESOURCES.rows, ResourceRecord("a", ResourceDef("file:///r", "r"))),
    (TEMPLATES.rows, ResourceTemplateRecord("a", ResourceTemplateDef("x/{y}", "y"))),
    (PROMPTS.rows, PromptRecord("p", "a", PromptDef("p"))),
    (SERVERS, ServerRecord("s", "S")),
    (UPSTREAMS, UpstreamRecord("a", "sse", "http://a", "a")),
]
IDS = [rows.table for rows, _ in EVERY_RECORD]


def by_column(rows: Rows[Any], record: Any) -> dict[str, Any]:
    """The values the mapper writes for `record`, by column name."""
    names = [c.name for c in rows.columns]
    return dict(zip(names, rows.params(record, CIPHER), strict=True))


# --- the mapper on its own -------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "record"), EVERY_RECORD, ids=IDS)
def test_every_record_type_round_trips_through_its_row(rows: Rows[Any], record: Any) -> None:
    assert rows.record(rows.params(record, CIPHER), CIPHER) == record


@pytest.mark.parametrize(("rows", "record"), BARE_RECORDS, ids=IDS)
def test_a_record_with_only_its_required_fields_round_trips_too(
    rows: Rows[Any], record: Any
) -> None:
    assert rows.record(rows.params(record, CIPHER), CIPHER) == record


def test_a_definition_spreads_over_the_row_with_its_name_in_original_name() -> None:
    columns = by_column(TOOLS.rows, FULL_TOOL)

    assert (columns["name"], columns["original_name"]) == ("a__echo", "echo")
    assert (columns["description"], columns["title"]) == ("Echo text", "Echo")
    assert sorted(columns) == sorted(
        [
            "name",
            "upstream",
            "original_name",
            "input_schema",
            "description",
            "title",
            "output_schema",
            "annotations",
            "icons",
            "meta",
            "extra",
            "enabled",
            "cache_ttl",
            "rate_limit",
        ]
    )


def test_dict_and_tuple_fields_are_json_text_and_none_stays_null() -> None:
    tool = ToolRecord("t", "a", ToolDef("t", {"type": "object"}))
    columns = by_column(TOOLS.rows, tool)
    prompt = by_column(PROMPTS.rows, FULL_PROMPT)

    assert columns["input_schema"] == '{"type":"object"}'
    assert (columns["output_schema"], columns["annotations"]) == (None, None)
    assert orjson.loads(prompt["arguments"]) == [
        {"name": "who", "title": "Who", "required": True},
        {"name": "tone"},
    ]


def test_booleans_and_numbers_come_back_as_their_field_types() -> None:
    """SQLite answers 0 and 1 for a BOOLEAN, and an integral REAL may come back as an int."""
    row = list(TOOLS.rows.params(FULL_TOOL))
    names = [c.name for c in TOOLS.rows.columns]
    row[names.index("enabled")] = 1
    row[names.index("cache_ttl")] = 3

    record = TOOLS.rows.record(row)

    assert record.enabled is True
    assert type(record.cache_ttl) is float


def test_an_encrypted_column_holds_sealed_headers_and_reads_back_decrypted() -> None:
    columns = by_column(UPSTREAMS, FULL_UPSTREAM)

    sealed = columns["headers_enc"]
    assert "headers" not in columns
    assert "t0k3n" not in sealed and "Authorization" not in sealed
    assert CIPHER.decrypt_headers(sealed) == {"Authorization": "Bearer t0k3n"}
    with pytest.raises(TypeError, match="encrypted column"):
        UPSTREAMS.params(FULL_UPSTREAM)


def test_update_writes_every_column_but_the_key_and_those_kept() -> None:
    sql, params = SERVERS.update(FULL_SERVER, keep={"created_at"})

    assert sql == (
        "UPDATE servers SET name = ?, description = ?, tools = ?, resources = ?, prompts = ?, "
        "updated_at = ?, tags = ?, tool_mode = ?, interceptors = ? WHERE id = ?"
    )
    assert params[-1] == "s1" and params[2] == '["a__echo"]'


# --- a new field needs no mapping code --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WidgetDef:
    name: str
    shape: dict[str, Any]
    tags: tuple[str, ...] = ()
    weight: float | None = None


@dataclass(frozen=True, slots=True)
class WidgetRecord:
    name: str
    definition: WidgetDef = field(metadata=column(renamed={"name": "original_name"}))
    secret: dict[str, str] = field(
        default_factory=dict, metadata=column("secret_enc", encrypted=True)
    )
    active: bool = True
    count: int | None = None


def test_a_new_record_type_maps_from_its_fields_alone() -> None:
    rows = Rows(WidgetRecord, "widgets", key="name")
    record = WidgetRecord(
        name="w",
        definition=WidgetDef("orig", {"sides": 3}, ("a", "b"), 1.5),
        secret={"k": "v"},
        active=False,
        count=4,
    )

    assert [c.name for c in rows.columns] == [
        "name",
        "original_name",
        "shape",
        "tags",
        "weight",
        "secret_enc",
        "active",
        "count",
    ]
    assert rows.insert == (
        "INSERT INTO widgets (name, original_name, shape, tags, weight, secret_enc, active, "
        "count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    assert rows.record(rows.params(record, CIPHER), CIPHER) == record


def test_a_field_of_a_type_with_no_column_type_fails_when_the_mapping_is_built() -> None:
    @dataclass(frozen=True)
    class Odd:
        name: str
        when: set[str]

    with pytest.raises(TypeError, match=r"Odd\.when: no column type"):
        Rows(Odd, "odd", key="name")


def test_two_fields_on_one_column_fail_when_the_mapping_is_built() -> None:
    @dataclass(frozen=True)
    class Clash:
        name: str
        definition: WidgetDef

    with pytest.raises(TypeError, match="two fields onto one column"):
        Rows(Clash, "clash", key="name")


# --- through the database --------------------------------------------------------------------


async def test_every_offered_record_round_trips_through_the_database(store: Store) -> None:
    await store.create_upstream(
        upstream("a"),
        [FULL_TOOL],
        Features(resources=[FULL_RESOURCE], templates=[FULL_TEMPLATE], prompts=[FULL_PROMPT]),
    )

    data = await store.load_catalogue()

    assert (data.tools, data.resources, data.templates, data.prompts) == (
        [FULL_TOOL],
        [FULL_RESOURCE],
        [FULL_TEMPLATE],
        [FULL_PROMPT],
    )


async def test_json_columns_hold_json_text_in_the_database(database_url: str, store: Store) -> None:
    await store.create_upstream(
        upstream("a"), [FULL_TOOL, ToolRecord("a__t", "a", ToolDef("t", {}))]
    )

    rows = raw_rows(
        database_url,
        "SELECT input_schema, output_schema, annotations, extra FROM tools ORDER BY name",
    )

    assert [tuple(None if v is None else orjson.loads(v) for v in row) for row in rows] == [
        (
            FULL_TOOL.definition.input_schema,
            {"type": "object"},
            {"readOnlyHint": True},
            FULL_TOOL.definition.extra,
        ),
        ({}, None, None, None),
    ]


async def test_the_encrypted_header_column_is_sealed_in_the_database(
    database_url: str, store: Store
) -> None:
    await store.create_upstream(FULL_UPSTREAM, [])

    [(sealed,)] = raw_rows(database_url, "SELECT headers_enc FROM upstreams")

    assert "t0k3n" not in sealed
    assert (await store.get_upstream("a")).headers == FULL_UPSTREAM.headers  # type: ignore[union-attr]
