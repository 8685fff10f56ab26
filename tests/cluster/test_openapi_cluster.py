"""An OpenAPI upstream under gunicorn with 2 workers: registered through one request to one
worker, then called through both, each worker loading the document once for itself."""

from __future__ import annotations

import time

import pytest

from tests.backends.conftest import served
from tests.cluster.deployment import burst, fetch, worker_views
from tests.support.gunicorn_process import ADMIN, USER, StartGunicorn, gunicorn_env
from tests.upstreams.openapi.service import API_KEY, SKIPPED, TOOLS, ItemsService

pytestmark = pytest.mark.timeout(180)


async def test_an_openapi_upstream_registered_through_one_worker_is_called_through_both(
    gunicorn: StartGunicorn, sqlite_url: str
) -> None:
    service = ItemsService()
    async with served(service.app()) as url:
        gateway = gunicorn(gunicorn_env(sqlite_url, CACHE_TYPE="database", TOOL_TIMEOUT="10"))
        assert len(await worker_views(gateway.url, workers=2, within=30.0)) == 2
        registration = {
            "name": "items",
            "transport": "openapi",
            "url": f"{url}/openapi.json",
            "headers": {"X-Api-Key": API_KEY},
        }
        reply = await fetch("POST", f"{gateway.url}/upstreams", registration, ADMIN, timeout=30)
        assert reply.status == 201, reply.body
        assert reply.body["tools"] == len(TOOLS)
        assert {s["operation"] for s in reply.body["notes"]["skipped"]} == set(SKIPPED)
        assert service.served["/openapi.json"] == 1

        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "items__getNote", "arguments": {"id": 5}},
        }
        # Each worker's backend fetches the document on its first call: three fetches in
        # all once both workers have called the API.
        deadline = time.monotonic() + 60
        answered = 0
        while service.served["/openapi.json"] < 3:
            assert time.monotonic() < deadline, f"fetches: {service.served}; {gateway.log()}"
            replies = await burst(fetch("POST", f"{gateway.url}/rpc", call, USER) for _ in range(8))
            for answer in replies:
                assert answer.status == 200, answer.body
                if "Unknown tool" in str(answer.body.get("error")):
                    continue  # this worker has not loaded the new catalogue yet
                result = answer.body["result"]
                assert result["content"] == [{"type": "text", "text": "note number 5"}], answer
                answered += 1
        assert service.served["/openapi.json"] == 3
        assert answered >= 2
