"""DeskLM's engine: everything that runs and is tested without a display. No Qt imports here.

This package is the facade: ``ui/``, the API server and the CLI import what they need from
``desklm.engine`` itself, never from its modules (a test enforces it for ``ui/`` and
``server/``, and rejects ``from desklm.engine import <module>``). Every name is imported
explicitly, so its type reaches mypy and PyInstaller sees every module; the two that load
llama.cpp (``ChatEngine``, ``Runtime``) are imported on first use, typed all the same.

The folders behind it:

- ``runtime``: the Runner, the local backend and the session, wired once
- ``runner``: the one inference thread and its job queue; ``settings``: the one schema of every
  setting; ``monitor``: ResourceSampler (psutil + NVML), NA; ``tune``: the auto-tuner;
  ``fmt``: bytes, seconds and rates for people; ``buildinfo``: versions and paths (About)
- ``chat/``: ChatSession, the conversation and its budget, branches, attachments, presets,
  the slash commands, tools (MCP servers, consent, the per-turn limit)
- ``prompt/``: chat formats, stop strings and reasoning; ``prompt.tools``: tools rendered into
  the prompt, calls parsed back (whole and streamed), the grammar that forces a call
- ``backends/``: the shared types and interface (``base``), ``local/`` (llama.cpp: load,
  stream, KV snapshots, the child-process probe), ``remote`` (an OpenAI-compatible server) and
  ``metrics`` (its /metrics)
- ``models/``: the GGUF header, the memory-fit estimate, the catalog, curated downloads, the hub
- ``store/``: conversations and app settings on disk, search, saved server connections
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from desklm.engine.backends.base import Backend, FinishReason, LoadCancelled, LoadInfo, TurnStats
from desklm.engine.backends.metrics import server_metrics
from desklm.engine.backends.remote import RemoteBackend, check_url, probe_server
from desklm.engine.buildinfo import backend_name, llama_info, version_text, versions
from desklm.engine.buildinfo import paths as data_paths
from desklm.engine.chat.attachments import (
    Attachment,
    context_room,
    read_attachment,
    typed_text,
)
from desklm.engine.chat.branches import version_label
from desklm.engine.chat.commands import (
    CommandResult,
    help_rows,
    is_command,
    message_to_edit,
)
from desklm.engine.chat.commands import parse as parse_command
from desklm.engine.chat.conversation import PromptPlan
from desklm.engine.chat.presets import Preset, PresetStore, apply_preset
from desklm.engine.chat.session import ChatSession, TurnResult
from desklm.engine.chat.tools import (
    Decision,
    ServerConfig,
    ServerState,
    ServerStatus,
    ToolHub,
    ToolInfo,
    ToolRequest,
    ToolStep,
)
from desklm.engine.fmt import fmt_bytes, fmt_rate, fmt_secs, fmt_transfer
from desklm.engine.models.catalog import (
    catalog,
    embedded_model_path,
    is_embedded,
    remember_model,
    resolve_model,
)
from desklm.engine.models.curated import CURATED_MODELS, GB, CatalogModel, Recommendation, recommend
from desklm.engine.models.fit import (
    FITS,
    NO_FIT,
    TIGHT,
    FitVerdict,
    auto_fit,
    estimate,
    free_memory,
)
from desklm.engine.models.gguf_info import GGUFInfo, read_gguf
from desklm.engine.models.hub import (
    DownloadCancelled,
    RemoteFile,
    list_gguf_files,
    remote_header,
)
from desklm.engine.models.hub import check_reachable as check_hub_reachable
from desklm.engine.models.hub import download as download_model
from desklm.engine.models.hub import offline as hub_offline
from desklm.engine.monitor import NA, ResourceSampler, Snapshot, is_na
from desklm.engine.prompt.stream import THINK_CLOSE, THINK_OPEN, has_reasoning, split_reasoning
from desklm.engine.prompt.tools import (
    ArgsDelta,
    CallStart,
    ContentDelta,
    Tool,
    ToolCall,
    ToolPrompt,
    ToolStream,
)
from desklm.engine.prompt.tools import Syntax as ToolSyntax
from desklm.engine.prompt.tools import grammar as tool_grammar
from desklm.engine.prompt.tools import grammar_text as tool_grammar_text
from desklm.engine.prompt.tools import parse as parse_tool_calls
from desklm.engine.prompt.tools import render as render_tools
from desklm.engine.runner import Job, JobCancelled, Runner, RunnerBusy, RunnerClosed
from desklm.engine.settings import (
    LOAD_SETTINGS,
    SAMPLING_SETTINGS,
    SCHEMA,
    Setting,
    Settings,
    add_arguments,
    logical_cores,
    settings_from_args,
)
from desklm.engine.signals import QUIT_SIGNALS, install_quit_handlers
from desklm.engine.store.connections import (
    Connection,
    api_key_for,
    list_connections,
    resolve_server,
    save_connection,
)
from desklm.engine.store.files import AppConfig, ConversationStore, StoreError, app_dirs, title_from
from desklm.engine.store.search import SearchHit, SearchIndex, SearchResult
from desklm.engine.tune import TuneResult, tuned_for
from desklm.engine.tune import tune as autotune
from desklm.errors import DeskLMError

if TYPE_CHECKING:  # the names that load llama.cpp: imported on first use (below)
    from desklm.engine.backends.local.batch import (
        BatchEngine,
        BatchLoop,
        BatchStats,
        SamplingParams,
        Sequence,
        batch_for,
        batch_loop,
    )
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.engine.runtime import Runtime

# module names as plain strings: the bundle check reads this table to know they are collected
_ON_FIRST_USE = {
    "ChatEngine": "desklm.engine.backends.local.engine",
    "Runtime": "desklm.engine.runtime",
    "BatchEngine": "desklm.engine.backends.local.batch",
    "BatchLoop": "desklm.engine.backends.local.batch",
    "BatchStats": "desklm.engine.backends.local.batch",
    "SamplingParams": "desklm.engine.backends.local.batch",
    "Sequence": "desklm.engine.backends.local.batch",
    "batch_for": "desklm.engine.backends.local.batch",
    "batch_loop": "desklm.engine.backends.local.batch",
}


def __getattr__(name: str) -> Any:
    """``ChatEngine`` and ``Runtime`` pull in llama.cpp (a shared library, numpy, jinja2):
    commands that need no model (``desklm history``, ``--help``, the probe's parent) do not
    pay for it, and a broken llama.cpp install cannot stop them."""
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'desklm.engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CURATED_MODELS",
    "FITS",
    "GB",
    "LOAD_SETTINGS",
    "NA",
    "NO_FIT",
    "QUIT_SIGNALS",
    "SAMPLING_SETTINGS",
    "SCHEMA",
    "THINK_CLOSE",
    "THINK_OPEN",
    "TIGHT",
    "AppConfig",
    "ArgsDelta",
    "Attachment",
    "Backend",
    "BatchEngine",
    "BatchLoop",
    "BatchStats",
    "CallStart",
    "CatalogModel",
    "ChatEngine",
    "ChatSession",
    "CommandResult",
    "Connection",
    "ContentDelta",
    "ConversationStore",
    "Decision",
    "DeskLMError",
    "DownloadCancelled",
    "FinishReason",
    "FitVerdict",
    "GGUFInfo",
    "Job",
    "JobCancelled",
    "LoadCancelled",
    "LoadInfo",
    "Preset",
    "PresetStore",
    "PromptPlan",
    "Recommendation",
    "RemoteBackend",
    "RemoteFile",
    "ResourceSampler",
    "Runner",
    "RunnerBusy",
    "RunnerClosed",
    "Runtime",
    "SamplingParams",
    "SearchHit",
    "SearchIndex",
    "SearchResult",
    "Sequence",
    "ServerConfig",
    "ServerState",
    "ServerStatus",
    "Setting",
    "Settings",
    "Snapshot",
    "StoreError",
    "Tool",
    "ToolCall",
    "ToolHub",
    "ToolInfo",
    "ToolPrompt",
    "ToolRequest",
    "ToolStep",
    "ToolStream",
    "ToolSyntax",
    "TuneResult",
    "TurnResult",
    "TurnStats",
    "add_arguments",
    "api_key_for",
    "app_dirs",
    "apply_preset",
    "auto_fit",
    "autotune",
    "backend_name",
    "batch_for",
    "batch_loop",
    "catalog",
    "check_hub_reachable",
    "check_url",
    "context_room",
    "data_paths",
    "download_model",
    "embedded_model_path",
    "estimate",
    "fmt_bytes",
    "fmt_rate",
    "fmt_secs",
    "fmt_transfer",
    "free_memory",
    "has_reasoning",
    "help_rows",
    "hub_offline",
    "install_quit_handlers",
    "is_command",
    "is_embedded",
    "is_na",
    "list_connections",
    "list_gguf_files",
    "llama_info",
    "logical_cores",
    "message_to_edit",
    "parse_command",
    "parse_tool_calls",
    "probe_server",
    "read_attachment",
    "read_gguf",
    "recommend",
    "remember_model",
    "remote_header",
    "render_tools",
    "resolve_model",
    "resolve_server",
    "save_connection",
    "server_metrics",
    "settings_from_args",
    "split_reasoning",
    "title_from",
    "tool_grammar",
    "tool_grammar_text",
    "tuned_for",
    "typed_text",
    "version_label",
    "version_text",
    "versions",
]
