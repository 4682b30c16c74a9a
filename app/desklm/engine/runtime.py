"""Runtime: the engine wired once, for the window, ``desklm chat`` and ``desklm serve``.

A runtime owns three things and the wiring between them:

- the :class:`~desklm.engine.runner.Runner`, the one inference thread (every piece of model
  work is a job on it);
- the local llama.cpp backend (:class:`~desklm.engine.backends.local.engine.ChatEngine`), kept
  for the app's lifetime whether or not a server's model is in use;
- the :class:`~desklm.engine.chat.session.ChatSession`, the one owner of the conversation and
  the settings, whose *current* backend is either the local engine or a server's model.

Cancelling is wired here and nowhere else: cancelling a running job stops whichever backend
the session uses at that moment (between tokens, and during prompt evaluation through
llama.cpp's abort callback), and the local engine asks the runner whether its job was
cancelled.

Callers never build a Runner, an engine or a session themselves, and never read the local
engine when they mean the session's current backend (:attr:`Runtime.backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from desklm.engine.backends.base import Backend
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.chat.session import ChatSession
from desklm.engine.runner import Runner
from desklm.engine.settings import Settings
from desklm.engine.store.files import ConversationStore


class Runtime:
    """The inference thread, the local backend and the chat session, wired once.

    Attributes other threads may read without a job: :attr:`runner`, :attr:`remote`,
    :meth:`served_engine` and :meth:`settings_snapshot` (values replaced whole, never mutated).
    Everything else about the session and its backends belongs to the runner's thread.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        store: ConversationStore | None = None,
        *,
        model_path: Path | None = None,
        api_slots: bool = False,
    ) -> None:
        self.local = ChatEngine()
        # the ``parallel`` setting's API slots (a context of KV cache each) are made only for
        # an API: ``desklm serve`` asks at once, the window when its API is turned on
        self.local.api_slots = api_slots
        self.session = ChatSession(model_path or Path(""), settings, engine=self.local, store=store)
        self.runner = Runner(interrupt=self.interrupt, name="inference")
        self.local.cancel_hook = self._job_cancelled
        self._snapshot = self.session.settings.copy()
        self.session.on_setting(self._setting_changed)
        self.tools: Any = None  # the MCP servers' hub, once enable_tools() is called

    # -- what is in use --
    @property
    def backend(self) -> Backend:
        """The backend the session chats with now: the local engine or a server's model."""
        return self.session.engine

    @property
    def remote(self) -> bool:
        """Chatting with a model on a server."""
        return self.session.engine is not self.local

    def served_engine(self) -> ChatEngine | None:
        """The model the opt-in API serves: the local engine once loaded, and only while the
        session uses it (a server's model is not lent on). Called from the API server's
        thread: reads attributes only."""
        if self.remote or self.local.load_info is None:
            return None
        return self.local

    def settings_snapshot(self) -> Settings:
        """A copy of the settings in effect, replaced whole on every change, for threads other
        than the runner's (the API server)."""
        return self._snapshot

    def _setting_changed(self, name: str, value: Any) -> None:
        new = self._snapshot.copy()
        new.set(name, value)
        self._snapshot = new

    # -- switching backends (call on the runner's thread, i.e. inside a job) --
    def use_remote(self, backend: Backend, model_path: Path) -> None:
        """Chat with ``backend`` (connected already), keeping the conversation; a server used
        before is closed."""
        old = self.session.engine
        self.session.use_backend(backend, model_path)
        if old is not self.local and old is not backend:
            _close(old)
        self._snapshot = self.session.settings.copy()

    def use_local(self) -> None:
        """Back from a server's model to the local engine (loaded or not); the server's
        connection is closed."""
        old = self.session.engine
        if old is self.local:
            return
        self.session.use_backend(self.local, require_loaded=False)
        _close(old)
        self._snapshot = self.session.settings.copy()

    # -- the API's slots --
    def reserve_api_slots(self, on: bool) -> str:
        """Ask for the API slots of the ``parallel`` setting (``on``), or stop asking (off:
        the slots made stay until the model next loads). When the local model in use was
        loaded without them it reloads now, the chat kept (re-read on the next turn).
        Returns a line saying so, or "" when nothing had to load. On the runner's thread
        (a job). A reload that fails leaves the model as it was, without slots."""
        from desklm.errors import DeskLMError

        eng = self.local
        eng.api_slots = on
        if not on or self.remote or not eng.slots_missing:
            return ""
        try:
            info = self.session.load()
        except DeskLMError:
            eng.api_slots = False
            if not eng.loaded:  # the restore with slots failed as well: back to none
                self.session.load()
            raise
        est, mb = eng.last_fit, 2**20
        kv = f" ({est.kv_per_sequence * eng.n_slots / mb:,.0f} MB of KV cache)" if est else ""
        lowered = [n for n in info.notes if n.startswith("parallel lowered")]
        return (
            f"the model reloaded with {eng.n_slots} API slot{'s' if eng.n_slots != 1 else ''}"
            f"{kv}; the chat is kept and re-read on the next turn"
            + (f" ({lowered[0]})" if lowered else "")
        )

    # -- tools --
    def enable_tools(self, hub: Any = None) -> Any:
        """Give the session the MCP servers of ``mcp.json`` (a
        :class:`~desklm.engine.chat.tools.ToolHub`; none runs until one of its tools is on).
        The window and ``desklm chat`` call this; the API server does not (its clients bring
        their own tools). Closed with the runtime."""
        if hub is None:
            from desklm.engine.chat.tools import ToolHub

            hub = ToolHub()
        self.tools = self.session.tools = hub
        return hub

    # -- cancelling --
    def interrupt(self) -> None:
        """Stop the backend in use now (any thread): the runner calls this when the running
        job is cancelled."""
        self.session.engine.stop()

    def _job_cancelled(self) -> bool:
        job = self.runner.current
        return job is not None and job.cancelled

    # -- the end --
    def close(
        self,
        timeout: float = 10.0,
        *,
        kinds: tuple[str, ...] | None = None,
        before: Callable[[], None] | None = None,
    ) -> bool:
        """Cancel what waits (every job, or those of ``kinds``: the window lets its queued
        writes run), then on the inference thread run ``before`` (e.g. writing the app's
        settings), save the chat and free the model; join the thread. True if it ended
        within ``timeout``."""
        self.runner.cancel(kinds=kinds)

        def close(_job: Any) -> None:
            try:
                if before is not None:
                    before()
            finally:
                self.session.close()

        self.runner.submit(close, "close", interrupt=False)
        done = self.runner.shutdown(timeout, cancel=False)
        if self.tools is not None:  # the servers' processes end with the app
            self.tools.close()
        return done


def _close(backend: Backend) -> None:
    close = getattr(backend, "close", None)  # a server's connection; the local engine stays
    if callable(close):
        close()
