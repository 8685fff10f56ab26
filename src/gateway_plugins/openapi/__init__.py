"""The OpenAPI backend's parts: `document` loads and validates an OpenAPI 3.0 or 3.1
document, `mapping` turns its operations into tools (or says why not), `calls` turns a
tool call into an HTTP request and its response into a `CallToolResult`. The backend
itself and its hooks are in `gateway_plugins.backend_openapi`."""
