"""Starting the GUI, and the ``--self-test`` run that drives the real window end to end."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from desklm.engine import AppConfig, ConversationStore, Settings, settings_from_args
from desklm.logs import install_excepthooks
from desklm.ui.main_window import MainWindow

log = logging.getLogger("desklm.ui")


class ErrorBridge(QObject):
    """Carries exceptions from any thread to the UI thread (queued signal)."""

    raised = Signal(str)


def window_icon() -> QIcon:
    from desklm.resources import icon_path

    p = icon_path()
    return QIcon(str(p)) if p else QIcon()


def make_thread_safe_reporter(window: MainWindow) -> Any:
    bridge = ErrorBridge()
    bridge.raised.connect(window.report_error, Qt.ConnectionType.QueuedConnection)
    window._error_bridge = bridge  # type: ignore[attr-defined]  # kept alive with the window

    def on_error(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        bridge.raised.emit(
            f"Unexpected error: {exc_type.__name__}: {exc} (the details are in the log file)"
        )

    return on_error


SELF_TEST_MESSAGE = "Hello! In one sentence, what can you do?"
SELF_TEST_TIMEOUT_S = 240


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv or [sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setApplicationName("DeskLM")
    app.setOrganizationName("DeskLM")
    app.setDesktopFileName("desklm")
    app.setWindowIcon(window_icon())
    from desklm.ui import theme

    theme.watch_system()  # follow the system's light/dark scheme (View > Theme overrides)
    theme.apply(app)
    return app


def build_window(args: argparse.Namespace, settings: Settings | None = None) -> MainWindow:
    """The window as ``desklm`` starts it: saved app settings, then command-line overrides.

    The self-test keeps its chat and settings in a throw-away folder: it never touches the
    user's history or saved settings.
    """
    import tempfile

    if args.self_test:
        scratch = Path(tempfile.mkdtemp(prefix="desklm-self-test-"))
        store, config = (
            ConversationStore(scratch / "conversations"),
            AppConfig(scratch / "settings.json"),
        )
    else:
        store, config = ConversationStore(), AppConfig()
    saved = config.load()
    if settings is None:
        settings = Settings()
        for problem in settings.load_dict(saved.get("settings") or {}):
            log.warning("ignored a saved setting: %s", problem)
    settings = settings_from_args(args, settings)
    make_app()
    model = str(Path(args.model).expanduser()) if getattr(args, "model", None) else ""
    last = saved.get("last_model")
    if not model and isinstance(last, str) and last and Path(last).exists():
        model = last
    window = MainWindow(
        settings, model, show_dialogs=not args.self_test, store=store, config=config, saved=saved
    )
    if config.problem:
        window.notices.add(config.problem, "error")
    return window


def quit_on_signals(window: MainWindow) -> None:
    """SIGTERM (a logout, a shutdown, ``kill``) and SIGINT (Ctrl+C in the terminal that
    started us) quit like the Quit menu: the reply in flight stops and is saved marked
    cancelled, settings are saved, the process exits 0."""
    import signal

    from desklm.engine import QUIT_SIGNALS, install_quit_handlers

    def on_quit(signum: int) -> None:
        log.info("%s: quitting", signal.Signals(signum).name)
        QTimer.singleShot(0, window.close)

    install_quit_handlers(on_quit, (*QUIT_SIGNALS, signal.SIGINT))
    # Python runs signal handlers only between bytecodes: wake it while Qt's loop waits
    tick = QTimer(window)
    tick.setInterval(200)
    tick.timeout.connect(lambda: None)
    tick.start()


def run_gui(args: argparse.Namespace, settings: Settings | None = None) -> int:
    window = build_window(args, settings)
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    install_excepthooks(make_thread_safe_reporter(window))
    quit_on_signals(window)
    test = SelfTest(window, app, args.screenshot) if args.self_test else None
    window.start()
    rc = app.exec()
    window.shutdown()
    if test is not None:
        test.report()
        return rc if rc else test.rc
    return rc


class SelfTest(QObject):
    """Drives the real window like a user: wait for the model, send a message, wait for the
    streamed reply, screenshot, /reset, then print a JSON summary and quit."""

    def __init__(self, window: MainWindow, app: QApplication, screenshot: str | None) -> None:
        super().__init__(window)
        self.w, self.app, self.screenshot = window, app, screenshot
        self.rc = 1
        self.t0 = time.perf_counter()
        self.summary: dict[str, Any] = {"ok": False}
        # only the window's own (UI-thread) signals: see MainWindow's docstring
        window.modelLoaded.connect(self._loaded)
        window.firstToken.connect(self._first_token)
        window.replyFinished.connect(self._replied)
        window.commandFinished.connect(self._command)
        window.failed.connect(self._fail)
        QTimer.singleShot(
            SELF_TEST_TIMEOUT_S * 1000,
            lambda: self._fail(f"timed out after {SELF_TEST_TIMEOUT_S} s"),
        )
        QTimer.singleShot(0, self._shown)

    def _shown(self) -> None:
        import os

        self.summary["window_visible_s"] = round(time.perf_counter() - self.t0, 3)
        t0 = os.environ.get("DESKLM_LAUNCH_T0")  # set by `desklm bench` before it starts us
        if t0:
            self.summary["launch_to_window_s"] = round(time.time() - float(t0), 3)

    def _loaded(self, info: Any) -> None:
        if "model" in self.summary:
            return
        self.summary["loaded_at_s"] = round(time.perf_counter() - self.t0, 3)
        self.summary["model"] = info.name
        self.summary["model_path"] = str(info.path)
        self.summary["chat_format"] = info.chat_format
        self.summary["load_s"] = round(info.load_s, 3)
        QTimer.singleShot(0, lambda: self.w.submit(SELF_TEST_MESSAGE))

    def _first_token(self) -> None:
        self.summary["first_token_s"] = round(time.perf_counter() - self.t0, 3)

    def _replied(self, result: Any) -> None:
        s = result.stats
        self.summary.update(
            reply_chars=len(result.reply),
            reply_preview=result.reply[:80],
            completion_tokens=s.completion_tokens,
            tokens_per_s=s.gen_tokens_per_s,
            ttft_s=s.ttft_s,
            finish_reason=s.finish_reason,
            streamed_pieces=self.w.chat.streamed_pieces,
            transcript_flushes=self.w.chat.flush_count,
        )
        self.summary["gauges"] = self.w.gauges.readings()
        # the sidebar refreshes right after the reply is saved: screenshot once it has
        self.w.conversationsRefreshed.connect(self._after_save)

    def _after_save(self, items: Any) -> None:
        self.w.conversationsRefreshed.disconnect(self._after_save)
        self.summary["saved_conversations"] = len(items)
        if self.screenshot:
            path = Path(self.screenshot).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            if not self.w.grab().save(str(path)):
                self._fail(f"could not save the screenshot to {path}")
                return
            self.summary["screenshot"] = str(path)
        QTimer.singleShot(0, lambda: self.w.submit("/reset"))

    def _command(self, res: Any) -> None:
        if not res.reset:
            return
        ctx = self.w.gauges.ctx.value_text
        if self.w.chat.toPlainText().strip() or not ctx.startswith("0 /"):
            self._fail("/reset left the transcript or the context gauge non-empty")
            return
        self.summary["reset_ok"] = True
        if not self.summary.get("streamed_pieces"):
            self._fail("the model streamed no reply")
            return
        self.summary["ok"] = True
        self.summary["total_s"] = round(time.perf_counter() - self.t0, 3)
        self._finish(0)

    def _fail(self, reason: str) -> None:
        if self.summary.get("ok") is True or "error" in self.summary:
            return
        self.summary["error"] = reason
        self._finish(1)

    def _finish(self, rc: int) -> None:
        self.rc = rc
        self.w.close()
        self.app.exit(rc)

    def report(self) -> None:
        """Print the summary, once the window has shut down: while llama.cpp loads a model
        (a fallback may be loading) llama-cpp-python points the process's stdout and stderr at
        the null device, and a line printed then is lost."""
        out = json.dumps(self.summary, ensure_ascii=False)
        if sys.stdout is not None:
            print(out, flush=True)
        if self.rc and sys.stderr is not None:
            print(
                f"desklm: error: self-test failed: {self.summary.get('error')}",
                file=sys.stderr,
                flush=True,
            )
