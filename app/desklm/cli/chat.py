"""``desklm chat``: the terminal chat, on a local model or a server's (the same runtime as
the window)."""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from desklm import __version__
from desklm.cli.common import connect, err, stdout_gone
from desklm.engine.settings import settings_from_args
from desklm.errors import DeskLMError


# --- terminal chat ----------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    """``desklm chat``: on a local model, or with ``--server URL`` on a model served elsewhere
    (the same loop, signals, saving and output either way)."""
    from desklm.engine.backends.base import LoadCancelled
    from desklm.engine.models.catalog import resolve_model
    from desklm.engine.runner import OnRunner
    from desklm.engine.runtime import Runtime
    from desklm.engine.store.files import ConversationStore

    settings = settings_from_args(args)
    store = None if args.no_save else ConversationStore()
    if args.resume and store is None:
        raise DeskLMError("--resume continues a saved conversation; drop --no-save")
    remote = connect(args) if getattr(args, "server", None) else None
    # the one inference thread, the local engine and the session, wired as in the window
    rt = Runtime(settings, store, model_path=None if remote else resolve_model(args.model))
    hub = rt.enable_tools()  # MCP servers of mcp.json; none runs until a tool of its is on
    for problem in hub.problems:
        print(f"desklm: note: tools: {problem}", file=sys.stderr)
    if remote is not None:  # connected already: the server holds the model
        rt.runner.call(lambda: rt.use_remote(remote, Path(remote.model)))
    session: Any = OnRunner(rt.session, rt.runner)
    state = _chat_state(session)
    _install_sigint(session)
    _install_sigterm(session)
    if remote is not None:
        info = remote.load_info
    else:
        state["busy"] = True  # SIGTERM during the load cancels it
        try:
            info = session.load()
        except LoadCancelled:  # only a signal stops a load here: SIGTERM quits, Ctrl+C too
            return 0 if state["quit"] else 130
        finally:
            state["busy"] = False
        if args.model:
            from desklm.engine.models.catalog import remember_model

            remember_model(info.path)
        if args.setting_n_threads is None:  # threads found by `desklm bench --tune`, if any
            _apply_tuned(session, info.path)
    out = sys.stdout
    tty = sys.stdin.isatty() and out.isatty()
    for note in info.notes:
        print(f"desklm: note: {note}", file=sys.stderr)
    if not args.json and tty:
        where = (
            f"on the server {remote.where}" if remote is not None else f"format {info.chat_format}"
        )
        print(
            f"DeskLM {__version__} — {info.name}, context {info.n_ctx} tokens, {where}. "
            "/help for commands, Ctrl+D to quit.",
            file=sys.stderr,
        )
        if getattr(info, "format_note", ""):
            print(f"desklm: note: {info.format_note}", file=sys.stderr)
    if args.resume:
        print(resume_recap(session.open_conversation(args.resume)), file=sys.stderr)
    safe_out = _SafeOut(out, on_broken=session.stop)
    try:
        rc = chat_loop(session, sys.stdin, safe_out, as_json=args.json, interactive=tty)
    except _Quit:
        rc = 0
    finally:  # whatever ends the loop, the conversation so far (and its KV cache) is saved
        state["closing"] = True  # a second Ctrl+C / SIGHUP now must not cut the save short
        saved = store is not None and session.close()
        hub.close()
    if session.save_error:
        err(session.save_error)
    if saved and tty and not state["quit"]:
        print(
            f"saved as conversation {session.conv_id} (desklm history show {session.conv_id})",
            file=sys.stderr,
        )
    if safe_out.broken:
        return stdout_gone()
    return rc


def _apply_tuned(session: Any, model: Path) -> None:
    """Threads found by ``desklm bench --tune``; a stale result (fewer cores now) is a note."""
    from desklm.engine.tune import tuned_for

    tuned = tuned_for(model)
    if not tuned:
        return
    try:
        session.apply_settings(
            {"n_threads": tuned["n_threads"], "n_threads_batch": tuned["n_threads_batch"]}
        )
    except (DeskLMError, KeyError) as e:
        print(f"desklm: note: ignored the tuned threads for this model ({e})", file=sys.stderr)


class _Quit(BaseException):
    """SIGTERM or SIGHUP while waiting for input: leave the chat loop, save, exit 0."""


def _chat_state(session: Any) -> dict[str, bool]:
    state: dict[str, bool] = getattr(session, "_sigint_state", None) or {
        "busy": False,
        "quit": False,
    }
    state.setdefault("quit", False)
    session._sigint_state = state
    return state


def _install_sigterm(session: Any) -> None:
    """SIGTERM (a logout, ``kill``) and SIGHUP (the terminal closed) end the chat like a quit:
    a reply in flight is stopped and kept, marked cancelled; the conversation is saved."""
    from desklm.engine.signals import install_quit_handlers

    state = _chat_state(session)

    def on_quit(signum: int) -> None:
        if state.get("closing"):
            return
        state["quit"] = True
        if state["busy"]:
            session.stop()  # the reply ends at the next token; the loop then leaves
        else:
            raise _Quit

    install_quit_handlers(on_quit)


class _SafeOut:
    """Stdout for the chat loop: when the reader goes away (a closed pipe), the output is
    dropped and ``on_broken`` is called once (it stops the reply) instead of an exception
    that would lose the turn."""

    def __init__(self, out: TextIO, on_broken: Callable[[], None]) -> None:
        self.out, self.on_broken, self.broken = out, on_broken, False

    def _guard(self, fn: Callable[[], Any]) -> None:
        if self.broken:
            return
        try:
            fn()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.broken = True
            self.on_broken()

    def write(self, text: str) -> None:
        self._guard(lambda: self.out.write(text))

    def flush(self) -> None:
        self._guard(self.out.flush)

    def isatty(self) -> bool:
        return self.out.isatty()


def read_lines(inp: Any) -> Any:
    """Lines of input as text, never failing on what arrives: bytes that are not UTF-8 become
    U+FFFD (each such line is noted on stderr) instead of ending the chat."""
    buf = getattr(inp, "buffer", None)
    n = 0
    while True:
        n += 1
        if buf is None:
            line = inp.readline()
            if not line:
                return
            yield line
            continue
        raw = buf.readline()
        if not raw:
            return
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            print(
                f"desklm: note: input line {n} is not valid UTF-8; the bytes that are not "
                "were replaced with \ufffd",
                file=sys.stderr,
                flush=True,
            )
            yield raw.decode("utf-8", errors="replace")


class InputLines:
    """The input's lines (as :func:`read_lines` gives them), read by a thread of its own: the
    chat loop, on the main thread, and the tool-consent question, on the inference thread,
    take them from one queue. A question the turn's Stop ends (Ctrl+C, SIGTERM) stops waiting
    without taking a line, so the next line typed goes to the chat; a blocking read on the
    inference thread could only end with Enter. Waits poll, so a signal's handler runs on
    the main thread at once on every platform."""

    POLL_S = 0.1

    def __init__(self, inp: Any) -> None:
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(inp,), name="desklm-input", daemon=True).start()

    def _pump(self, inp: Any) -> None:
        try:
            for line in read_lines(inp):
                self._q.put(line)
        except (OSError, ValueError) as e:  # the input closed under us: the same as its end
            print(f"desklm: note: input ended: {e}", file=sys.stderr, flush=True)
        finally:
            self._q.put(None)

    def get(self, cancelled: Callable[[], bool] = lambda: False) -> str | None:
        """The next line; None at the end of the input, or once ``cancelled()`` is True."""
        while not cancelled():
            try:
                line = self._q.get(timeout=self.POLL_S)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)  # the end stays the end for the next reader
            return line
        return None

    def __iter__(self) -> InputLines:
        return self

    def __next__(self) -> str:
        line = self.get()
        if line is None:
            raise StopIteration
        return line


def resume_recap(rec: dict[str, Any], last: int = 2) -> str:
    """One line: which conversation goes on, and its last messages."""
    from desklm.engine.chat.conversation import preview

    msgs = rec.get("messages") or []
    tail = " | ".join(
        f"{'you' if m.get('role') == 'user' else 'model'}: {preview(str(m.get('content', '')), 50)}"
        for m in msgs[-last:]
    )
    return f'resuming "{rec.get("title") or "New chat"}" ({len(msgs)} messages)' + (
        f"; last: {tail}" if tail else ""
    )


def _install_sigint(session: Any) -> None:
    """Ctrl+C during a reply stops the reply; at the prompt it quits."""
    state = _chat_state(session)

    def on_interrupt(_signum: int) -> None:
        if state.get("closing"):
            return
        if state["busy"]:
            session.stop()
        else:
            raise KeyboardInterrupt

    from desklm.engine.signals import install_quit_handlers

    install_quit_handlers(on_interrupt, (signal.SIGINT,))


def chat_loop(
    session: Any, inp: TextIO, out: TextIO | _SafeOut, *, as_json: bool, interactive: bool = False
) -> int:
    from desklm.engine.chat import commands
    from desklm.engine.fmt import fmt_rate, fmt_secs

    state = getattr(session, "_sigint_state", None) or {"busy": False, "quit": False}

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()

    lines = InputLines(inp)
    if getattr(session, "tools", None) is not None:  # asks here before every tool call
        from desklm.cli.tools import terminal_consent, tool_event_printer

        def write(text: str) -> None:
            out.write(text)
            out.flush()

        session.consent = terminal_consent(lines.get, write, as_json)
        if not as_json:
            session.on_tool = tool_event_printer(write)
    while not state.get("quit") and not getattr(out, "broken", False):
        if interactive:
            out.write("> ")
            out.flush()
        line = next(lines, None)
        if line is None:
            break
        text = line.rstrip("\r\n")
        if "\x00" in text and not text.replace("\x00", "").strip():
            print(
                "desklm: note: skipped a message that held only NUL characters",
                file=sys.stderr,
                flush=True,
            )
            continue
        if not text.strip():
            continue
        if not as_json and not interactive and not commands.is_command(text):
            out.write(f"you: {text}\n")  # piped: the input is not on screen, so say it
        started = [False]
        try:

            def stream(piece: str, started: list[bool] = started) -> None:
                if state.get("quit"):  # a SIGTERM that came before the reply began
                    session.stop()
                if not as_json:
                    if not started[0]:  # label the reply, as the window does
                        started[0] = True
                        out.write(f"{reply_label(session)}: ")
                    out.write(piece)
                    out.flush()

            if commands.is_command(text):
                # a signal stops a command (a reload, /regen, /edit) instead of breaking into it
                state["busy"] = True
                try:
                    res = session.run_command(text, stream)
                finally:
                    state["busy"] = False
                if as_json:
                    emit(res.to_dict())
                elif res.turn is None:
                    out.write(res.message + "\n")
                    out.flush()
                if res.turn is None or as_json:
                    continue
                result = res.turn
                if res.data.get("versions", 1) > 1:
                    out.write(f"\n[version {res.data['version']}/{res.data['versions']}]")
            else:
                state["busy"] = True
                try:
                    result = session.send(text, stream)
                finally:
                    state["busy"] = False
            if session.save_error:
                err(session.save_error)
            for note in getattr(result, "notes", None) or []:
                print(f"desklm: note: {note}", file=sys.stderr, flush=True)
            if as_json:
                emit({**result.to_dict(), "conversation_id": session.conv_id})
            else:
                s = result.stats
                out.write("\n" if started[0] else f"{reply_label(session)}: (no text)\n")
                if s.trimmed:
                    out.write(
                        f"[dropped {len(s.trimmed)} earlier message(s) to fit the context: "
                        + "; ".join(f"{d['role']}: {d['preview']}" for d in s.trimmed)
                        + "]\n"
                    )
                out.write(
                    f"[{s.completion_tokens} tokens, {fmt_rate(s.gen_tokens_per_s)} tok/s, "
                    f"first token {fmt_secs(s.ttft_s)}, context {s.context_used}/{s.n_ctx}, "
                    f"{s.finish_reason}"
                    + (
                        f", restored {s.restored_tokens} tokens from cache"
                        if s.restored_tokens
                        else ""
                    )
                    + "]\n\n"
                )
                out.flush()
                if getattr(s, "note", "") and s.finish_reason == "error":
                    err(s.note)  # a reply cut short by a server: kept, and the reason said
        except DeskLMError as e:
            if as_json:
                emit({"error": str(e)})
            else:
                err(str(e))
    return 0


def reply_label(session: Any) -> str:
    """Who is speaking, for a reply in the terminal: the model's name."""
    info = getattr(session, "load_info", None)
    return (getattr(info, "name", "") or "model") if info is not None else "model"
