"""Tests against other MCP software: the official SDK, gateway federation and the README."""
