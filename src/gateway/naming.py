"""Names: what MCP allows for tools, and how federated tools are named."""

from __future__ import annotations

import re

# MCP (2025-11-25): tool names are 1-128 characters of A-Z, a-z, 0-9, '_', '-' and '.'.
TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
PREFIX = re.compile(r"[A-Za-z0-9_.-]{0,64}")


def gateway_name(prefix: str, separator: str, tool: str) -> str:
    """`<prefix><separator><tool>`, or the tool's own name when the prefix is empty."""
    return f"{prefix}{separator}{tool}" if prefix else tool


def invalid_tool_names(names: list[str]) -> list[str]:
    return [name for name in names if not TOOL_NAME.fullmatch(name)]
