"""Some operations of the Swagger Petstore, behind its OpenAPI 3.0 document as the npm
package `@readme/oas-examples` publishes it (`3.0/json/petstore.json`, served unchanged):
adding, finding, fetching and deleting pets, and the store's inventory, which needs the
`api_key` header. The document's server is `http://petstore.swagger.io/v2`, so the
operations live under `/v2` here too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

PACKAGE = "@readme/oas-examples@8"
DOCUMENT_IN_PACKAGE = "node_modules/@readme/oas-examples/3.0/json/petstore.json"
"""Where the document is in the folder the package was installed into."""
API_KEY = "special-key"
BASE = "/v2"


class Petstore:
    def __init__(self, document: Path) -> None:
        self.document_path = document
        self.pets: dict[int, dict[str, Any]] = {}
        self.deleted_with_key: list[str | None] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/openapi.json", self.document)
        app.router.add_post(f"{BASE}/pet", self.add_pet)
        app.router.add_get(f"{BASE}/pet/findByStatus", self.find_by_status)
        app.router.add_get(f"{BASE}/pet/{{petId}}", self.get_pet)
        app.router.add_delete(f"{BASE}/pet/{{petId}}", self.delete_pet)
        app.router.add_get(f"{BASE}/store/inventory", self.inventory)
        return app

    async def document(self, request: web.Request) -> web.Response:
        body = self.document_path.read_bytes()
        return web.Response(body=body, content_type="application/json")

    async def add_pet(self, request: web.Request) -> web.Response:
        pet = await request.json()
        if not isinstance(pet, dict) or "name" not in pet or "photoUrls" not in pet:
            return web.json_response({"code": 405, "message": "Invalid input"}, status=405)
        pet.setdefault("id", len(self.pets) + 1)
        pet.setdefault("status", "available")
        self.pets[int(pet["id"])] = pet
        return web.json_response(pet)

    async def find_by_status(self, request: web.Request) -> web.Response:
        wanted = set(request.query.getall("status", ["available"]))
        return web.json_response([p for p in self.pets.values() if p.get("status") in wanted])

    def _pet_id(self, request: web.Request) -> int:
        try:
            return int(request.match_info["petId"])
        except ValueError:
            raise web.HTTPBadRequest(text="Invalid ID supplied") from None

    async def get_pet(self, request: web.Request) -> web.Response:
        pet = self.pets.get(self._pet_id(request))
        if pet is None:
            return web.json_response({"code": 404, "message": "Pet not found"}, status=404)
        return web.json_response(pet)

    async def delete_pet(self, request: web.Request) -> web.Response:
        self.deleted_with_key.append(request.headers.get("api_key"))
        if self.pets.pop(self._pet_id(request), None) is None:
            return web.json_response({"code": 404, "message": "Pet not found"}, status=404)
        return web.Response(text="Pet deleted")

    async def inventory(self, request: web.Request) -> web.Response:
        if request.headers.get("api_key") != API_KEY:
            return web.json_response({"code": 401, "message": "api_key needed"}, status=401)
        counts: dict[str, int] = {}
        for pet in self.pets.values():
            counts[pet["status"]] = counts.get(pet["status"], 0) + 1
        return web.json_response(counts)
