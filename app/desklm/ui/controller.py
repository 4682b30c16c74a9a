"""ChatController: what the window is doing, in one place.

The window (``main_window.py``) lays out widgets and draws what this controller emits; it never
touches the model, the session or a thread. The controller owns:

- the :class:`~desklm.engine.Runtime`: the one inference thread (Qt-free), the local backend and the
  :class:`~desklm.engine.ChatSession` that only that thread touches;
- the resource sampler's thread;
- the queue of messages typed while the model was busy;
- one :class:`State`, changed only by :meth:`ChatController._enter`, which checks the move
  against :data:`TRANSITIONS`.

Every request becomes a job on the runner. Job bodies (methods named ``_job_*``) run on the
inference thread and only emit signals; everything else runs on the UI thread. A job that
fails, with any exception, still emits ``_jobEnded``, so every error path returns to a defined
state (``IDLE``, or ``NO_MODEL`` when nothing is loaded).

Signals (all delivered on the UI thread):
    stateChanged(object): the new :class:`State`.
    queueChanged(object): the list of queued message texts.
    message(str, str): (level, text) for the user: level is "info", "notice", "warning" or
        "error" (an error is also shown as a dialog by the window).
    loadStarted(str), loadProgress(float), loaded(object: LoadInfo), loadEnded(str): a load;
        loadEnded carries "failed" / "cancelled" / "" (done).
    modelUnloaded(): no model is loaded any more (a load was stopped after the old model
        had been freed).
    modelInfo(object): the loaded model's GGUF header, for the fit estimate.
    turnStarted(object): {prompt_tokens, reused, n_ctx, dropped, text}.
    token(str, int): a piece of the reply, and the reply's tokens so far.
    turnFinished(object: TurnResult), turnFailed(str, str): (reason, the text not sent).
    commandDone(object: CommandResult).
    settingChanged(str, object): one setting now in effect (the session owns the values).
    settingsLoaded(object): a copy of every setting in effect, after a load (for the panel).
    tuneProgress(int, int, str), tuned(object: TuneResult).
    conversationsListed(object, object): summaries, problems.
    presetsListed(object, object): the saved presets' names and the one last used with the
        loaded model ("" if none).
    messageRevealed(str): after ``open_at``, the id of the message to scroll to.
    toolPermission(object: ToolRequest): a tool call waits for the user (answer_tool);
        toolPermissionClosed(str): that wait is over (its call id: answered, or stopped).
    toolStep(str, object): "call" / "result" and the call (a ToolStep dict) of the reply.
    toolsChanged(str): an MCP server's state or tools changed (its name).
    serverMetrics(object): on a server's model, what its /metrics say, about every 2 s.
    tailStored(object): after a turn, the last two stored messages as dicts (ids, versions),
        so the transcript can offer their actions.
    kvUsage(object): the KV snapshot cache's use (``ChatSession.kv_usage()``), after each
        list refresh (so after turns, switches and resets).
    conversationOpened(object): the record now shown (new, opened, or after /reset).
    snapshot(object): a monitor.Snapshot from the sampler.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMetaObject, QObject, Qt, Signal, Slot

from desklm.engine import (
    AppConfig,
    CommandResult,
    ConversationStore,
    Decision,
    DeskLMError,
    Job,
    JobCancelled,
    LoadCancelled,
    Runtime,
    SearchIndex,
    Settings,
    embedded_model_path,
    help_rows,
    is_command,
    message_to_edit,
    parse_command,
    remember_model,
)
from desklm.server import ApiServer
from desklm.ui.workers import SamplerWorker, start_thread

log = logging.getLogger("desklm.ui")

JOIN_TIMEOUT_S = 10.0  # only reached if a job will not stop; a clean quit takes well under 1 s


class State(enum.Enum):
    """What the window is doing. Exactly one at a time."""

    STARTING = "starting"  # shown, no model requested yet
    LOADING = "loading"  # a model is loading (or reloading for new settings)
    NO_MODEL = "no model"  # nothing loaded: a load failed or was stopped
    IDLE = "idle"  # a model is loaded and free
    GENERATING = "generating"  # a reply is streaming
    COMMAND = "command"  # a slash command or a live settings change is running
    SWITCHING = "switching"  # a chat is being opened, created or deleted
    TUNING = "tuning"  # the thread sweep is measuring
    CLOSING = "closing"  # quitting: nothing new starts


# Every allowed move. A move not listed is a bug: it is logged and refused.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.LOADING, State.CLOSING}),
    State.LOADING: frozenset({State.IDLE, State.NO_MODEL, State.CLOSING}),
    State.NO_MODEL: frozenset({State.LOADING, State.COMMAND, State.SWITCHING, State.CLOSING}),
    State.IDLE: frozenset(
        {
            State.LOADING,
            State.GENERATING,
            State.COMMAND,
            State.SWITCHING,
            State.TUNING,
            State.CLOSING,
        }
    ),
    State.GENERATING: frozenset({State.IDLE, State.CLOSING}),
    State.COMMAND: frozenset({State.IDLE, State.NO_MODEL, State.CLOSING}),
    State.SWITCHING: frozenset({State.IDLE, State.NO_MODEL, State.CLOSING}),
    State.TUNING: frozenset({State.IDLE, State.CLOSING}),
    State.CLOSING: frozenset(),
}

# States in which the model thread is working: new messages wait in the queue.
BUSY = frozenset(
    {State.STARTING, State.LOADING, State.GENERATING, State.COMMAND, State.SWITCHING, State.TUNING}
)
# States that Stop (Esc) interrupts.
# COMMAND: /regen and an edited message generate a reply, and Stop ends it like any other
STOPPABLE = frozenset({State.LOADING, State.GENERATING, State.TUNING, State.COMMAND})


class ChatController(QObject):
    """See the module docstring for the signals and the states."""

    stateChanged = Signal(object)
    queueChanged = Signal(object)
    message = Signal(str, str)
    loadStarted = Signal(str)
    loadProgress = Signal(float)
    loaded = Signal(object)
    loadEnded = Signal(str)
    modelUnloaded = Signal()
    modelInfo = Signal(object)
    turnStarted = Signal(object)
    token = Signal(str, int)
    turnFinished = Signal(object)
    turnFailed = Signal(str, str)
    commandDone = Signal(object)
    settingChanged = Signal(str, object)
    settingsLoaded = Signal(object)
    tuneProgress = Signal(int, int, str)
    tuned = Signal(object)
    conversationsListed = Signal(object, object)
    kvUsage = Signal(object)  # session.kv_usage(): the chat cache's bytes, counts and budgets
    tailStored = Signal(object)  # the last stored messages (dicts) after a turn
    serverMetrics = Signal(object)  # a server's own readings (engine.server_metrics)
    connectionsListed = Signal(object)  # the saved server connections
    _watchServer = Signal(str, str)  # to the sampler: (URL, key) of the server, "" = none
    messageRevealed = Signal(str)  # after open_at: the message to bring into view
    presetsListed = Signal(object, object)  # preset names, the one last used with this model
    conversationOpened = Signal(object)
    snapshot = Signal(object)
    # tools (MCP servers): a call waiting for the user's answer (a ToolRequest), that wait
    # being over (its call id), a call made or finished (kind, ToolStep dict), a server's state
    toolPermission = Signal(object)
    toolPermissionClosed = Signal(str)
    toolStep = Signal(str, object)
    toolsChanged = Signal(str)
    attachmentsChanged = Signal(object)  # the files queued for the next message (dicts)
    output = Signal(str)  # a typed command's answer, for the transcript
    helpShown = Signal(object)  # [(usage, description)] of the slash commands

    # from the inference thread to this object's own slots (queued: they run on the UI thread)
    _jobEnded = Signal(object, object, object, object)  # (job, state it ran in, result, error)

    def __init__(
        self,
        settings: Settings,
        store: ConversationStore | None = None,
        sample_interval_ms: int = 500,
        config: AppConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else AppConfig()
        self.state = State.STARTING
        self.queue: list[str] = []
        self.load_info: Any = None  # the LoadInfo last emitted (a value, not engine state)
        # The runtime's session and backends belong to its runner's thread. Only jobs touch
        # them; tests and the benchmark may read them while nothing runs.
        self.runtime = Runtime(settings, store)
        self.session = self.runtime.session
        self.runner = self.runtime.runner
        # the opt-in API server (off until the user turns it on) shares the runtime's runner
        self.api_server = ApiServer.for_runtime(self.runtime)
        self.session.on_setting(lambda n, v: self.settingChanged.emit(n, v))
        # MCP tools: the hub runs its clients on its own thread; the session asks through
        # _ask_tool (on the inference thread) and the window answers with answer_tool
        self.tools = self.runtime.enable_tools()
        self.tools.listeners.append(self.toolsChanged.emit)
        self.session.consent = self._ask_tool
        self.session.on_tool = lambda kind, step: self.toolStep.emit(kind, step.to_dict())
        self._tool_answers: dict[str, Any] = {}
        self._tool_answered = threading.Condition()
        self._job: Job[Any] | None = None  # the job the current state waits for
        self._last_progress = 0.0
        self._jobEnded.connect(self._on_job_ended, Qt.ConnectionType.QueuedConnection)
        self.loaded.connect(self._set_load_info, Qt.ConnectionType.QueuedConnection)
        # connected before any window slot: the state is at rest when observers hear of it
        self.turnFinished.connect(self._turn_ended, Qt.ConnectionType.QueuedConnection)
        self.modelUnloaded.connect(
            lambda: self._set_load_info(None), Qt.ConnectionType.QueuedConnection
        )
        self.sampler = SamplerWorker(sample_interval_ms)
        self.sampler_thread = start_thread(self.sampler, "sampler")
        self.sampler.sampled.connect(self.snapshot.emit)
        self.sampler.serverSampled.connect(self.serverMetrics.emit)
        self._watchServer.connect(self.sampler.watch_server)  # queued: the sampler's thread
        QMetaObject.invokeMethod(self.sampler, "start", Qt.ConnectionType.QueuedConnection)
        self._build_services(store)

    def _build_services(self, store: ConversationStore | None) -> None:
        """What the window shows but does not own: the search index over the saved chats
        (the API server, built above, shares the runtime's runner)."""
        self.search_index = SearchIndex(store if store is not None else self.session.store)

    # --- state -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.state in BUSY

    def _rest(self) -> State:
        return State.IDLE if self.load_info is not None else State.NO_MODEL

    def _enter(self, new: State) -> bool:
        if new is self.state:
            return True
        if new not in TRANSITIONS[self.state]:
            log.error("refused state change %s -> %s", self.state.name, new.name)
            return False
        log.debug("state %s -> %s", self.state.name, new.name)
        self.state = new
        self.stateChanged.emit(new)
        return True

    def _run(self, state: State, body: Any, kind: str) -> bool:
        """Enter ``state`` and run ``body(job)`` on the inference thread; when it ends (however
        it ends) :meth:`_on_job_ended` returns to rest."""
        if not self._enter(state):
            return False

        def wrapped(job: Job[Any]) -> None:
            try:
                result = body(job)
            except BaseException as e:  # every outcome comes back to the UI thread
                self._jobEnded.emit(job, state, None, e)
            else:
                self._jobEnded.emit(job, state, result, None)

        job = self._job = self.runner.submit(wrapped, kind)

        def never_ran(f: Any) -> None:  # cancelled while queued: wrapped() never ran
            if isinstance(f.exception(), JobCancelled):
                self._jobEnded.emit(job, state, None, f.exception())

        job.future.add_done_callback(never_ran)
        return True

    @Slot(object)
    def _turn_ended(self, _result: Any) -> None:
        """A reply is complete: the window is free now (the rest of the turn's job only
        queues a refresh of the chat list), so observers of turnFinished see it at rest."""
        if self.state is State.GENERATING and self._job is not None:
            self._job = None
            self._enter(self._rest())
            self._drain()

    @Slot(object, object, object, object)
    def _on_job_ended(
        self, job: Job[Any], state: State, result: Any, exc: BaseException | None
    ) -> None:
        current = job is self._job
        if current:
            self._job = None
        if self.state is State.CLOSING:
            return
        if isinstance(exc, JobCancelled) and state is State.LOADING:
            self.loadEnded.emit("cancelled")
        if exc is not None and not isinstance(exc, DeskLMError | JobCancelled):
            log.error("unexpected error while %s", state.value, exc_info=exc)
            self.message.emit(
                "error", f"internal error: {type(exc).__name__}: {exc} (details in the log file)"
            )
        if not current:  # released early (a finished reply): the state moved on already
            return
        self._enter(self._rest())
        self._drain()

    # --- the queue -------------------------------------------------------------------------
    def submit(self, text: str) -> None:
        """A message or slash command from the input box: sent now, or queued while busy."""
        if not text.strip() or self.state is State.CLOSING:
            return
        if self.state is State.GENERATING and text.strip().lower() == "/reset":
            self.reset_conversation()
            return
        if self.busy:
            self.queue.append(text)
            self.queueChanged.emit(list(self.queue))
            return
        self._dispatch(text)

    def _drain(self) -> None:
        if self.queue and not self.busy and self.state is not State.CLOSING:
            text = self.queue.pop(0)
            self.queueChanged.emit(list(self.queue))
            self._dispatch(text)

    def take_queue(self) -> list[str]:
        """Empty the queue, returning the waiting messages (slash commands dropped), so the
        window can put them back in the input box instead of losing them."""
        waiting = [t for t in self.queue if not is_command(t)]
        self.queue.clear()
        self.queueChanged.emit([])
        return waiting

    def _dispatch(self, text: str) -> None:
        if is_command(text):
            try:
                cmd, arg = parse_command(text)
                name = cmd.name
            except DeskLMError:  # an unknown command: the command job says why, in one line
                name, arg = "", ""
            if name == "regen" and not arg:  # typed: the same streamed turn as the button
                self.regenerate()
            elif name == "edit" and arg:  # typed: streamed like the Edit action
                self.edit_last_message(arg)
            else:
                self._command(text)
        elif self.load_info is None:
            self.turnFailed.emit("no model is loaded: open one with File > Models", text)
        else:
            self._send(text)

    # --- requests --------------------------------------------------------------------------
    def load(self, path: str) -> None:
        """Load ``path`` ("" = the embedded model); a running reply is stopped first."""
        self._start_loading(lambda: self.load(path), lambda job: self._job_load(job, path))

    def _start_loading(self, again: Any, body: Any) -> None:
        """Run ``body(job)`` as the LOADING job (a model loads, or a server is connected): a
        running reply is stopped first, and while anything else runs, ``again()`` is asked
        for again once the window is at rest."""
        if self.state is State.CLOSING:
            return
        self.queue_stop()
        if self.busy and self.state is not State.STARTING:
            self.queue_job(again)
            return
        self._run(State.LOADING, body, "load")

    def _job_load(self, job: Job[Any], path: str) -> None:
        self.loadStarted.emit(path)
        if self.runtime.remote:  # back from a server to a local model
            self.runtime.use_local()
            self._watchServer.emit("", "")
        try:
            target = Path(path) if path else embedded_model_path()
            info = self.session.load(target, progress=self._progress, clamp=True)
        except LoadCancelled:
            self._load_stopped()
            return
        except DeskLMError as e:
            self.message.emit("error", f"Could not load the model: {e}")
            self.loadEnded.emit("failed")
            if self.runtime.backend.load_info is None and path:
                # the remembered model is gone or broken: fall back to the embedded one
                self.message.emit("notice", "Loading the embedded model instead.")
                self._job_load(job, "")
            return
        self._loaded(info)
        remember_model(info.path)
        self._apply_tuned(info.path)
        self.loadEnded.emit("")

    def _load_stopped(self) -> None:
        if self.runtime.local.load_info is None:
            self.modelUnloaded.emit()
        self.loadEnded.emit("cancelled")

    @Slot(object)
    def _set_load_info(self, info: Any) -> None:
        self.load_info = info  # on the UI thread, before the job's _jobEnded arrives

    def _loaded(self, info: Any) -> None:
        if not self.runtime.remote:
            self.modelInfo.emit(self.runtime.local.info)
        self.loaded.emit(info)
        self.settingsLoaded.emit(self.session.settings.copy())
        try:
            self._job_presets()  # the Presets row marks the one last used with this model
        except OSError as e:
            log.info("presets unavailable: %s", e)

    def list_connections(self) -> None:
        """Read the saved server connections (in the app settings) for the Models dialog."""
        config = self.config

        def job(_job: Job[Any]) -> None:
            from desklm.engine import list_connections

            self.connectionsListed.emit(list_connections(config))

        self.runner.submit(job, "list", interrupt=False)

    def connect_saved(self, conn: Any) -> None:
        """Connect to a saved server (its key from the keyring or its variable, read on the
        inference thread)."""

        def body(_job: Job[Any]) -> None:
            from desklm.engine import api_key_for

            try:
                key = api_key_for(conn)
            except DeskLMError as e:
                self.message.emit("error", f"Could not connect: {e}")
                return
            self._job_connect(conn, key, [])

        self._start_loading(lambda: self.connect_saved(conn), body)

    def connect_remote(self, chosen: Any) -> None:
        """Chat with a model on a server (File > Connect to server): the chat is kept."""
        self._start_loading(
            lambda: self.connect_remote(chosen),
            lambda _job: self._job_connect(chosen.connection, chosen.api_key, chosen.notes),
        )

    def _job_connect(self, conn: Any, api_key: str | None, notes: list[str]) -> None:
        from desklm.engine import RemoteBackend

        self.loadStarted.emit(conn.url)
        backend = RemoteBackend()
        try:
            backend.connect(conn.url, api_key, conn.model, self.session.settings)
            self.runtime.use_remote(backend, Path(backend.model))
        except DeskLMError as e:
            self.message.emit("error", f"Could not connect: {e}")
            self.loadEnded.emit("failed")
            return
        for note in notes:
            self.message.emit("notice", note)
        self._watchServer.emit(conn.url, api_key or "")
        self._loaded(backend.load_info)
        self.loadEnded.emit("")

    @property
    def conversation_id(self) -> str:
        """The chat the session holds (read on the UI thread between jobs)."""
        return str(self.session.conv_id)

    @property
    def remote(self) -> bool:
        """Chatting with a model on a server (read on the UI thread between jobs)."""
        return self.runtime.remote

    def save_config(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into the app settings, on the inference thread (no file I/O on
        the UI thread)."""
        config = self.config

        def write(_job: Job[Any]) -> None:
            try:
                config.update(lambda d: d.update(values))
            except OSError as e:
                self.message.emit("warning", f"could not save the app settings: {e}")

        if self.state is not State.CLOSING:
            self.runner.submit(write, "config", interrupt=False)

    def close(self, layout: dict[str, Any] | None = None) -> float:
        """Quit: :meth:`shutdown`, saving the settings in effect, the last model and
        ``layout`` (the window's geometry) into the app settings on the inference thread,
        which owns the session. Returns the seconds it took."""
        self.api_server.stop()
        session, config, info = self.session, self.config, self.load_info
        values = dict(layout or {})

        def save_app_settings() -> None:
            from desklm.engine import is_embedded

            values.update(
                {
                    "settings": session.settings.to_dict(),
                    "last_model": "" if info is None or is_embedded(info.path) else str(info.path),
                }
            )
            try:
                config.update(lambda d: d.update(values))
            except OSError as e:
                log.error("could not save app settings: %s", e)

        return self.shutdown(on_close=save_app_settings)

    def _progress(self, p: float) -> None:
        now = time.monotonic()
        if p >= 1.0 or now - self._last_progress > 0.05:  # at most ~20 updates a second
            self._last_progress = now
            self.loadProgress.emit(p)

    def _apply_tuned(self, path: Path) -> None:
        """Threads found by an earlier Tune for this model on this machine, applied live."""
        from desklm.engine import tuned_for

        t = tuned_for(path)
        if not t:
            return
        values = {k: t[k] for k in ("n_threads", "n_threads_batch")}
        if any(self.session.settings[k] != v for k, v in values.items()):
            res = self.session.apply_settings(values)
            res.message = (
                f"using the threads tuned for this model: {values['n_threads']} "
                f"generating, {values['n_threads_batch']} reading the prompt"
            )
            self.message.emit("info", res.message)
            self.commandDone.emit(res)

    def _send(self, text: str) -> None:
        self._run(State.GENERATING, lambda job: self._job_send(job, text), "turn")

    def _turn_observers(
        self, text: str, **extra: Any
    ) -> tuple[Callable[[str], None], Callable[[Any, int], None]]:
        """(on_text, on_start) for a turn on the backend in use (local, or a server's model):
        each piece with the reply's tokens so far, and turnStarted with the planned prompt."""
        eng = self.runtime.backend

        def started(plan: Any, reused: int) -> None:
            self.turnStarted.emit(
                {
                    "prompt_tokens": len(plan.tokens),
                    "reused": reused,
                    "n_ctx": eng.n_ctx,
                    "dropped": plan.dropped,
                    "text": text,
                    **extra,
                }
            )

        return (lambda t: self.token.emit(t, eng.live_tokens)), started

    def _job_send(self, job: Job[Any], text: str) -> None:
        on_text, started = self._turn_observers(text)
        try:
            result = self.session.send(text, on_text, on_start=started)
        except DeskLMError as e:
            self.turnFailed.emit(str(e), text)
            return
        except Exception as e:
            log.error("the turn failed", exc_info=e)
            self.turnFailed.emit(
                f"internal error: {type(e).__name__}: {e} (details in the log file)", text
            )
            return
        # ids first: the reply is drawn once, with its actions, when turnFinished arrives
        self.tailStored.emit([m.to_dict() for m in self.session.conversation.messages[-2:]])
        self.turnFinished.emit(result)
        if self.session.save_error:
            self.message.emit("error", self.session.save_error)
        self.list_conversations()  # queued after this job: the list arrives at rest

    # --- a message's actions (the links under it in the transcript) -------------------------
    def regenerate(self) -> None:
        """A new version of the last reply (the earlier ones kept: "‹ 2/2 ›"), streamed like
        any reply: the gauges and the transcript follow it."""
        self._branch_turn(
            "regen",
            lambda: "",
            "",
            lambda on_text, on_start, _mid: self.session.regenerate(on_text, on_start),
        )

    def select_version(self, message_id: str, index: int) -> None:
        self._message_job(lambda: self.session.select_alternative(message_id, index))

    def delete_message(self, message_id: str) -> None:
        self._message_job(lambda: self.session.delete_message(message_id))

    def edit_message(self, message_id: str, text: str) -> None:
        """Replace a sent message and answer it again, streamed: the chat branches there, the
        old branch kept as a version."""
        self._edit_turn(lambda: message_id, text)

    def edit_last_message(self, text: str) -> None:
        """``/edit TEXT`` typed: your last message replaced by ``text`` and answered again,
        streamed like the Edit action (which names its message; this one is found on the
        inference thread, where the conversation lives)."""
        self._edit_turn(lambda: str(message_to_edit(self.session).id), text)

    def _edit_turn(self, message_id: Callable[[], str], text: str) -> None:
        self._branch_turn(
            "edit",
            message_id,
            text,
            lambda on_text, on_start, mid: self.session.edit_and_resend(
                mid, text, on_text, on_start
            ),
        )

    def _branch_turn(self, mode: str, message_id: Callable[[], str], text: str, run: Any) -> None:
        """A reply that makes a new version (regenerate, edit): a GENERATING job like a sent
        message, so Stop, the queue, the live gauges and the streaming transcript all work;
        turnStarted carries ``mode`` and the message's id (``message_id()``, asked as the job
        runs) so the transcript replaces the old version in place. Queued while busy."""
        if self.state is State.CLOSING:
            return
        if self.busy:
            self.queue_job(lambda: self._branch_turn(mode, message_id, text, run))
            return
        if self.load_info is None:
            self.turnFailed.emit("no model is loaded: open one with File > Models", "")
            return

        def body(_job: Job[Any]) -> None:
            try:
                mid = message_id()  # on this thread (a typed /edit's is found here)
                on_text, started = self._turn_observers(text, mode=mode, message_id=mid)
                result = run(on_text, started, mid)
            except DeskLMError as e:
                self.turnFailed.emit(str(e), "")
                self.conversationOpened.emit(self.session.record())
                return
            self.turnFinished.emit(result)
            # drawn again with the versions ("‹ 2/2 ›") and the ids of the new messages
            self.conversationOpened.emit(self.session.record())
            if self.session.save_error:
                self.message.emit("error", self.session.save_error)
            self.list_conversations()

        self._run(State.GENERATING, body, "turn")

    # --- what the window asks for by name (never as command text) ---------------------------
    def attach(self, path: str) -> None:
        """Read and measure a file for the next message, on the inference thread; the chips
        follow ``attachmentsChanged`` (or a notice says why it cannot go)."""

        def job(_job: Job[Any]) -> None:
            try:
                att = self.session.attach(path.strip().strip("'\""))
            except DeskLMError as e:
                self.message.emit("warning", str(e))
                return
            self.attachmentsChanged.emit([a.chip() for a in self.session.pending_attachments])
            self.message.emit(
                "info",
                f"attached {att.name}: {att.chars:,} characters"
                + (f", {att.tokens:,} tokens" if att.tokens is not None else "")
                + "; it goes with your next message",
            )

        self.runner.submit(job, "command", interrupt=False)

    def save_preset(self, name: str) -> None:
        def job(_job: Job[Any]) -> None:
            from desklm.engine import PresetStore

            p = PresetStore().save(name, self.session.settings, self.session.model_path)
            self.message.emit(
                "info",
                f"preset '{p.name}' saved ({len(p.values)} settings, the system prompt among them)",
            )
            self._job_presets()

        self._preset_job(job)

    def delete_preset(self, name: str) -> None:
        def job(_job: Job[Any]) -> None:
            from desklm.engine import PresetStore

            store = PresetStore()
            store.delete(store.get(name).name)
            self.message.emit("info", f"preset '{name}' deleted")
            self._job_presets()

        self._preset_job(job)

    def apply_preset(self, name: str) -> None:
        """Apply a saved preset (a load setting in it reloads the model, the chat kept)."""

        def job(_job: Job[Any]) -> None:
            from desklm.engine import PresetStore, apply_preset

            res = apply_preset(self.session, name, PresetStore())
            self.message.emit("info", res.message.splitlines()[0] if res.message else "")
            self._command_done(res)
            self.settingsLoaded.emit(self.session.settings.copy())
            self._job_presets()

        self._preset_job(job)

    def _preset_job(self, body: Any) -> None:
        def job(j: Job[Any]) -> None:
            try:
                body(j)
            except LoadCancelled:
                self._load_stopped()
            except DeskLMError as e:
                self.message.emit("warning", str(e))

        if self.busy:
            self.queue_job(lambda: self._preset_job(body))
            return
        self._run(State.COMMAND, job, "command")

    def show_help(self) -> None:
        """The slash commands, as (usage, description) rows (Help > Slash commands)."""
        self.helpShown.emit(help_rows())

    def list_presets(self) -> None:
        """Read the saved presets (a file: on the inference thread) for the Presets row."""
        self.runner.submit(lambda _job: self._job_presets(), "list", interrupt=False)

    def _job_presets(self) -> None:
        from desklm.engine import PresetStore

        store = PresetStore()  # a damaged file is moved aside and noted, never raised
        names = [p.name for p in store.list_all()]
        self.presetsListed.emit(names, store.last_for(self.session.model_path) or "")

    def remove_attachment(self, name: str) -> None:
        """Take a file off the next message (its chip's ×)."""
        self.runner.submit(lambda _job: self.session.detach(name), "command", interrupt=False)

    def _message_job(self, body: Any) -> None:
        if self.busy:
            self.message.emit("info", "Wait for the reply to finish (or press Stop) first.")
            return

        def job(_job: Job[Any]) -> None:
            try:
                body()
            except DeskLMError as e:
                self.message.emit("warning", str(e))
                return
            finally:
                self.conversationOpened.emit(self.session.record())
            if self.session.save_error:
                self.message.emit("error", self.session.save_error)
            self._job_list()

        self._run(State.COMMAND, job, "command")

    def _command(self, text: str) -> None:
        self._run(State.COMMAND, lambda job: self._job_command(text), "command")

    def _job_command(self, text: str) -> None:
        try:
            result = self.session.run_command(text)
        except DeskLMError as e:
            self.message.emit("warning", str(e))
            return
        # a fresh chat, or a new version of a reply (/regen, /alt, /edit): drawn again before
        # the command reports done
        if result.redraw:
            self.conversationOpened.emit(self.session.record())
        self._report(result)
        self._command_done(result)
        if result.reset:
            self._job_list()

    def _command_done(self, result: CommandResult) -> None:
        self.commandDone.emit(result)
        if result.reloaded and self.runtime.backend.load_info is not None:
            self._loaded(self.runtime.backend.load_info)

    def _report(self, res: CommandResult) -> None:
        """A typed command's outcome as what the window draws: the help table, the chips, a
        status line, or output in the transcript (the window never reads command names)."""
        data = res.data if isinstance(res.data, dict) else {}
        if res.command == "help":
            self.show_help()
            return
        if res.command == "preset":
            self._job_presets()
            if "presets" not in data:  # saved, deleted or applied: a status line says so
                self.message.emit("info", (res.message.splitlines() or [""])[0])
                return
        if res.command == "attach" and isinstance(data.get("pending"), list):
            self.attachmentsChanged.emit(data["pending"])
            if "attachment" in data:  # the chip says it; the status line says where it goes
                self.message.emit("info", res.message)
                return
        if res.reset:
            self.message.emit("info", "Conversation and KV cache cleared")
        elif (res.command in ("regen", "edit") and res.turn is not None) or (
            res.command == "alt" and "reply" in data
        ):
            # the chat was drawn again with the new version in place: no echo of it
            self.message.emit("info", f"Version {data['version']}/{data['versions']}")
        elif res.message:
            self.output.emit(res.message)
        if res.reloaded:
            self.message.emit(
                "info", "Reloaded — the conversation is kept and re-read on the next turn"
            )

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Settings from the panel. Live ones run as a quick command; reload ones reload."""
        if self.state is State.CLOSING:
            return
        reload = self.session.reloads(values)
        if reload:
            self.queue_stop()
        if self.busy:
            self.queue_job(lambda: self.apply_settings(values))
            return
        state = State.LOADING if reload and self.load_info is not None else State.COMMAND
        self._run(state, lambda job: self._job_apply(values), "settings")

    def _job_apply(self, values: dict[str, Any]) -> None:
        try:
            res = self.session.apply_settings(values)
            # the panel shows the value; the status line says it took effect (nothing is
            # written into the chat for a moved slider)
            self.message.emit("info", (res.message.splitlines() or [""])[0])
            if res.reloaded:
                self.message.emit(
                    "info", "Reloaded — the conversation is kept and re-read on the next turn"
                )
            self._command_done(res)
        except LoadCancelled:
            self._load_stopped()
        except DeskLMError as e:
            self.message.emit("warning", str(e))
        self.settingsLoaded.emit(self.session.settings.copy())  # the values in effect now

    def tune(self) -> None:
        """Sweep thread counts (and GPU layers with a GPU); Stop cancels."""
        if self.state is not State.IDLE:
            self.message.emit("info", "Tuning waits until the model is loaded and idle.")
            return
        self._run(State.TUNING, self._job_tune, "tune")

    def _job_tune(self, job: Job[Any]) -> None:
        from desklm.engine import autotune

        try:  # with a GPU the tuner also tries 0, half and all GPU layers
            result = autotune(
                self.session,
                progress=lambda i, n, what: self.tuneProgress.emit(i, n, what),
                cancelled=lambda: job.cancelled,
            )
        except DeskLMError as e:
            self.message.emit("warning", str(e))
            return
        finally:
            self.settingsLoaded.emit(self.session.settings.copy())
        self.tuned.emit(result)

    # --- conversations -----------------------------------------------------------------------
    def list_conversations(self) -> None:
        """Refresh the Chats list (a file read: on the inference thread, never the UI's)."""
        self.runner.submit(lambda _job: self._job_list(), "list", interrupt=False)

    def _job_list(self) -> None:
        store = self.session.store
        if store is not None:
            items = store.list_all()
            self.conversationsListed.emit(items, list(store.problems))
        try:  # off the UI thread: the disk tier's size is read from the files
            self.kvUsage.emit(self.session.kv_usage())
        except OSError as e:
            log.info("chat cache use unavailable: %s", e)

    def _switch(self, body: Any, reveal: str = "") -> None:
        self.queue_stop()
        if self.busy:
            self.queue_job(lambda: self._switch(body, reveal))
            return

        def job(_job: Job[Any]) -> None:
            ok = False
            try:
                body()
                ok = True
            except DeskLMError as e:
                self.message.emit("warning", str(e))
            finally:
                self.conversationOpened.emit(self.session.record())
                if ok and reveal:
                    self.messageRevealed.emit(reveal)
                self._job_list()

        self._run(State.SWITCHING, job, "switch")

    def new_conversation(self) -> None:
        self._switch(self.session.new_conversation)

    def open_at(self, conv_id: str, message_id: str) -> None:
        """Open a chat at one message (a search result): on the branch that holds it, which
        becomes the one shown; messageRevealed then names it."""

        def body() -> None:
            self._open(conv_id)
            if message_id:
                self.session.reveal_message(message_id)

        self._switch(body, reveal=message_id)

    def open_conversation(self, conv_id: str) -> None:
        if conv_id != self.session.conv_id or self.state is State.GENERATING:
            self._switch(lambda: self._open(conv_id))

    def _open(self, conv_id: str) -> None:
        if conv_id != self.session.conv_id:
            self.session.open_conversation(conv_id)

    def delete_conversation(self, conv_id: str) -> None:
        def delete() -> None:
            store = self.session.store
            if store is None:
                return
            if conv_id == self.session.conv_id:
                self.session.reset()  # the shown chat is gone: start an empty one
                self.session.new_conversation()
            try:
                store.delete(conv_id)
                self.session.forget_kv(conv_id)  # its KV snapshot encodes the chat's text
            except OSError as e:
                raise DeskLMError(f"could not delete the chat: {e}") from None

        self._switch(delete)

    def rename_conversation(self, conv_id: str, title: str) -> None:
        def rename(_job: Job[Any]) -> None:
            try:
                if conv_id == self.session.conv_id:
                    self.session.title = " ".join(title.split())[:200]
                    self.session.save()  # an empty chat has no file yet: the title waits
                elif self.session.store is not None:
                    self.session.store.rename(conv_id, title)
            except (DeskLMError, OSError) as e:
                self.message.emit("warning", f"could not rename the chat: {e}")
            self._job_list()

        self.runner.submit(rename, "rename", interrupt=False)

    def export(self, path: str) -> None:
        def export(_job: Job[Any]) -> None:
            try:
                out = self.session.export(Path(path))
            except DeskLMError as e:
                self.message.emit("warning", str(e))
                return
            self.message.emit("info", f"Conversation written to {out}")
            self.commandDone.emit(
                CommandResult("export", f"conversation written to {out}", {"path": str(out)})
            )

        self.runner.submit(export, "export", interrupt=False)

    def reset_conversation(self) -> None:
        """/reset from the menu: a running reply is stopped first, then the chat cleared."""
        if self.state is State.GENERATING:
            self.stop()
            self.queue.insert(0, "/reset")
            self.queueChanged.emit(list(self.queue))
        else:
            self.submit("/reset")

    # --- stopping ------------------------------------------------------------------------------
    def stop(self) -> bool:
        """Stop the reply, load or tuning in progress (Esc). True if something was stopped."""
        if self.state in STOPPABLE and self._job is not None:
            self._job.cancel()
            return True
        return False

    def queue_stop(self) -> None:
        """Before a switch or load: a running reply stops (it is kept, marked cancelled)."""
        if self.state is State.GENERATING:
            self.stop()

    def queue_job(self, fn: Any) -> None:
        """Run ``fn`` (a request) as soon as the controller is at rest again."""

        def once(state: State) -> None:
            if state in (State.IDLE, State.NO_MODEL):
                self.stateChanged.disconnect(once)
                fn()

        self.stateChanged.connect(once)

    # --- tools ---------------------------------------------------------------------------------
    def _ask_tool(self, req: Any) -> Any:
        """The session's consent callback (inference thread): show the request, wait for the
        window's answer; a Stop ends the wait (the call is then not made)."""
        self.toolPermission.emit(req)
        try:
            with self._tool_answered:
                while (
                    req.call_id not in self._tool_answers
                    and not req.cancelled()
                    and self.state is not State.CLOSING
                ):
                    self._tool_answered.wait(0.1)
                answer = self._tool_answers.pop(req.call_id, "deny")
        finally:
            self.toolPermissionClosed.emit(req.call_id)
        return Decision(answer)

    def answer_tool(self, call_id: str, decision: str) -> None:
        """The user's answer to a tool request: "once", "always" or "deny"."""
        with self._tool_answered:
            self._tool_answers[call_id] = str(Decision(decision))
            self._tool_answered.notify_all()

    def force_tool(self, name: str | None) -> None:
        """Make the next reply a call to tool ``name`` ("*": any tool on; None: let the model
        choose): for models that do not call tools by themselves."""
        self.session.force_tool = name or None

    # --- shutdown ------------------------------------------------------------------------------
    def shutdown(self, on_close: Any = None) -> float:
        """Stop everything, save the chat (and run ``on_close``, e.g. writing the app
        settings) on the inference thread, free the model, join both threads (2 s each).
        Returns the seconds it took. Safe to call twice."""
        if self.state is State.CLOSING:
            return 0.0
        t0 = time.perf_counter()
        self._enter(State.CLOSING)
        self.queue.clear()
        # the running reply stops (kept, marked cancelled) and waiting model work is dropped;
        # queued writes (settings, a rename, an export) still run before the final save
        ok = self.runtime.close(
            JOIN_TIMEOUT_S,
            kinds=("turn", "load", "settings", "tune", "switch", "command", "api", "list"),
            before=on_close,
        )
        if self.sampler_thread.isRunning():
            # stop() must run in the sampler's own thread: its QTimer belongs to that thread
            QMetaObject.invokeMethod(
                self.sampler, "stop", Qt.ConnectionType.BlockingQueuedConnection
            )
            self.sampler_thread.quit()
            self.sampler_thread.wait(int(JOIN_TIMEOUT_S * 1000))
        if not ok:
            log.error("the inference thread did not stop within %.1f s", JOIN_TIMEOUT_S)
        return time.perf_counter() - t0
