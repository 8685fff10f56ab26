"""The OpenAPI backend through the gateway, against real REST services on loopback: a service
serving its own OpenAPI 3.1 document, and the Swagger Petstore's OpenAPI 3.0 document (from
the npm package `@readme/oas-examples`) served with a small implementation of some of its
operations. Registration answers, tools/list on /rpc
and /mcp, how arguments become requests and responses results, and every kind of bad
document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from gateway.contracts import Backend, BackendError, UpstreamConfig
from gateway.settings import Settings
from gateway_plugins.backend_openapi import MAX_SPEC_BYTES
from gateway_plugins.openapi.mapping import map_api
from tests.backends.conftest import installed_plugins, served
from tests.conftest import Client, GatewayFactory, free_port, rpc
from tests.transports.conftest import call, open_session
from tests.upstreams.openapi.petstore import API_KEY as PET_KEY
from tests.upstreams.openapi.petstore import Petstore
from tests.upstreams.openapi.service import (
    API_KEY,
    BIG_BYTES,
    SKIPPED,
    TOOLS,
    ItemsService,
    document,
)

JSON = dict[str, Any]
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
PETSTORE_TOOLS = {
    "addPet",
    "updatePet",
    "findPetsByStatus",
    "findPetsByTags",
    "getPetById",
    "updatePetWithForm",
    "deletePet",
    "uploadFile",
    "getInventory",
    "placeOrder",
    "getOrderById",
    "deleteOrder",
    "createUser",
    "createUsersWithArrayInput",
    "createUsersWithListInput",
    "loginUser",
    "logoutUser",
    "getUserByName",
    "updateUser",
    "deleteUser",
}


@pytest.fixture
async def items() -> AsyncIterator[tuple[ItemsService, str]]:
    service = ItemsService()
    async with served(service.app()) as url:
        yield service, url


@pytest.fixture
async def petstore(petstore_document: Path) -> AsyncIterator[tuple[Petstore, str]]:
    store = Petstore(petstore_document)
    async with served(store.app()) as url:
        yield store, url


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway()


async def register(client: Client, admin: dict[str, str], body: JSON, expected: int = 201) -> JSON:
    """The answer to registering `body` as an openapi upstream, which must have `expected`
    as its status."""
    response = await client.post("/upstreams", json={"transport": "openapi", **body}, headers=admin)
    answer: JSON = await response.json()
    assert response.status == expected, answer
    return answer


async def refusal(client: Client, admin: dict[str, str], body: JSON, expected: int) -> str:
    """The error message of a registration refused with `expected`."""
    message: str = (await register(client, admin, body, expected))["error"]["message"]
    return message


async def register_items(client: Client, admin: dict[str, str], url: str, **extra: Any) -> JSON:
    body = {"name": "items", "url": f"{url}/openapi.json", "headers": {"X-Api-Key": API_KEY}}
    return await register(client, admin, {**body, **extra})


async def call_tool(client: Client, headers: dict[str, str], name: str, arguments: JSON) -> JSON:
    answer = await rpc(client, "tools/call", {"name": name, "arguments": arguments}, headers)
    assert "result" in answer, answer
    result: JSON = answer["result"]
    return result


async def tools_by_name(client: Client, headers: dict[str, str]) -> dict[str, JSON]:
    answer = await rpc(client, "tools/list", {}, headers)
    return {tool["name"]: tool for tool in answer["result"]["tools"]}


# --- registration ---------------------------------------------------------------------------


async def test_registering_by_url_answers_with_the_tool_count_and_each_skipped_operation_and_why(
    client: Client, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    _, url = items
    answer = await register_items(client, admin_headers, url)
    assert answer["transport"] == "openapi"
    assert answer["tools"] == len(TOOLS)
    assert answer["headers"] == ["X-Api-Key"]
    assert API_KEY not in orjson.dumps(answer).decode()
    notes = answer["notes"]
    assert notes["base_url"] == f"{url}/api"
    assert notes["operations"] == len(TOOLS)
    assert {s["operation"]: s["reason"] for s in notes["skipped"]} == SKIPPED
    assert notes["skipped_total"] == len(SKIPPED)


async def test_the_skipped_operations_stay_visible_on_the_upstream(
    client: Client, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    view = await (await client.get("/upstreams/items", headers=admin_headers)).json()
    assert {s["operation"] for s in view["notes"]["skipped"]} == set(SKIPPED)


async def test_a_yaml_document_maps_like_its_json_twin(
    client: Client, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    _, url = items
    answer = await register(
        client,
        admin_headers,
        {"name": "items", "url": f"{url}/openapi.yaml", "headers": {"X-Api-Key": API_KEY}},
    )
    assert answer["tools"] == len(TOOLS)


async def test_an_inline_document_with_a_base_url_needs_no_document_url(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    service, url = items
    answer = await register(
        client,
        admin_headers,
        {
            "name": "items",
            "spec": document(),
            "base_url": f"{url}/api",
            "headers": {"X-Api-Key": API_KEY},
        },
    )
    assert answer["url"] == ""
    assert answer["options"]["base_url"] == f"{url}/api"
    result = await call_tool(client, user_headers, "items__getNote", {"id": 3})
    assert result["content"][0]["text"] == "note number 3"
    assert service.served == {}, "the document was never fetched"


async def test_an_inline_document_given_as_yaml_text_is_accepted(
    client: Client, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    _, url = items
    answer = await register(
        client,
        admin_headers,
        {"name": "items", "spec": yaml.safe_dump(document()), "base_url": f"{url}/api"},
    )
    assert answer["tools"] == len(TOOLS)


async def test_a_change_of_base_url_keeps_the_inline_document_and_moves_the_calls(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    service, url = items
    body = {"name": "items", "spec": document(), "base_url": "http://127.0.0.1:1/api"}
    await register(client, admin_headers, body)
    failed = await call_tool(client, user_headers, "items__getNote", {"id": 4})
    assert failed["isError"] is True

    change = {"base_url": f"{url}/api", "headers": {"X-Api-Key": API_KEY}}
    response = await client.patch("/upstreams/items", json=change, headers=admin_headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["notes"]["base_url"] == f"{url}/api"
    result = await call_tool(client, user_headers, "items__getNote", {"id": 4})
    assert result["content"][0]["text"] == "note number 4"
    assert service.served == {}


async def test_per_client_sessions_are_refused_for_an_openapi_upstream(
    client: Client, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    _, url = items
    body = {"name": "items", "url": f"{url}/openapi.json", "session": "per-client"}
    message = await refusal(client, admin_headers, body, 422)
    assert "'session': 'per-client' needs a transport" in message


# --- tools/list ---------------------------------------------------------------------------


async def test_tools_list_on_rpc_shows_names_descriptions_hints_and_schemas_with_refs_inlined(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    tools = await tools_by_name(client, user_headers)
    assert {name for name in tools if name.startswith("items__")} == {
        f"items__{name}" for name in TOOLS
    }

    get_item = tools["items__getItem"]
    assert get_item["description"] == "Fetch one item\n\nEchoes how the request arrived."
    assert get_item["annotations"]["readOnlyHint"] is True
    schema = get_item["inputSchema"]
    assert set(schema["properties"]) == {"item_id", "verbose", "X-Trace"}
    assert schema["required"] == ["item_id"]
    assert schema["properties"]["X-Trace"]["description"] == "Tracing tag"

    body = tools["items__createItem"]["inputSchema"]["properties"]["body"]
    assert tools["items__createItem"]["inputSchema"]["required"] == ["body"]
    assert body["required"] == ["name", "price"]
    assert body["properties"]["tags"]["items"]["properties"] == {"name": {"type": "string"}}
    assert "$ref" not in orjson.dumps(tools).decode()

    tree = tools["items__post_trees"]["inputSchema"]["properties"]["body"]
    depth = 0
    while "properties" in tree:
        tree = tree["properties"]["children"]["items"]
        depth += 1
    assert depth == 3
    assert "recursive Node" in tree["description"]
    assert tools["items__deleteItem"]["annotations"]["destructiveHint"] is True


async def test_tools_list_on_mcp_shows_the_same_tools(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    session = await open_session(client, headers=user_headers)
    answer = await call(client, session, "tools/list", {}, headers=user_headers)
    names = {tool["name"] for tool in answer["result"]["tools"]}
    assert {f"items__{name}" for name in TOOLS} <= names


# --- calls --------------------------------------------------------------------------------


async def test_a_call_puts_path_query_and_header_arguments_where_the_operation_says(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    result = await call_tool(
        client,
        user_headers,
        "items__getItem",
        {"item_id": "a/b c?", "verbose": True, "X-Trace": "trace-1"},
    )
    assert "isError" not in result, result
    assert result["structuredContent"] == {
        "id": "a/b c?",
        "raw_path": "/api/items/a%2Fb%20c%3F?verbose=true",
        "verbose": "true",
        "trace": "trace-1",
    }
    assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]


async def test_array_and_deep_object_query_arguments_and_an_array_answer(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    service, url = items
    await register_items(client, admin_headers, url)
    result = await call_tool(
        client, user_headers, "items__list_items", {"tag": ["x", "y z"], "filter": {"color": "red"}}
    )
    assert result["structuredContent"] == {
        "result": [{"tags": ["x", "y z"], "filter": {"filter[color]": "red"}}]
    }
    assert service.api_calls[-1] == ("GET", "/api/items?tag=x&tag=y%20z&filter%5Bcolor%5D=red")


async def test_the_body_argument_is_sent_as_the_json_request_body_on_mcp(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    session = await open_session(client, headers=user_headers)
    item = {"name": "lamp", "price": 12.5, "tags": [{"name": "light"}], "note": None}
    answer = await call(
        client,
        session,
        "tools/call",
        {"name": "items__createItem", "arguments": {"body": item}},
        headers=user_headers,
    )
    result = answer["result"]
    assert result["structuredContent"] == {"created": item, "content_type": "application/json"}


async def test_a_recursive_body_goes_through_whole(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    tree = {"label": "root", "children": [{"label": "leaf", "children": []}]}
    result = await call_tool(client, user_headers, "items__post_trees", {"body": tree})
    assert result["structuredContent"] == {"stored": tree}


async def test_a_missing_required_argument_is_an_error_naming_it_and_sends_nothing(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    service, url = items
    await register_items(client, admin_headers, url)
    answer = await rpc(
        client, "tools/call", {"name": "items__getItem", "arguments": {}}, user_headers
    )
    assert "item_id" in orjson.dumps(answer).decode()
    assert answer.get("error") or answer["result"]["isError"] is True
    assert service.api_calls == []


async def test_a_misspelt_argument_is_refused_naming_it_and_sends_nothing(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    service, url = items
    await register_items(client, admin_headers, url)
    arguments = {"item_id": "1", "verbos": True}
    answer = await rpc(
        client, "tools/call", {"name": "items__getItem", "arguments": arguments}, user_headers
    )
    assert "verbos" in orjson.dumps(answer).decode()
    assert answer.get("error") or answer["result"]["isError"] is True
    assert service.api_calls == []


async def test_a_non_2xx_status_is_an_error_result_with_the_status_and_a_short_excerpt(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    result = await call_tool(client, user_headers, "items__brewCoffee", {})
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert text.startswith("GET /teapot answered HTTP 418")
    assert "I am a teapot" in text
    assert len(text) < 600


async def test_plain_text_and_an_empty_answer_become_text(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    note = await call_tool(client, user_headers, "items__getNote", {"id": 7})
    assert note == {"content": [{"type": "text", "text": "note number 7"}]}
    deleted = await call_tool(client, user_headers, "items__deleteItem", {"item_id": "7"})
    assert deleted["content"][0]["text"] == "HTTP 204 No Content"
    assert "isError" not in deleted


async def test_without_the_api_key_header_the_api_refuses_and_the_call_says_so(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register(client, admin_headers, {"name": "items", "url": f"{url}/openapi.json"})
    result = await call_tool(client, user_headers, "items__getNote", {"id": 1})
    assert result["isError"] is True
    assert "HTTP 401" in result["content"][0]["text"]


async def test_an_operation_slower_than_the_tool_timeout_is_an_error_result(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    result = await call_tool(client, user_headers, "items__slow", {})
    assert result["isError"] is True
    # The backend's own bound and the gateway's are the same; either may speak first.
    text = result["content"][0]["text"]
    assert text.startswith("upstream 'items' did not answer") and text.endswith("within 2s")


async def test_an_answer_larger_than_the_upstream_bound_is_an_error_naming_the_setting(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    client = await gateway(max_upstream_response_bytes=BIG_BYTES // 2)
    _, url = items
    await register_items(client, admin_headers, url)
    result = await call_tool(client, user_headers, "items__big", {})
    assert result["isError"] is True
    assert f"MAX_UPSTREAM_RESPONSE_BYTES ({BIG_BYTES // 2} bytes)" in result["content"][0]["text"]
    small = await call_tool(client, user_headers, "items__getNote", {"id": 1})
    assert small["content"][0]["text"] == "note number 1"


# --- bad documents ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/invalid.json", 'not a valid OpenAPI 3.1.0 document: "info" is a required property'),
        ("/swagger.json", "only OpenAPI 3.0 and 3.1 documents are supported, not Swagger 2.0"),
        ("/external-ref.json", "points outside the document"),
        ("/moved.json", "redirects (HTTP 302)"),
        ("/missing.json", "answered HTTP 404"),
    ],
)
async def test_a_bad_document_url_is_refused_naming_why(
    client: Client,
    admin_headers: dict[str, str],
    items: tuple[ItemsService, str],
    path: str,
    expected: str,
) -> None:
    service, url = items
    message = await refusal(client, admin_headers, {"name": "bad", "url": url + path}, 502)
    assert expected in message
    assert service.served.get("/openapi.json") is None, "a redirect is never followed"


async def test_a_document_larger_than_the_cap_is_refused_naming_the_setting(
    gateway: GatewayFactory, admin_headers: dict[str, str], items: tuple[ItemsService, str]
) -> None:
    client = await gateway(plugin_values={MAX_SPEC_BYTES.name: 100_000})
    _, url = items
    message = await refusal(client, admin_headers, {"name": "big", "url": f"{url}/huge.json"}, 502)
    assert "OPENAPI_MAX_SPEC_BYTES (100000 bytes)" in message


async def test_an_unreachable_document_url_is_refused_naming_the_url(
    client: Client, admin_headers: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/openapi.json"
    message = await refusal(client, admin_headers, {"name": "gone", "url": url}, 502)
    assert f"the document URL {url} could not be read" in message


def nested(depth: int) -> JSON:
    """An object `depth` levels deep."""
    value: JSON = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "give 'url' (where the OpenAPI document is) or the document as 'spec'"),
        ({"spec": ["not", "a", "document"]}, "'spec' must be the OpenAPI document"),
        ({"spec": {"openapi": "3.1.0"}}, "'spec': not a valid OpenAPI 3.1.0 document"),
        ({"spec": BILLION_LAUGHS}, "expands (through YAML aliases) to more values"),
        ({"spec": nested(600)}, "'spec': the document is nested more than 200 levels deep"),
        ({"spec": orjson.dumps(nested(230)).decode()}, "nested more than 200 levels deep"),
        ({"spec": "a: " + "[" * 300 + "]" * 300}, "nested more than 200 levels deep"),
        ({"spec": document(), "base_url": "ftp://host/"}, "'base_url' must be an http"),
        ({"url": "http://127.0.0.1:1/x.json", "servers": []}, "unknown field(s): servers"),
    ],
)
async def test_bad_registration_fields_are_refused_with_422(
    client: Client, admin_headers: dict[str, str], body: JSON, expected: str
) -> None:
    message = await refusal(client, admin_headers, {"name": "bad", **body}, 422)
    assert expected in message


async def test_an_inline_document_with_only_a_relative_server_needs_a_base_url(
    client: Client, admin_headers: dict[str, str]
) -> None:
    message = await refusal(client, admin_headers, {"name": "rel", "spec": document()}, 502)
    assert "give 'base_url'" in message


async def test_a_base_url_at_a_link_local_address_is_refused(
    client: Client, admin_headers: dict[str, str]
) -> None:
    body = {"name": "meta", "spec": document(), "base_url": "http://169.254.169.254/api"}
    message = await refusal(client, admin_headers, body, 502)
    assert "link-local addresses are never upstreams" in message


async def test_a_failed_registration_leaves_other_upstreams_serving(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    items: tuple[ItemsService, str],
) -> None:
    _, url = items
    await register_items(client, admin_headers, url)
    await register(client, admin_headers, {"name": "bad", "url": f"{url}/invalid.json"}, 502)
    result = await call_tool(client, user_headers, "items__getNote", {"id": 2})
    assert result["content"][0]["text"] == "note number 2"
    listing = await (await client.get("/upstreams", headers=admin_headers)).json()
    assert [u["name"] for u in listing["upstreams"] if u["transport"] == "openapi"] == ["items"]


# --- the Petstore -------------------------------------------------------------------------


async def test_the_petstore_document_maps_every_operation_its_optional_form_bodies_left_out(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    petstore: tuple[Petstore, str],
) -> None:
    _, url = petstore
    answer = await register(
        client,
        admin_headers,
        {"name": "pets", "url": f"{url}/openapi.json", "base_url": f"{url}/v2"},
    )
    assert answer["tools"] == len(PETSTORE_TOOLS)
    assert answer["notes"] == {"base_url": f"{url}/v2", "operations": len(PETSTORE_TOOLS)}
    tools = await tools_by_name(client, user_headers)
    pets = {name for name in tools if name.startswith("pets__")}
    assert pets == {f"pets__{name}" for name in PETSTORE_TOOLS}
    # Their request bodies (urlencoded, multipart) are optional and not JSON: the tools take
    # the path parameter alone and send no body.
    pet_id = {"type": "integer", "format": "int64"}
    for name, about in (
        ("updatePetWithForm", "ID of pet that needs to be updated"),
        ("uploadFile", "ID of pet to update"),
    ):
        assert tools[f"pets__{name}"]["inputSchema"] == {
            "type": "object",
            "properties": {"petId": {**pet_id, "description": about}},
            "additionalProperties": False,
            "required": ["petId"],
        }


async def test_petstore_calls_add_find_fetch_and_delete_pets(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    petstore: tuple[Petstore, str],
) -> None:
    store, url = petstore
    await register(
        client,
        admin_headers,
        {
            "name": "pets",
            "url": f"{url}/openapi.json",
            "base_url": f"{url}/v2",
            "headers": {"api_key": PET_KEY},
        },
    )
    pet = {"id": 10, "name": "doggie", "photoUrls": [], "status": "available"}
    added = await call_tool(client, user_headers, "pets__addPet", {"body": pet})
    assert added["structuredContent"] == pet

    fetched = await call_tool(client, user_headers, "pets__getPetById", {"petId": 10})
    assert fetched["structuredContent"]["name"] == "doggie"
    found = await call_tool(
        client, user_headers, "pets__findPetsByStatus", {"status": ["available"]}
    )
    assert found["structuredContent"] == {"result": [pet]}
    inventory = await call_tool(client, user_headers, "pets__getInventory", {})
    assert inventory["structuredContent"] == {"available": 1}

    deleted = await call_tool(client, user_headers, "pets__deletePet", {"petId": 10})
    assert deleted["content"][0]["text"] == "Pet deleted"
    assert store.deleted_with_key == [PET_KEY]
    missing = await call_tool(client, user_headers, "pets__getPetById", {"petId": 10})
    assert missing["isError"] is True
    assert "GET /pet/{petId} answered HTTP 404" in missing["content"][0]["text"]
    assert "Pet not found" in missing["content"][0]["text"]


async def test_a_petstore_argument_of_the_wrong_type_is_refused_before_the_api(
    client: Client,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    petstore: tuple[Petstore, str],
) -> None:
    store, url = petstore
    await register(
        client,
        admin_headers,
        {"name": "pets", "url": f"{url}/openapi.json", "base_url": f"{url}/v2"},
    )
    answer = await rpc(
        client,
        "tools/call",
        {"name": "pets__getPetById", "arguments": {"petId": "ten"}},
        user_headers,
    )
    assert "petId" in orjson.dumps(answer).decode()
    assert store.pets == {}


# --- mapping rules on their own -----------------------------------------------------------


def test_openapi_30_nullable_and_boolean_exclusive_bounds_become_json_schema() -> None:
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "nullable", "version": "1"},
        "paths": {
            "/n": {
                "post": {
                    "operationId": "n",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "a": {"type": "string", "nullable": True},
                                        "b": {
                                            "type": "number",
                                            "minimum": 0,
                                            "exclusiveMinimum": True,
                                        },
                                    },
                                }
                            }
                        }
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    api = map_api(doc, 128, 10)
    props = api.operations["n"].tool.input_schema["properties"]["body"]["properties"]
    assert props == {
        "a": {"type": ["string", "null"]},
        "b": {"type": "number", "exclusiveMinimum": 0},
    }


def test_names_are_sanitised_cut_to_fit_the_prefix_and_capped_in_number() -> None:
    doc = document()
    api = map_api(doc, 5, 3)
    assert set(api.operations) == {"getIt", "delet", "list_"}
    assert [s.reason for s in api.skipped].count("past OPENAPI_MAX_TOOLS (3) operations") == 11


# --- the backend on its own ---------------------------------------------------------------


async def test_once_loaded_listing_tools_also_checks_that_the_api_still_answers() -> None:
    spec = installed_plugins().backend_for("openapi")
    assert spec is not None
    service = ItemsService()
    backend: Backend | None = None
    try:
        async with served(service.app()) as url:
            config = UpstreamConfig("items", "openapi", f"{url}/openapi.json", prefix="items")
            backend = spec.factory(config, Settings(tool_timeout=5))
            await backend.start()
            assert len(await backend.list_tools()) == len(TOOLS)
            assert service.served["/api"] == 0, "the first listing loads, nothing more"
            assert len(await backend.list_tools()) == len(TOOLS)
            assert service.served["/api"] == 1
        with pytest.raises(BackendError, match=r"upstream 'items' could not be reached at"):
            await backend.list_tools()
    finally:
        if backend is not None:
            await backend.close()


def _echo_document() -> JSON:
    path_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    headers = [
        {"name": "X Not A Token", "in": "header", "schema": {"type": "string"}},
        {"name": "X-Fine", "in": "header", "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "echo", "version": "1"},
        "paths": {
            "/users/{id}/profile": {"get": {"operationId": "profile", "parameters": [path_id]}},
            "/headers": {"get": {"operationId": "headers", "parameters": headers}},
        },
    }


async def test_a_path_argument_of_dot_segments_is_refused_and_sends_nothing() -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"path": request.raw_path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    spec = installed_plugins().backend_for("openapi")
    assert spec is not None
    async with served(app) as url:
        options = {"spec": _echo_document(), "base_url": url}
        config = UpstreamConfig("echo", "openapi", "", prefix="echo", options=options)
        backend = spec.factory(config, Settings(tool_timeout=5))
        await backend.start()
        try:
            for value in ("..", ".", ""):
                answer = await backend.call_tool("profile", {"id": value}, 5)
                assert answer["isError"] is True
                assert "path argument 'id' must not be empty, '.' or '..'" in str(answer)
            assert seen == []
            fine = await backend.call_tool("profile", {"id": "a/.."}, 5)
            assert fine["structuredContent"] == {"path": "/users/a%2F../profile"}
        finally:
            await backend.close()


def test_a_header_parameter_whose_name_is_no_http_token_is_left_out() -> None:
    api = map_api(_echo_document(), 50, 100)
    properties = api.operations["headers"].tool.input_schema["properties"]
    assert set(properties) == {"X-Fine"}
    required = {"name": "X Bad", "in": "header", "required": True, "schema": {"type": "string"}}
    doc = _echo_document()
    doc["paths"]["/headers"]["get"]["parameters"].append(required)
    skipped = map_api(doc, 50, 100).skipped
    assert [s.reason for s in skipped] == ["its required header parameter 'X Bad' cannot be sent"]
