"""Prompts: chat formats (GGUF Jinja templates, built-ins, the dialogue format for base models)
and splitting a reply stream (stop strings, reasoning)."""
