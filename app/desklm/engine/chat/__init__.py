"""Chats: the ChatSession (the one owner of Settings), the conversation and its token budget,
message versions and branches, attachments, presets, the slash commands, and the tools the
model may call (MCP servers: tools, tool_format, tool_commands)."""
