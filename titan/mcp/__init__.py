"""`titan mcp`: an MCP server (the official `mcp` SDK) that lets an AI assistant drive Titan.

`tools.py` holds what each tool does, blocking, through the SDK's `Client` (found and
authenticated as the CLI is); `server.py` puts them behind MCP over stdio or streamable
HTTP.  Imported only by `titan mcp`: no other command pays for importing `mcp`.
"""
