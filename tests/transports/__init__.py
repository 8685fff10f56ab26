"""Tests of the client transports: /rpc, /mcp, the 2026 path, /sse and virtual servers."""
