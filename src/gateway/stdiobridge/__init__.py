"""`aio-mcp-gateway bridge`: a stdio MCP server that forwards everything to a gateway over
Streamable HTTP, for clients that only launch local servers.

`lines` reads the client's messages from stdin and writes the gateway's to stdout,
`gateway_client` carries them over HTTP (session, event streams, renewal), `bridge` ties
the two together, and `command` is the command line.
"""
