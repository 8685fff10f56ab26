"""The gateway as an MCP server: the protocol's methods, sessions and client transports
(Streamable HTTP at `/mcp`, legacy HTTP+SSE at `/sse`), for every supported version."""
