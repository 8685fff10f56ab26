"""The stdio backend's parts: `process` runs and supervises one MCP server process, `host`
runs them once per instance for every worker, `hub` is a worker's connection to the host
(starting it when there is none), `remote` the backend that uses it, and `channel` what
host and workers say to each other. The process model is in `backend_stdio`'s docstring."""
