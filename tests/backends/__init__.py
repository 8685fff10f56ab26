"""Tests of the upstream backends and the MCP client package they share."""
