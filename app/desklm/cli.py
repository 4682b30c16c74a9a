"""Command line: ``desklm`` (the window), ``desklm chat`` (terminal chat), and friends.

Every failure a user can cause prints one line ``desklm: error: <reason>`` to stderr and exits 2.
No traceback reaches the user; unexpected errors are logged to the log file and summarised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from desklm import __version__
from desklm.engine.fmt import fmt_bytes
from desklm.engine.settings import settings_from_args
from desklm.errors import DeskLMError

log = logging.getLogger("desklm")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from desklm.engine.settings import add_arguments

    g = p.add_argument_group("model and settings (a flag for every setting)")
    g.add_argument("--model", metavar="PATH",
                   help="GGUF file to load (default: the embedded model)")
    add_arguments(g)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="desklm",
        description="Private desktop chat with local GGUF models. "
        "With no command, opens the window.",
    )
    p.add_argument("--version", action="version", version=f"desklm {__version__}")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep conversations, settings and logs under DIR (also DESKLM_DATA_DIR)")
    p.add_argument("--debug", action="store_true", help="log debug detail to the log file")
    p.add_argument("--self-test", action="store_true",
                   help="open the window, chat once on the model, /reset, print a JSON summary")
    p.add_argument("--probe-model", metavar="PATH", help=argparse.SUPPRESS)
    p.add_argument("--screenshot", metavar="PATH",
                   help="with --self-test: save a PNG of the window")
    _add_model_args(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    gui = sub.add_parser("gui", help="open the window (the default)")
    _add_model_args(gui)

    chat = sub.add_parser(
        "chat", help="chat in the terminal; reads one message per line from stdin")
    _add_model_args(chat)
    chat.add_argument("--json", action="store_true",
                      help="print one JSON object per turn (and per command) instead of text")
    chat.add_argument("--no-save", action="store_true",
                      help="do not save this conversation")
    chat.add_argument("--resume", metavar="ID",
                      help="continue a saved conversation (see desklm history list)")

    models = sub.add_parser("models", help="models on this machine, and downloads")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ml = msub.add_parser("list", help="the embedded model, models opened before, and GGUF "
                         "files in the Hugging Face cache")
    ml.add_argument("--json", action="store_true", help="print JSON")
    mp = msub.add_parser("pull", help="download a GGUF file from Hugging Face")
    mp.add_argument("repo", help="repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    mp.add_argument("file", nargs="?", help="which .gguf file (lists them when omitted)")

    bench = sub.add_parser("bench", help="measure speed against raw llama-cpp-python, or "
                           "--tune: find the fastest settings for this machine")
    _add_model_args(bench)
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--runs", type=int, default=3, metavar="N",
                       help="interleaved runs per path (default 3)")
    bench.add_argument("--gen-tokens", type=int, default=128, metavar="N",
                       help="tokens generated per run (default 128)")
    bench.add_argument("--plot", metavar="PATH", help="also draw a PNG chart")
    bench.add_argument("--no-gui", action="store_true", help="skip the window's path")
    bench.add_argument("--long-chats", action="store_true",
                       help="also time turns on 50 / 500 / 5,000-message histories and switching "
                       "back to a chat with and without its KV snapshot")
    bench.add_argument("--tune", action="store_true",
                       help="sweep threads (and GPU layers) and remember the fastest")

    hist = sub.add_parser("history", help="saved conversations")
    hsub = hist.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hl = hsub.add_parser("list", help="list saved conversations, newest first")
    hl.add_argument("--json", action="store_true", help="print JSON")
    hs = hsub.add_parser("show", help="print a conversation as Markdown")
    hs.add_argument("id")
    he = hsub.add_parser("export", help="export a conversation")
    he.add_argument("id")
    he.add_argument("--format", choices=("md", "json"), default="md")
    he.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    return p


def ensure_std_streams() -> None:
    """A windowed build (no console) has sys.stdout/stderr = None and may have no valid file
    descriptors 1 and 2, which llama-cpp-python duplicates while loading: point them at the
    null device so nothing that writes there can fail."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115


