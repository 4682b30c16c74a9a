"""Prompts: chat formats (GGUF Jinja templates, built-ins, the dialogue format for base models),
tool calls (rendered in, parsed out, forced by a grammar: ``tools``) and splitting a reply
stream (stop strings, reasoning)."""
