"""The chat: the session, its conversation and the tools it may call (MCP servers)."""