def main(argv: Sequence[str] | None = None) -> int:
    ensure_std_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.probe_model:  # internal: the child process of engine.probe
        from desklm.engine.llm import probe_child_main

        return probe_child_main(args.probe_model)
    if args.data_dir:
        os.environ["DESKLM_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from desklm.logs import install_excepthooks, setup_logging

    setup_logging(logging.DEBUG if args.debug else logging.INFO)
    try:
        if args.command == "chat":
            install_excepthooks()
            return _flushed(cmd_chat(args))
        if args.command == "history":
            return _flushed(cmd_history(args))
        if args.command == "models":
            return _flushed(cmd_models(args))
        if args.command == "bench":
            return _flushed(cmd_bench(args))
        return cmd_gui(args)
    except BrokenPipeError:  # `desklm history list | head -1`: the reader left; so do we
        return _stdout_gone()
    except DeskLMError as e:
        _err(str(e))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: log the traceback, show one line
        log.exception("internal error")
        _err(f"internal error: {type(e).__name__}: {e} (details in the log file)")
        return EXIT_INTERNAL


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE


def _flushed(rc: int) -> int:
    """Flush stdout now, so a reader that left shows up here (BrokenPipeError) and not as
    "Exception ignored" noise at interpreter exit."""
    if sys.stdout is not None:
        sys.stdout.flush()
    return rc


def _stdout_gone() -> int:
    """Stdout's reader has gone: point fd 1 at the null device so the interpreter's own
    flush at exit has nowhere to fail, and leave quietly, as other command-line tools do."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return EXIT_BROKEN_PIPE


def gui_main() -> int:
    """Entry point for the windowed launcher (no console on Windows)."""
    return main(sys.argv[1:])


def _err(msg: str) -> None:
    if sys.stderr is not None:
        print(f"desklm: error: {msg}", file=sys.stderr, flush=True)


def cmd_gui(args: argparse.Namespace) -> int:
    from desklm.ui.preflight import check_display

    problem = check_display()  # before Qt: no display or missing X libraries is one line
    if problem:
        raise DeskLMError(problem)
    from desklm.ui.app import run_gui

    return run_gui(args)


# --- terminal chat ----------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    from desklm.engine.llm import LoadCancelled
    from desklm.engine.models import resolve_model
    from desklm.engine.session import ChatSession
    from desklm.engine.store import ConversationStore

    settings = settings_from_args(args)
    store = None if args.no_save else ConversationStore()
    if args.resume and store is None:
        raise DeskLMError("--resume continues a saved conversation; drop --no-save")
    session = ChatSession(resolve_model(args.model), settings, store=store)
    state = _chat_state(session)
    _install_sigint(session)
    _install_sigterm(session)
    state["busy"] = True  # SIGTERM during the load cancels it
    try:
        info = session.load()
    except LoadCancelled:
        if state["quit"]:
            return 0
        raise
    finally:
        state["busy"] = False
    if args.model:
        from desklm.engine.models import remember_model

        remember_model(info.path)
    if args.setting_n_threads is None:  # threads found by `desklm bench --tune`, if any
        _apply_tuned(session, info.path)
    out = sys.stdout
    tty = sys.stdin.isatty() and out.isatty()
    for note in info.notes:
        print(f"desklm: note: {note}", file=sys.stderr)
    if not args.json and tty:
        print(f"DeskLM {__version__} — {info.name}, context {info.n_ctx} tokens, "
              f"format {info.chat_format}. /help for commands, Ctrl+D to quit.", file=sys.stderr)
    if args.resume:
        print(resume_recap(session.open_conversation(args.resume)), file=sys.stderr)
    safe_out = _SafeOut(out, on_broken=session.stop)
    try:
        rc = chat_loop(session, sys.stdin, safe_out, as_json=args.json, interactive=tty)
    except _Quit:
        rc = 0
    finally:  # whatever ends the loop, the conversation so far (and its KV cache) is saved
        saved = store is not None and session.close()
    if session.save_error:
        _err(session.save_error)
    if saved and tty and not state["quit"]:
        print(f"saved as conversation {session.conv_id} (desklm history show {session.conv_id})",
              file=sys.stderr)
    if safe_out.broken:
        return _stdout_gone()
    return rc


def _apply_tuned(session: Any, model: Path) -> None:
    """Threads found by ``desklm bench --tune``; a stale result (fewer cores now) is a note."""
    from desklm.engine.bench import tuned_for

    tuned = tuned_for(model)
    if not tuned:
        return
    try:
        session.apply_settings({"n_threads": tuned["n_threads"],
                                "n_threads_batch": tuned["n_threads_batch"]})
    except (DeskLMError, KeyError) as e:
        print(f"desklm: note: ignored the tuned threads for this model ({e})", file=sys.stderr)


class _Quit(BaseException):
    """SIGTERM or SIGHUP while waiting for input: leave the chat loop, save, exit 0."""


def _chat_state(session: Any) -> dict[str, bool]:
    state: dict[str, bool] = getattr(session, "_sigint_state", None) or {
        "busy": False, "quit": False}
    state.setdefault("quit", False)
    session._sigint_state = state
    return state


def _install_sigterm(session: Any) -> None:
    """SIGTERM (a logout, ``kill``) and SIGHUP (the terminal closed) end the chat like a quit:
    a reply in flight is stopped and kept, marked cancelled; the conversation is saved."""
    from desklm.engine.signals import install_quit_handlers

    state = _chat_state(session)

    def on_quit(signum: int) -> None:
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
            print(f"desklm: note: input line {n} is not valid UTF-8; the bytes that are not "
                  "were replaced with \ufffd", file=sys.stderr, flush=True)
            yield raw.decode("utf-8", errors="replace")


def resume_recap(rec: dict[str, Any], last: int = 2) -> str:
    """One line: which conversation goes on, and its last messages."""
    from desklm.engine.conversation import preview

    msgs = rec.get("messages") or []
    tail = " | ".join(f"{'you' if m.get('role') == 'user' else 'model'}: "
                      f"{preview(str(m.get('content', '')), 50)}" for m in msgs[-last:])
    return (f"resuming \"{rec.get('title') or 'New chat'}\" ({len(msgs)} messages)"
            + (f"; last: {tail}" if tail else ""))


def _install_sigint(session: Any) -> None:
    """Ctrl+C during a reply stops the reply; at the prompt it quits."""
    state = _chat_state(session)

    def handler(signum: int, frame: Any) -> None:
        if state["busy"]:
            session.stop()
        else:
            raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, handler)


def chat_loop(session: Any, inp: TextIO, out: TextIO | _SafeOut, *, as_json: bool,
              interactive: bool = False) -> int:
    from desklm.engine import commands
    from desklm.engine.fmt import fmt_rate, fmt_secs

    state = getattr(session, "_sigint_state", None) or {"busy": False, "quit": False}

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()

    lines = read_lines(inp)
    while not state.get("quit") and not getattr(out, "broken", False):
        if interactive:
            out.write("> ")
            out.flush()
        line = next(lines, None)
        if line is None:
            break
        text = line.rstrip("\r\n")
        if "\x00" in text and not text.replace("\x00", "").strip():
            print("desklm: note: skipped a message that held only NUL characters",
                  file=sys.stderr, flush=True)
            continue
        if not text.strip():
            continue
        try:
            if commands.is_command(text):
                res = session.run_command(text)
                if as_json:
                    emit(res.to_dict())
                else:
                    out.write(res.message + "\n")
                    out.flush()
                continue
            def stream(piece: str) -> None:
                if state.get("quit"):  # a SIGTERM that came before the reply began
                    session.stop()
                if not as_json:
                    out.write(piece)
                    out.flush()
            state["busy"] = True
            try:
                result = session.send(text, stream)
            finally:
                state["busy"] = False
            if session.save_error:
                _err(session.save_error)
            if as_json:
                emit({**result.to_dict(), "conversation_id": session.conv_id})
            else:
                s = result.stats
                out.write("\n")
                if s.trimmed:
                    out.write(f"[dropped {len(s.trimmed)} earlier message(s) to fit the context: "
                              + "; ".join(f"{d['role']}: {d['preview']}" for d in s.trimmed)
                              + "]\n")
                out.write(f"[{s.completion_tokens} tokens, {fmt_rate(s.gen_tokens_per_s)} tok/s, "
                          f"first token {fmt_secs(s.ttft_s)}, context {s.context_used}/{s.n_ctx}, "
                          f"{s.finish_reason}"
                          + (f", restored {s.restored_tokens} tokens from cache"
                             if s.restored_tokens else "") + "]\n")
                out.flush()
        except DeskLMError as e:
            if as_json:
                emit({"error": str(e)})
            else:
                _err(str(e))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        from desklm.engine.models import catalog

        items = catalog()
        if args.json:
            print(json.dumps(items, ensure_ascii=False))
        else:
            for it in items:
                print(f"{fmt_bytes(float(it['size'])):>10}  {it['source']:<19} {it['path']}")
        return 0
    from desklm.engine import hub

    files = hub.list_gguf_files(args.repo)
    if args.file is None:
        if len(files) != 1:
            print(f"{args.repo} has {len(files)} GGUF files; pick one:", file=sys.stderr)
            for f in files:
                print(f"{fmt_bytes(f.size):>10}  {f.path}")
            return 0 if files else 2
        chosen = files[0]
    else:
        match = [f for f in files if f.path == args.file or Path(f.path).name == args.file]
        if not match:
            raise DeskLMError(f"{args.repo} has no file '{args.file}'; it has: "
                              + ", ".join(f.path for f in files))
        chosen = match[0]
    t0 = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if sys.stderr is None or (now - last[0] < 0.2 and done < total):
            return
        last[0] = now
        speed = done / max(1e-6, now - t0)
        eta = (total - done) / speed if speed > 0 and total else 0
        pct = 100 * done / total if total else 0
        print(f"\r{chosen.path}: {pct:5.1f}%  {fmt_bytes(done)} / {fmt_bytes(total)}  "
              f"{fmt_bytes(speed)}/s  ETA {eta:,.0f} s   ", end="", file=sys.stderr, flush=True)

    path = hub.download(chosen, progress)
    if sys.stderr is not None:
        print(file=sys.stderr)
    print(path)
    print(f"verified sha256; chat with it: desklm chat --model '{path}'", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from desklm import benchrun
    from desklm.engine.models import resolve_model

    model = resolve_model(args.model)
    settings = settings_from_args(args)
    if args.runs < 1 or args.gen_tokens < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    if args.tune:
        r = benchrun.run_tune(model, settings, say=benchrun._stderr)
        if args.json:
            print(benchrun.dump(r))
        else:
            for t in r.trials:
                print(f"GPU layers {t['n_gpu_layers']:>3}  threads {t['threads']:>2}  "
                      f"generation {t['gen_tps']:7.1f} tok/s  prompt {t['prompt_tps']:8.1f} tok/s")
            print(f"fastest: n_threads {r.n_threads}, n_threads_batch {r.n_threads_batch}, "
                  f"GPU layers {r.n_gpu_layers}; remembered for this model on this machine")
        return 0
    if not args.no_gui:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = benchrun.run(model, settings, runs=args.runs, gen_tokens=args.gen_tokens,
                       gui=not args.no_gui, say=benchrun._stderr, long_chats=args.long_chats)
    if args.plot:
        out["plot"] = str(benchrun.plot(out, Path(args.plot)))
    print(benchrun.dump(out) if args.json else benchrun.table(out))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from desklm.engine.store import ConversationStore, StoreError, to_markdown

    store = ConversationStore()
    try:
        if args.history_command == "list":
            items = store.list_all()
            for problem in store.problems:
                _err(problem)
            if args.json:
                print(json.dumps(items, ensure_ascii=False))
            elif not items:
                print("no saved conversations")
            else:
                import datetime as dt

                for it in items:
                    when = dt.datetime.fromtimestamp(it["updated"]).strftime("%Y-%m-%d %H:%M")
                    print(f"{it['id']}  {when}  {it['messages']:3d} msgs  {it['title']}")
            return 0
        rec = store.load(args.id)
    except StoreError as e:
        raise DeskLMError(str(e)) from None
    if args.history_command == "show":
        print(to_markdown(rec), end="")
        return 0
    if args.output:
        from desklm.engine.store import export_record

        out = export_record(rec, Path(args.output), args.format)
        print(f"written to {out}", file=sys.stderr)
    else:
        from desklm.engine.store import export_text

        sys.stdout.write(export_text(rec, args.format))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
