"""Tool curation in the store, on SQLite and PostgreSQL: overrides kept apart from the tools
they curate, surviving upstream refreshes, aliases unique across names and aliases, and
virtual servers' tags and tool mode."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import Conflict, NotFound, ServerRecord, Store, ToolOverride
from tests.store.conftest import tool, upstream


@pytest.fixture
async def catalogued(store: Store) -> Store:
    await store.create_upstream(upstream("a"), [tool("a", "send_mail"), tool("a", "read_mail")])
    await store.create_upstream(upstream("b"), [tool("b", "open_issue")])
    return store


async def test_curate_tool_stores_every_field_and_the_catalogue_carries_it(
    catalogued: Store,
) -> None:
    before = await catalogued.catalogue_version()
    curated = await catalogued.curate_tool(
        "a__send_mail",
        {
            "alias": "send_email",
            "title": "Send an email",
            "description": "Sends one email to one recipient.",
            "annotations": {"destructiveHint": False, "openWorldHint": True},
            "tags": ("mail", "outbound"),
        },
    )
    assert curated == ToolOverride(
        name="a__send_mail",
        alias="send_email",
        title="Send an email",
        description="Sends one email to one recipient.",
        annotations={"destructiveHint": False, "openWorldHint": True},
        tags=("mail", "outbound"),
        updated_at=curated.updated_at,
    )
    assert await catalogued.get_tool_override("a__send_mail") == curated
    assert await catalogued.list_tool_overrides() == [curated]
    data = await catalogued.load_catalogue()
    assert data.overrides == [curated]
    assert data.version > before


async def test_curate_tool_is_a_partial_update_and_null_clears_one_field(
    catalogued: Store,
) -> None:
    await catalogued.curate_tool("a__send_mail", {"alias": "send_email", "title": "Send"})
    kept = await catalogued.curate_tool("a__send_mail", {"tags": ("mail",)})
    assert (kept.alias, kept.title, kept.tags) == ("send_email", "Send", ("mail",))
    cleared = await catalogued.curate_tool("a__send_mail", {"title": None, "tags": None})
    assert (cleared.alias, cleared.title, cleared.tags) == ("send_email", None, ())


async def test_clearing_every_field_deletes_the_curation(catalogued: Store) -> None:
    await catalogued.curate_tool("a__send_mail", {"alias": "send_email"})
    await catalogued.curate_tool("a__send_mail", {"alias": None})
    assert await catalogued.get_tool_override("a__send_mail") is None


async def test_curation_survives_an_upstream_refresh_that_rewrites_its_tools(
    catalogued: Store,
) -> None:
    await catalogued.curate_tool("a__send_mail", {"alias": "send_email", "tags": ("mail",)})
    refreshed = [tool("a", "send_mail", description="new upstream text"), tool("a", "archive")]
    await catalogued.update_upstream(upstream("a"), refreshed)
    kept = await catalogued.get_tool_override("a__send_mail")
    assert kept is not None and (kept.alias, kept.tags) == ("send_email", ("mail",))
    [curated_tool] = [t for t in await catalogued.list_tools() if t.name == "a__send_mail"]
    assert curated_tool.definition.description == "new upstream text"


async def test_curating_an_unknown_tool_raises_not_found_and_writes_nothing(
    catalogued: Store,
) -> None:
    before = await catalogued.catalogue_version()
    with pytest.raises(NotFound, match="'a__nothing'"):
        await catalogued.curate_tool("a__nothing", {"title": "x"})
    assert await catalogued.list_tool_overrides() == []
    assert await catalogued.catalogue_version() == before


async def test_an_alias_that_is_another_tools_name_conflicts_naming_both(
    catalogued: Store,
) -> None:
    with pytest.raises(Conflict) as raised:
        await catalogued.curate_tool("a__send_mail", {"alias": "b__open_issue"})
    assert "'a__send_mail'" in str(raised.value) and "'b__open_issue'" in str(raised.value)
    assert await catalogued.get_tool_override("a__send_mail") is None


async def test_an_alias_that_is_another_tools_alias_conflicts_naming_both(
    catalogued: Store,
) -> None:
    await catalogued.curate_tool("b__open_issue", {"alias": "mail"})
    with pytest.raises(Conflict) as raised:
        await catalogued.curate_tool("a__send_mail", {"alias": "mail"})
    message = str(raised.value)
    assert "'a__send_mail'" in message and "'b__open_issue'" in message
    assert await catalogued.get_tool_override("a__send_mail") is None


async def test_racing_curations_taking_one_alias_have_exactly_one_winner(
    catalogued: Store,
) -> None:
    outcomes = await asyncio.gather(
        catalogued.curate_tool("a__send_mail", {"alias": "mail"}),
        catalogued.curate_tool("a__read_mail", {"alias": "mail"}),
        catalogued.curate_tool("b__open_issue", {"alias": "mail"}),
        return_exceptions=True,
    )
    assert sum(isinstance(o, ToolOverride) for o in outcomes) == 1
    assert all(isinstance(o, ToolOverride | Conflict) for o in outcomes)
    assert [o.alias for o in await catalogued.list_tool_overrides()] == ["mail"]


async def test_a_server_keeps_its_tags_and_tool_mode(store: Store) -> None:
    created = await store.create_server(
        ServerRecord(id="mail", name="Mail", tags=("mail", "outbound"), tool_mode="search")
    )
    assert (created.tags, created.tool_mode) == (("mail", "outbound"), "search")
    got = await store.get_server("mail")
    assert got is not None and (got.tags, got.tool_mode) == (("mail", "outbound"), "search")
    plain = await store.create_server(ServerRecord(id="plain", name="Plain"))
    assert (plain.tags, plain.tool_mode) == ((), "list")
