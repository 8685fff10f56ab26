"""Protocol versions and the rules that differ between them."""

from __future__ import annotations

HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
"""Versions negotiated through `initialize`, newest first."""
MODERN_VERSIONS = ("2026-07-28",)
"""Stateless versions: no `initialize`, every request carries its own `_meta` envelope."""
SUPPORTED_VERSIONS = MODERN_VERSIONS + HANDSHAKE_VERSIONS
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[0]
ASSUMED_WITHOUT_HEADER = "2025-03-26"
"""What a Streamable HTTP request without `MCP-Protocol-Version` is taken to speak."""

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def is_modern(version: str) -> bool:
    return version in MODERN_VERSIONS


def allows_batches(version: str) -> bool:
    """Only 2025-03-26 allowed JSON-RPC batches; later versions removed them."""
    return version == "2025-03-26"


def resumes_streams(version: str) -> bool:
    """2025-11-25 primes every SSE stream with an event id, and a client that loses a
    request's stream resumes it instead of abandoning the request."""
    return version == "2025-11-25"


def argument_errors_are_results(version: str) -> bool:
    """From 2025-11-25 on, arguments that fail a tool's input schema are the tool's error, an
    `isError` result the model reads and corrects, rather than a protocol error (SEP-1303)."""
    return version == "2025-11-25" or is_modern(version)


def negotiate(requested: object) -> str:
    """The version to answer `initialize` with: the client's if we speak it, else our latest."""
    return (
        requested
        if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS
        else (LATEST_HANDSHAKE)
    )


def log_level_allows(threshold: str | None, level: str) -> bool:
    if threshold is None:
        return True
    try:
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)
    except ValueError:
        return True
