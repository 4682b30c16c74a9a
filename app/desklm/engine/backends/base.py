"""The interface a :class:`~desklm.engine.session.ChatSession` drives.

Two backends satisfy it: :class:`desklm.engine.llm.ChatEngine` (a GGUF file run by llama.cpp in
this process) and :class:`desklm.engine.backends.remote.RemoteBackend` (a model served by an
OpenAI-compatible server: vLLM, llama-server, Ollama, ...). The session budgets the prompt with
``template`` + ``tokenize`` + ``n_ctx`` (see ``Conversation.plan``), then calls ``generate`` with
the planned tokens; ``stop`` may be called from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from desklm.engine.chat_format import ChatTemplate
from desklm.engine.llm import LoadInfo, TurnStats
from desklm.engine.settings import Settings


@runtime_checkable
class Backend(Protocol):
    """What a chat session needs from whatever produces the tokens."""

    template: ChatTemplate | None  # renders messages for budgeting (None: nothing loaded)
    load_info: LoadInfo | None  # what is loaded / connected
    settings: Settings | None  # the load settings in effect
    live_tokens: int  # completion tokens of the running reply, readable from any thread

    @property
    def loaded(self) -> bool: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def context_used(self) -> int: ...

    def load(self, path: str | Path, settings: Settings,
             progress: Callable[[float], None] | None = None, clamp: bool = False) -> LoadInfo: ...

    def unload(self) -> None: ...

    def set_chat_format(self, chat_format: str) -> str: ...

    def tokenize(self, text: Any, special: bool = False) -> list[int]: ...

    def reusable_prefix(self, tokens: list[int]) -> int: ...

    def begin_turn(self) -> None: ...

    def stop_requested(self) -> bool: ...

    def generate(self, tokens: list[int], sampling: Settings,
                 on_text: Callable[[str], None] | None = None, reasoning_open: bool = False,
                 clear_stop: bool = True) -> tuple[str, TurnStats]: ...

    def stop(self) -> None: ...

    def reset(self) -> None: ...

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None: ...
