"""Backends a chat session drives: the local llama.cpp engine and a remote OpenAI-compatible
server. See :mod:`desklm.engine.backends.base` for the interface."""
