"""DeskLM's engine: everything that runs and is tested without a display. No Qt imports here.

This package is the facade: ``ui/``, the CLI and the API server import what they need from
``desklm.engine`` itself, never from its modules (a test enforces it for ``ui/`` and
``server/``). Names load lazily on first use, so ``desklm --help`` or ``desklm history list``
do not pay for importing llama.cpp.

Map of the modules behind it:

- ``settings``: the one schema of every setting (type, range, default, help, flag, editor)
- ``session``: ChatSession, the one owner of a conversation, its Settings and a backend
- ``runner``: the one inference thread and its job queue
- ``llm``: the local llama.cpp backend (load, stream, stop, reset, threads)
- ``conversation``, ``chat_format``, ``commands``: budgeting, chat templates, slash commands
- ``gguf_info``, ``fit``, ``models``, ``hub``, ``probe``: model files, memory fit, catalog,
  Hugging Face downloads, the child-process probe of unknown files; ``curated``: the
  first-download list and the recommendation for this machine
- ``buildinfo``: versions, llama.cpp's build and backend, DeskLM's paths (for About)
- ``monitor``: ResourceSampler (psutil + NVML), NA
- ``store``: conversations and app settings on disk
- ``bench``: benchmark and auto-tuner; ``fmt``: bytes, seconds and rates for people
- ``branches``, ``chat_commands``: message versions and branches (regenerate, edit), and the
  /regen /alt /edit /attach /preset commands; ``search``: the full-text index of saved chats;
  ``attachments``: files attached to a message; ``presets``: named settings
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # settings
    "SCHEMA": "settings", "Setting": "settings", "Settings": "settings",
    "LOAD_SETTINGS": "settings", "SAMPLING_SETTINGS": "settings", "logical_cores": "settings",
    "settings_from_args": "settings", "add_arguments": "settings",
    # chat
    "ChatSession": "session", "TurnResult": "session",
    "CommandResult": "commands", "PromptPlan": "conversation",
    # the inference thread and the local backend
    "Runner": "runner", "Job": "runner", "JobCancelled": "runner", "RunnerBusy": "runner",
    "RunnerClosed": "runner",
    "ChatEngine": "llm", "LoadInfo": "llm", "LoadCancelled": "llm", "TurnStats": "llm",
    "FinishReason": "llm",
    # models
    "embedded_model_path": "models", "is_embedded": "models", "remember_model": "models",
    "resolve_model": "models", "catalog": "models",
    "estimate": "fit", "auto_fit": "fit", "FitVerdict": "fit", "FITS": "fit", "TIGHT": "fit",
    "NO_FIT": "fit", "GGUFInfo": "gguf_info", "read_gguf": "gguf_info",
    "CatalogModel": "curated", "CURATED_MODELS": "curated", "Recommendation": "curated",
    "recommend": "curated", "GB": "curated",
    # resources
    "ResourceSampler": "monitor", "Snapshot": "monitor", "NA": "monitor", "is_na": "monitor",
    # storage
    "ConversationStore": "store", "AppConfig": "store", "StoreError": "store",
    "app_dirs": "store", "title_from": "store",
    # bench
    "tuned_for": "bench", "TuneResult": "bench",
    # formatting
    "fmt_bytes": "fmt", "fmt_secs": "fmt", "fmt_rate": "fmt", "fmt_transfer": "fmt",
    # working with chats: versions, search, attachments, presets
    "version_label": "branches", "SearchIndex": "search", "SearchHit": "search",
    "SearchResult": "search", "Attachment": "attachments", "read_attachment": "attachments",
    "context_room": "attachments", "typed_text": "attachments",
    "PresetStore": "presets", "Preset": "presets",
    "apply_preset": "presets",
    # models on a server (OpenAI-compatible)
    "RemoteBackend": "backends.remote", "probe_server": "backends.remote",
    "server_metrics": "backends.metrics",
    "check_url": "backends.remote", "Connection": "connections",
    "list_connections": "connections", "save_connection": "connections",
    "api_key_for": "connections",
    "resolve_server": "connections",
    # chat formats
    "split_reasoning": "chat_format",
}
_SUBMODULES = ("commands", "hub", "bench", "fit", "models", "monitor", "store", "branches",
               "buildinfo")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "DeskLMError"])


def __getattr__(name: str) -> Any:
    if name == "DeskLMError":
        from desklm.errors import DeskLMError

        return DeskLMError
    if name in _SUBMODULES:
        return importlib.import_module(f"desklm.engine.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'desklm.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"desklm.engine.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
