"""A small REST service that serves its own OpenAPI 3.1 document, for the OpenAPI backend's
tests: path, query and header parameters, JSON bodies behind `$ref`s (one recursive), an
error status, plain text, a slow operation, and operations the gateway must skip. Every API
call needs the `X-Api-Key` header; the document does not. It counts what it serves.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import yaml
from aiohttp import web

JSON = dict[str, Any]
API_KEY = "k3y-for-items"
BIG_BYTES = 200_000
TEAPOT_BODY = "I am a teapot and brew no coffee. " * 200

OK: JSON = {"200": {"description": "done"}}


def document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Items", "version": "1.0"},
        # Relative: it resolves against the document's URL.
        "servers": [{"url": "/api"}],
        "components": {
            "schemas": {
                "Tag": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
                "Item": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "price": {"type": "number", "minimum": 0},
                        "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}},
                        "note": {"type": ["string", "null"]},
                    },
                    "required": ["name", "price"],
                },
                "Node": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "children": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Node"},
                        },
                    },
                },
            },
            "parameters": {
                "Trace": {
                    "name": "X-Trace",
                    "in": "header",
                    "description": "Tracing tag",
                    "schema": {"type": "string"},
                }
            },
            "requestBodies": {
                "ItemBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                    },
                }
            },
        },
        "paths": {
            "/items/{item_id}": {
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "get": {
                    "operationId": "getItem",
                    "summary": "Fetch one item",
                    "description": "Echoes how the request arrived.",
                    "parameters": [
                        {"name": "verbose", "in": "query", "schema": {"type": "boolean"}},
                        {"$ref": "#/components/parameters/Trace"},
                    ],
                    "responses": OK,
                },
                "delete": {
                    "operationId": "deleteItem",
                    "responses": {"204": {"description": "gone"}},
                },
            },
            "/items": {
                "get": {
                    "operationId": "list items!",
                    "summary": "List items",
                    "parameters": [
                        {
                            "name": "tag",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                        },
                        {
                            "name": "filter",
                            "in": "query",
                            "style": "deepObject",
                            "explode": True,
                            "schema": {"type": "object"},
                        },
                    ],
                    "responses": OK,
                },
                "post": {
                    "operationId": "createItem",
                    "summary": "Create an item",
                    "requestBody": {"$ref": "#/components/requestBodies/ItemBody"},
                    "responses": {"201": {"description": "created"}},
                },
            },
            "/trees": {
                "post": {
                    "summary": "Store a tree",
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}
                        }
                    },
                    "responses": OK,
                }
            },
            "/teapot": {"get": {"operationId": "brewCoffee", "responses": OK}},
            "/notes/{id}": {
                "get": {
                    "operationId": "getNote",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": OK,
                }
            },
            "/slow": {"get": {"operationId": "slow", "responses": OK}},
            "/big": {"get": {"operationId": "big", "responses": OK}},
            "/upload": {
                "post": {
                    "operationId": "upload",
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {"schema": {"type": "object"}}},
                    },
                    "responses": OK,
                }
            },
            "/session": {
                "get": {
                    "operationId": "whoami",
                    "parameters": [
                        {
                            "name": "sid",
                            "in": "cookie",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": OK,
                }
            },
            "/widgets/{widget_id}": {"get": {"operationId": "getWidget", "responses": OK}},
            "/dup": {"get": {"operationId": "getItem!", "responses": OK}},
            "/clash": {
                "post": {
                    "operationId": "clash",
                    "parameters": [{"name": "body", "in": "query", "schema": {"type": "string"}}],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    },
                    "responses": OK,
                }
            },
        },
    }


SKIPPED = {
    "POST /upload": "its request body is not JSON (multipart/form-data)",
    "GET /session": "its required cookie parameter 'sid' cannot be sent",
    "GET /widgets/{widget_id}": "its path parameter {widget_id} is not declared",
    "GET /dup": "tool name 'getItem' is taken by GET /items/{item_id}",
    "POST /clash": "a parameter is named 'body', which the request body takes",
}
TOOLS = {
    "getItem",
    "deleteItem",
    "list_items",
    "createItem",
    "post_trees",
    "brewCoffee",
    "getNote",
    "slow",
    "big",
}


class ItemsService:
    """The service's state: what it was asked, for the tests to read."""

    def __init__(self) -> None:
        self.served = Counter[str]()
        self.api_calls: list[tuple[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.key_check])
        api = web.RouteTableDef()
        api.get("/api/items/{item_id}")(self.get_item)
        api.delete("/api/items/{item_id}")(self.delete_item)
        api.get("/api/items")(self.list_items)
        api.post("/api/items")(self.create_item)
        api.post("/api/trees")(self.store_tree)
        api.get("/api/teapot")(self.teapot)
        api.get("/api/notes/{id}")(self.note)
        api.get("/api/slow")(self.slow)
        api.get("/api/big")(self.big)
        app.add_routes(api)
        app.router.add_get("/openapi.json", self.doc_json)
        app.router.add_get("/openapi.yaml", self.doc_yaml)
        app.router.add_get("/moved.json", self.moved)
        app.router.add_get("/invalid.json", self.invalid)
        app.router.add_get("/swagger.json", self.swagger)
        app.router.add_get("/huge.json", self.huge)
        app.router.add_get("/external-ref.json", self.external_ref)
        app.router.add_get("/missing.json", self.missing)
        return app

    @web.middleware
    async def key_check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            self.api_calls.append((request.method, request.path_qs))
            if request.headers.get("X-Api-Key") != API_KEY:
                return web.json_response({"error": "no key"}, status=401)
        else:
            self.served[request.path] += 1
        response: web.StreamResponse = await handler(request)
        return response

    # --- documents ---

    async def doc_json(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(document()), content_type="application/json")

    async def doc_yaml(self, request: web.Request) -> web.Response:
        return web.Response(text=yaml.safe_dump(document()), content_type="application/yaml")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/openapi.json")

    async def invalid(self, request: web.Request) -> web.Response:
        return web.json_response({"openapi": "3.1.0", "paths": {}})

    async def swagger(self, request: web.Request) -> web.Response:
        return web.json_response({"swagger": "2.0", "info": {"title": "x", "version": "1"}})

    async def huge(self, request: web.Request) -> web.Response:
        doc = document()
        doc["info"]["description"] = "x" * 200_000
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def external_ref(self, request: web.Request) -> web.Response:
        doc = document()
        doc["components"]["schemas"]["Tag"] = {"$ref": "http://169.254.169.254/latest/tag.json"}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def missing(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "not here"}, status=404)

    # --- the API ---

    async def get_item(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": request.match_info["item_id"],
                "raw_path": request.raw_path,
                "verbose": request.query.get("verbose"),
                "trace": request.headers.get("X-Trace"),
            }
        )

    async def delete_item(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def list_items(self, request: web.Request) -> web.Response:
        filters = {k: v for k, v in request.query.items() if k.startswith("filter[")}
        return web.json_response([{"tags": request.query.getall("tag", []), "filter": filters}])

    async def create_item(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"created": body, "content_type": request.content_type}, status=201
        )

    async def store_tree(self, request: web.Request) -> web.Response:
        return web.json_response({"stored": await request.json()})

    async def teapot(self, request: web.Request) -> web.Response:
        return web.Response(status=418, text=TEAPOT_BODY)

    async def note(self, request: web.Request) -> web.Response:
        return web.Response(text=f"note number {request.match_info['id']}")

    async def big(self, request: web.Request) -> web.Response:
        return web.json_response({"data": "x" * BIG_BYTES})

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})
