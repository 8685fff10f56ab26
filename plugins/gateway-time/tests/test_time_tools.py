"""The time tools, called directly and through the backend, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from importlib.metadata import entry_points
from typing import Any

import jsonschema
import orjson
import pytest
from gateway.plugin import BackendError, BackendSpec, Settings, UpstreamConfig

from gateway_time import gateway_register_backends, tools
from gateway_time.backend import TimeBackend

NOON_UTC = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def at(moment: datetime) -> tools.Clock:
    def now(tz: tzinfo) -> datetime:
        return moment.astimezone(tz)

    return now


def convert(time: str, source: str = "Europe/Berlin", target: str = "Europe/Dublin") -> Any:
    arguments = {"source_timezone": source, "target_timezone": target, "time": time}
    return tools.convert_time(arguments, now=at(NOON_UTC))


def structured(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result["content"][0]["text"]
    data: dict[str, Any] = result["structuredContent"]
    return data


def error_text(result: dict[str, Any]) -> str:
    assert result["isError"] is True
    assert "structuredContent" not in result
    text: str = result["content"][0]["text"]
    return text


# --- definitions -----------------------------------------------------------------------


def test_both_tools_have_valid_strict_input_and_output_schemas() -> None:
    assert [tool.name for tool in tools.TOOLS] == ["get_system_time", "convert_time"]
    for tool in tools.TOOLS:
        assert tool.description
        for schema in (tool.input_schema, tool.output_schema):
            assert schema is not None
            jsonschema.Draft202012Validator.check_schema(schema)
            assert schema["type"] == "object"
            assert schema["additionalProperties"] is False
    assert tools.CONVERT_TIME.input_schema["required"] == [
        "source_timezone",
        "target_timezone",
        "time",
    ]
    assert "required" not in tools.GET_SYSTEM_TIME.input_schema


def test_results_match_the_output_schemas_and_repeat_as_json_text() -> None:
    for tool, result in (
        (tools.CONVERT_TIME, convert("09:00")),
        (tools.GET_SYSTEM_TIME, tools.get_system_time({}, now=at(NOON_UTC))),
    ):
        jsonschema.validate(structured(result), tool.output_schema or {})
        assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]
        assert result["content"][0]["type"] == "text"


# --- convert_time ------------------------------------------------------------------------


def test_berlin_nine_is_dublin_eight_today() -> None:
    data = structured(convert("09:00"))
    assert data == {
        "source": {
            "timezone": "Europe/Berlin",
            "datetime": "2024-07-01T09:00:00+02:00",
            "is_dst": True,
        },
        "target": {
            "timezone": "Europe/Dublin",
            "datetime": "2024-07-01T08:00:00+01:00",
            "is_dst": True,
        },
        "time_difference": "-1.0h",
    }


def test_clock_time_means_today_in_the_source_zone() -> None:
    late_evening_utc = datetime(2024, 7, 1, 23, 30, tzinfo=UTC)
    arguments = {"source_timezone": "Asia/Tokyo", "target_timezone": "UTC", "time": "09:00"}
    data = structured(tools.convert_time(arguments, now=at(late_evening_utc)))
    assert data["source"]["datetime"] == "2024-07-02T09:00:00+09:00"
    assert data["target"]["datetime"] == "2024-07-02T00:00:00+00:00"


def test_iso_input_uses_daylight_saving_of_that_date() -> None:
    # New York springs forward two weeks before Berlin does.
    between = structured(convert("2024-03-15T09:00", target="America/New_York"))
    assert between["target"]["datetime"] == "2024-03-15T04:00:00-04:00"
    assert between["time_difference"] == "-5.0h"
    assert (between["source"]["is_dst"], between["target"]["is_dst"]) == (False, True)
    after = structured(convert("2024-04-15T09:00", target="America/New_York"))
    assert after["target"]["datetime"] == "2024-04-15T03:00:00-04:00"
    assert after["time_difference"] == "-6.0h"


def test_iso_input_with_an_offset_is_that_instant() -> None:
    data = structured(convert("2024-01-15T12:00:00Z"))
    assert data["source"]["datetime"] == "2024-01-15T13:00:00+01:00"
    assert data["target"]["datetime"] == "2024-01-15T12:00:00+00:00"


def test_fractional_hour_difference_is_shown_exactly() -> None:
    data = structured(convert("2024-01-15T09:00", source="UTC", target="Asia/Kathmandu"))
    assert data["target"]["datetime"] == "2024-01-15T14:45:00+05:45"
    assert data["time_difference"] == "+5.75h"
    india = structured(convert("09:00", source="UTC", target="Asia/Kolkata"))
    assert india["time_difference"] == "+5.5h"


def test_time_skipped_by_spring_forward_is_an_error() -> None:
    text = error_text(convert("2024-03-31T02:30"))
    assert "'2024-03-31T02:30' does not exist in Europe/Berlin" in text


def test_time_repeated_by_fall_back_means_the_first_one() -> None:
    data = structured(convert("2024-10-27T02:30"))
    assert data["source"]["datetime"] == "2024-10-27T02:30:00+02:00"
    assert data["source"]["is_dst"] is True


@pytest.mark.parametrize("argument", ["source_timezone", "target_timezone"])
def test_unknown_zone_is_an_error_naming_it(argument: str) -> None:
    arguments = {"source_timezone": "UTC", "target_timezone": "UTC", "time": "09:00"}
    arguments[argument] = "Mars/Olympus_Mons"
    text = error_text(tools.convert_time(arguments))
    assert text.startswith(f"unknown timezone 'Mars/Olympus_Mons' in {argument}")


def test_zone_in_the_wrong_case_suggests_the_right_name() -> None:
    text = error_text(convert("09:00", source="europe/berlin"))
    assert "did you mean 'Europe/Berlin'?" in text


@pytest.mark.parametrize("bad", ["25:00", "09:60", "9am", "", "2024-13-01T09:00", "tomorrow"])
def test_unreadable_time_is_an_error_naming_it(bad: str) -> None:
    assert repr(bad) in error_text(convert(bad))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"source_timezone": "UTC", "time": "09:00"}, "missing required argument(s): target"),
        (
            {"source_timezone": "UTC", "target_timezone": "UTC", "time": "09:00", "x": 1},
            "unknown argument(s) x",
        ),
        ({"source_timezone": 1, "target_timezone": "UTC", "time": "09:00"}, "not a number"),
        ({"source_timezone": "UTC", "target_timezone": "UTC", "time": None}, "not null"),
        ([], "arguments must be a JSON object"),
    ],
)
def test_malformed_arguments_are_errors(arguments: Any, message: str) -> None:
    assert message in error_text(tools.convert_time(arguments))


# --- get_system_time -----------------------------------------------------------------------


def test_system_time_defaults_to_utc() -> None:
    data = structured(tools.get_system_time({}, now=at(NOON_UTC)))
    assert data == {"timezone": "UTC", "datetime": "2024-07-01T12:00:00+00:00", "is_dst": False}


def test_system_time_in_a_named_zone() -> None:
    data = structured(tools.get_system_time({"timezone": "America/New_York"}, now=at(NOON_UTC)))
    assert data == {
        "timezone": "America/New_York",
        "datetime": "2024-07-01T08:00:00-04:00",
        "is_dst": True,
    }


def test_system_time_with_the_real_clock_is_now() -> None:
    data = structured(tools.get_system_time({"timezone": "Asia/Tokyo"}))
    shown = datetime.fromisoformat(data["datetime"])
    assert abs((shown - datetime.now(UTC)).total_seconds()) < 5
    assert shown.utcoffset() == timedelta(hours=9)


@pytest.mark.parametrize(
    ("zone", "month", "summer"),
    [
        ("Europe/Dublin", 7, True),  # tzdata models Irish winter as negative DST
        ("Europe/Dublin", 1, False),
        ("Australia/Sydney", 1, True),
        ("Australia/Sydney", 7, False),
        ("Asia/Tokyo", 7, False),
    ],
)
def test_is_dst_means_summer_time(zone: str, month: int, summer: bool) -> None:
    moment = datetime(2024, month, 15, 12, tzinfo=UTC)
    data = structured(tools.get_system_time({"timezone": zone}, now=at(moment)))
    assert data["is_dst"] is summer


def test_unknown_zone_for_system_time_is_an_error() -> None:
    assert "'Nowhere/City'" in error_text(tools.get_system_time({"timezone": "Nowhere/City"}))


# --- the backend and its registration ------------------------------------------------------


@pytest.fixture
async def backend() -> TimeBackend:
    backend = TimeBackend(UpstreamConfig(name="time", transport="time"), Settings())
    await backend.start()
    return backend


async def test_backend_lists_both_tools(backend: TimeBackend) -> None:
    assert [tool.name for tool in await backend.list_tools()] == [
        "get_system_time",
        "convert_time",
    ]


async def test_backend_call_returns_a_call_tool_result(backend: TimeBackend) -> None:
    arguments = {
        "source_timezone": "Europe/Berlin",
        "target_timezone": "Europe/Dublin",
        "time": "2024-07-01T09:00",
    }
    result = await backend.call_tool("convert_time", arguments, timeout=1)
    assert structured(result)["target"]["datetime"] == "2024-07-01T08:00:00+01:00"


async def test_backend_refuses_a_tool_it_does_not_have(backend: TimeBackend) -> None:
    with pytest.raises(BackendError, match="no tool 'sundial'"):
        await backend.call_tool("sundial", {}, timeout=1)


def test_hook_registers_a_local_backend_named_time() -> None:
    registered: list[BackendSpec] = []

    class Collect:
        def add(self, spec: BackendSpec) -> None:
            registered.append(spec)

    gateway_register_backends(Collect())  # type: ignore[arg-type]
    [spec] = registered
    assert (spec.name, spec.transport, spec.local) == ("time", "time", True)
    assert isinstance(
        spec.factory(UpstreamConfig(name="t", transport="time"), Settings()), TimeBackend
    )


def test_entry_point_names_the_package() -> None:
    [entry] = entry_points(group="aio_mcp_gateway", name="time")
    assert entry.value == "gateway_time"
