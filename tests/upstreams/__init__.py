"""Real upstream MCP servers for tests and benchmarks, run as subprocesses."""
