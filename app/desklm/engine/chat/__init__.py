"""Chats: the ChatSession (the one owner of Settings), the conversation and its token budget,
message versions and branches, attachments, presets and the slash commands."""
