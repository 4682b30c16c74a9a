"""The types every backend shares (no llama_cpp import here) and the interface a
:class:`~desklm.engine.chat.session.ChatSession` drives.

Two backends satisfy it: :class:`desklm.engine.backends.local.engine.ChatEngine` (a GGUF
file run by llama.cpp in this process) and :class:`desklm.engine.backends.remote.RemoteBackend`
(a model served by an OpenAI-compatible server: vLLM, llama-server, Ollama, ...). The session
budgets the prompt with ``template`` + ``tokenize`` + ``n_ctx`` (see ``Conversation.plan``),
then calls ``generate`` with the planned tokens; ``stop`` may be called from any thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from desklm.engine.prompt.chat_format import ChatTemplate
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError


class LoadCancelled(DeskLMError):
    """A load stopped on request (for example by quitting while it ran)."""


class FinishReason(enum.StrEnum):
    """Why a reply ended (a str: JSON and comparisons see "stop", "length", ...)."""

    STOP = "stop"  # the model ended its turn, or a stop string matched
    LENGTH = "length"  # max_tokens, or the context was full
    CANCELLED = "cancelled"  # Stop, Ctrl+C, a client that went away
    ERROR = "error"  # the backend failed mid-reply (the partial reply is kept)


@dataclass
class TurnStats:
    """What one reply cost. Rates are None where nothing was measured (e.g. 0 tokens)."""

    prompt_tokens: int = 0
    prompt_tokens_reused: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s: float | None = None
    finish_reason: FinishReason = FinishReason.STOP
    context_used: int = 0
    n_ctx: int = 0
    total_s: float = 0.0
    trimmed: list[dict[str, Any]] = field(default_factory=list)
    reasoning_tokens: int = 0  # of completion_tokens, those inside <think>...</think>
    reasoning_s: float | None = None  # time spent generating them
    restored_tokens: int = 0  # prompt tokens restored from this chat's KV snapshot this turn
    # the most other sequences (API requests) decoded in the same steps as this reply: its
    # tokens/s is a share of the model's, not all of it
    shared_with: int = 0

    @property
    def prompt_tokens_evaluated(self) -> int:
        return self.prompt_tokens - self.prompt_tokens_reused

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("ttft_s", "prompt_tokens_per_s", "gen_tokens_per_s", "total_s", "reasoning_s"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        return d


@dataclass
class LoadInfo:
    path: Path
    name: str
    architecture: str
    n_ctx: int
    n_ctx_train: int
    n_layers: int
    load_s: float
    chat_format: str
    gpu_offload_supported: bool
    file_size: int
    notes: list[str] = field(default_factory=list)
    base_model: bool = False  # no sign of instruction tuning (see chat_format.model_kind)
    format_note: str = ""  # one line for the window: what the format means for this model

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@runtime_checkable
class Backend(Protocol):
    """What a chat session needs from whatever produces the tokens."""

    template: ChatTemplate | None  # renders messages for budgeting (None: nothing loaded)
    load_info: LoadInfo | None  # what is loaded / connected
    settings: Settings | None  # the load settings in effect
    live_tokens: int  # completion tokens of the running reply, readable from any thread
    kv_snapshots: bool  # its KV cache can be saved per chat (local llama.cpp; not a server)

    @property
    def loaded(self) -> bool: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def context_used(self) -> int: ...

    def load(
        self,
        path: str | Path,
        settings: Settings,
        progress: Callable[[float], None] | None = None,
        clamp: bool = False,
    ) -> LoadInfo: ...

    def unload(self) -> None: ...

    def set_chat_format(self, chat_format: str) -> str: ...

    def tokenize(self, text: Any, special: bool = False) -> list[int]: ...

    def reusable_prefix(self, tokens: list[int]) -> int: ...

    def begin_turn(self) -> None: ...

    def stop_requested(self) -> bool: ...

    def generate(
        self,
        tokens: list[int],
        sampling: Settings,
        on_text: Callable[[str], None] | None = None,
        reasoning_open: bool = False,
        clear_stop: bool = True,
    ) -> tuple[str, TurnStats]: ...

    def stop(self) -> None: ...

    def reset(self) -> None: ...

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None: ...
