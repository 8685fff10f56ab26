"""The time tools themselves: their definitions and pure functions that answer calls.

Nothing here touches the gateway's machinery or does I/O on a call: zone names are read
once (the backend warms that index at start-up) and zoneinfo caches the zones it loads.
Each call returns an MCP `CallToolResult`; a bad argument is a result with `isError`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import orjson
from gateway.plugin import ToolDef

JSON = dict[str, Any]
Clock = Callable[[tzinfo], datetime]
"""Returns the current time in a zone; `datetime.now` unless a test supplies another."""

DEFAULT_TIMEZONE = "UTC"

_ZONE_DESCRIPTION = "IANA timezone name, such as 'Europe/Berlin', 'America/New_York' or 'UTC'."

_ZONED_TIME: JSON = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string", "description": "The IANA timezone name."},
        "datetime": {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 local date and time with its UTC offset, to the second.",
        },
        "is_dst": {
            "type": "boolean",
            "description": "True when the zone is on summer (daylight saving) time.",
        },
    },
    "required": ["timezone", "datetime", "is_dst"],
    "additionalProperties": False,
}

GET_SYSTEM_TIME = ToolDef(
    name="get_system_time",
    title="Current time",
    description=(
        "Get the current date and time in an IANA timezone (UTC when none is given), "
        "with its UTC offset and whether the zone is on daylight saving time."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "default": DEFAULT_TIMEZONE,
                "description": f"{_ZONE_DESCRIPTION} Defaults to UTC.",
            }
        },
        "additionalProperties": False,
    },
    output_schema=_ZONED_TIME,
    annotations={"readOnlyHint": True, "openWorldHint": False},
)

CONVERT_TIME = ToolDef(
    name="convert_time",
    title="Convert time between timezones",
    description=(
        "Convert a time from one IANA timezone to another, honouring daylight saving time "
        "on the date in question. `time` is either HH:MM (24-hour, meaning today in the "
        "source timezone) or an ISO 8601 datetime such as 2025-03-30T09:00; a datetime "
        "without an offset is local time in the source timezone, one with an offset is "
        "that exact instant. A local time repeated when clocks go back means the first one. "
        "Returns both local times and the time difference (target minus source) in hours."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "source_timezone": {
                "type": "string",
                "minLength": 1,
                "description": f"Timezone the given time is in. {_ZONE_DESCRIPTION}",
            },
            "target_timezone": {
                "type": "string",
                "minLength": 1,
                "description": f"Timezone to convert to. {_ZONE_DESCRIPTION}",
            },
            "time": {
                "type": "string",
                "minLength": 1,
                "description": "HH:MM (24-hour, today in the source timezone) or an ISO 8601 "
                "datetime, e.g. '14:30' or '2025-07-01T14:30'.",
            },
        },
        "required": ["source_timezone", "target_timezone", "time"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {
            "source": _ZONED_TIME,
            "target": _ZONED_TIME,
            "time_difference": {
                "type": "string",
                "pattern": r"^[+-]\d+\.\d{1,2}h$",
                "description": "Target offset minus source offset in hours, e.g. '+5.5h'.",
            },
        },
        "required": ["source", "target", "time_difference"],
        "additionalProperties": False,
    },
    annotations={"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
)

TOOLS = (GET_SYSTEM_TIME, CONVERT_TIME)


class ToolInputError(ValueError):
    """An argument the tool cannot use; its message goes back to the caller."""


# --- results ---------------------------------------------------------------------------


def ok(structured: JSON) -> JSON:
    # MCP asks tools with structured output to repeat it as JSON text for older clients.
    return {
        "content": [{"type": "text", "text": orjson.dumps(structured).decode()}],
        "structuredContent": structured,
        "isError": False,
    }


def failed(message: str) -> JSON:
    return {"content": [{"type": "text", "text": message}], "isError": True}


_JSON_TYPES: dict[type, str] = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# --- zones -----------------------------------------------------------------------------


@functools.cache
def zone_names() -> frozenset[str]:
    """Every IANA name this machine knows, read from disk once."""
    return frozenset(available_timezones())


@functools.cache
def _names_by_lower_case() -> dict[str, str]:
    return {name.lower(): name for name in zone_names()}


def zone(name: object, argument: str) -> ZoneInfo:
    """The zone called `name`; unknown names fail without a disk lookup."""
    if not isinstance(name, str):
        raise ToolInputError(f"{argument} must be a string, not {_json_type(name)}")
    if name not in zone_names():
        suggestion = _names_by_lower_case().get(name.lower())
        hint = (
            f"did you mean {suggestion!r}?"
            if suggestion
            else "use an IANA name such as 'Europe/Berlin' or 'UTC'"
        )
        raise ToolInputError(f"unknown timezone {name!r} in {argument}; {hint}")
    return ZoneInfo(name)


@functools.lru_cache(maxsize=1024)
def _winter_offset(tz: tzinfo, year: int) -> timedelta:
    offsets = (datetime(year, month, 1, 12, tzinfo=tz).utcoffset() for month in (1, 7))
    return min(offset or timedelta(0) for offset in offsets)


def is_summer_time(moment: datetime) -> bool:
    # Not `moment.dst()`: Europe/Dublin's rules make winter its daylight saving period (a
    # negative one), so summer time is better read as being ahead of the year's lower offset.
    assert moment.tzinfo is not None
    return (moment.utcoffset() or timedelta(0)) > _winter_offset(moment.tzinfo, moment.year)


def zoned(moment: datetime) -> JSON:
    assert isinstance(moment.tzinfo, ZoneInfo)
    return {
        "timezone": moment.tzinfo.key,
        "datetime": moment.isoformat(timespec="seconds"),
        "is_dst": is_summer_time(moment),
    }


# --- times -----------------------------------------------------------------------------

_CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def _localize(wall: datetime, tz: ZoneInfo, text: str) -> datetime:
    moment = wall.replace(tzinfo=tz)
    # zoneinfo accepts wall times that a spring-forward jump skips; a round trip through
    # UTC lands elsewhere for exactly those.
    if moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        raise ToolInputError(
            f"time {text!r} does not exist in {tz.key} on {wall.date().isoformat()}: "
            "the clocks skip it for daylight saving"
        )
    return moment


def parse_time(text: object, tz: ZoneInfo, now: Clock) -> datetime:
    """The instant `text` names in zone `tz`, as an aware datetime in that zone."""
    if not isinstance(text, str):
        raise ToolInputError(f"time must be a string, not {_json_type(text)}")
    value = text.strip()
    match = _CLOCK_TIME.fullmatch(value)
    if match:
        hour, minute = int(match[1]), int(match[2])
        if hour > 23 or minute > 59:
            raise ToolInputError(f"time {text!r} is not a valid 24-hour HH:MM time")
        today: date = now(tz).date()
        return _localize(datetime.combine(today, time(hour, minute)), tz, text)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ToolInputError(
            f"time {text!r} is neither HH:MM (24-hour) nor an ISO 8601 datetime"
        ) from None
    if parsed.tzinfo is not None:
        return parsed.astimezone(tz)
    return _localize(parsed, tz, text)


def hours_between(source: datetime, target: datetime) -> str:
    """Target offset minus source offset, as '+1.0h', '-5.0h' or '+5.75h'."""
    delta = (target.utcoffset() or timedelta(0)) - (source.utcoffset() or timedelta(0))
    text = f"{delta.total_seconds() / 3600:+.2f}".rstrip("0")
    return f"{text}0h" if text.endswith(".") else f"{text}h"


# --- the tools -------------------------------------------------------------------------


def _check_arguments(arguments: object, tool: ToolDef) -> dict[str, Any]:
    if not isinstance(arguments, dict):
        raise ToolInputError("arguments must be a JSON object")
    allowed = tool.input_schema["properties"]
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ToolInputError(
            f"unknown argument(s) {', '.join(unknown)}; {tool.name} takes {', '.join(allowed)}"
        )
    missing = [name for name in tool.input_schema.get("required", ()) if name not in arguments]
    if missing:
        raise ToolInputError(f"missing required argument(s): {', '.join(missing)}")
    return arguments


def get_system_time(arguments: object, now: Clock = datetime.now) -> JSON:
    try:
        args = _check_arguments(arguments, GET_SYSTEM_TIME)
        tz = zone(args.get("timezone", DEFAULT_TIMEZONE), "timezone")
    except ToolInputError as exc:
        return failed(str(exc))
    return ok(zoned(now(tz).replace(microsecond=0)))


def convert_time(arguments: object, now: Clock = datetime.now) -> JSON:
    try:
        args = _check_arguments(arguments, CONVERT_TIME)
        source_tz = zone(args["source_timezone"], "source_timezone")
        target_tz = zone(args["target_timezone"], "target_timezone")
        source = parse_time(args["time"], source_tz, now)
    except ToolInputError as exc:
        return failed(str(exc))
    target = source.astimezone(target_tz)
    return ok(
        {
            "source": zoned(source),
            "target": zoned(target),
            "time_difference": hours_between(source, target),
        }
    )
