"""Prompt building: chat formats, tool-call rendering and parsing, stream splitting."""
