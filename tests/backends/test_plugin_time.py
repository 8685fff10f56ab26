"""The gateway-time plugin package, as the gateway finds and uses it.

The package lives in `plugins/gateway-time` and must be installed for this suite
(`pip install -e plugins/gateway-time`); its own tests cover the tools in more detail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.contracts import Backend
from gateway.plugins import Plugins
from gateway.settings import Settings
from tests.backends.conftest import backend_for


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return Plugins.load(Settings())


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with backend_for("time", name="time") as backend:
        yield backend


async def convert(backend: Backend, time: str, source: str, target: str) -> dict[str, Any]:
    arguments = {"source_timezone": source, "target_timezone": target, "time": time}
    result: dict[str, Any] = await backend.call_tool("convert_time", arguments, timeout=1)
    return result


def structured(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result["content"][0]["text"]
    data: dict[str, Any] = result["structuredContent"]
    return data


def test_entry_point_registers_a_local_backend_named_time(plugins: Plugins) -> None:
    [spec] = [spec for spec in plugins.local_backends() if spec.name == "time"]
    assert spec.transport == "time"
    assert "time" not in plugins.transports()


async def test_backend_lists_get_system_time_and_convert_time(backend: Backend) -> None:
    listed = {tool.name: tool for tool in await backend.list_tools()}
    assert set(listed) == {"get_system_time", "convert_time"}
    assert all(tool.output_schema for tool in listed.values())
    assert listed["convert_time"].input_schema["additionalProperties"] is False


async def test_berlin_nine_is_dublin_eight(backend: Backend) -> None:
    data = structured(await convert(backend, "09:00", "Europe/Berlin", "Europe/Dublin"))
    today_in_berlin = datetime.fromisoformat(data["source"]["datetime"])
    assert today_in_berlin.hour == 9
    dublin = datetime.fromisoformat(data["target"]["datetime"])
    assert (dublin.hour, dublin.minute) == (8, 0)
    assert dublin == today_in_berlin
    assert data["time_difference"] == "-1.0h"


async def test_iso_input_uses_daylight_saving_of_its_date(backend: Backend) -> None:
    march = structured(
        await convert(backend, "2024-03-15T09:00", "Europe/Berlin", "America/New_York")
    )
    assert march["target"]["datetime"] == "2024-03-15T04:00:00-04:00"
    april = structured(
        await convert(backend, "2024-04-15T09:00", "Europe/Berlin", "America/New_York")
    )
    assert april["target"]["datetime"] == "2024-04-15T03:00:00-04:00"


async def test_unknown_zone_is_an_error_result_naming_it(backend: Backend) -> None:
    result = await convert(backend, "09:00", "Europe/Atlantis", "UTC")
    assert result["isError"] is True
    assert "'Europe/Atlantis'" in result["content"][0]["text"]


async def test_bad_time_is_an_error_result(backend: Backend) -> None:
    result = await convert(backend, "half past nine", "UTC", "UTC")
    assert result["isError"] is True
    assert "'half past nine'" in result["content"][0]["text"]


async def test_system_time_defaults_to_utc(backend: Backend) -> None:
    data = structured(await backend.call_tool("get_system_time", {}, timeout=1))
    assert data["timezone"] == "UTC"
    shown = datetime.fromisoformat(data["datetime"])
    assert abs((shown - datetime.now(UTC)).total_seconds()) < 5


async def test_system_time_in_a_named_zone(backend: Backend) -> None:
    result = await backend.call_tool("get_system_time", {"timezone": "Asia/Kolkata"}, timeout=1)
    data = structured(result)
    assert data["timezone"] == "Asia/Kolkata"
    assert data["datetime"].endswith("+05:30")
    assert data["is_dst"] is False
