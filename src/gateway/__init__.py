"""aio-mcp-gateway: many MCP servers behind one authenticated endpoint."""

__version__ = "0.1.0"
