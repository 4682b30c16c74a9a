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
from desklm.engine.fmt import fmt_bytes, fmt_transfer
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


def _add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a model on a server (vLLM, llama-server, Ollama, any "
                             "OpenAI-compatible API)")
    g.add_argument("--server", metavar="URL|NAME",
                   help="chat with a model served at URL (e.g. http://127.0.0.1:8000/v1), or a "
                   "saved connection's NAME; --model then names the served model")
    g.add_argument("--api-key-env", metavar="VAR",
                   help="read the server's API key from environment variable VAR")


class _VersionAction(argparse.Action):
    """``--version``: DeskLM's, and llama.cpp's version and build (read only when asked, so
    other commands do not pay for loading llama.cpp)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from desklm.engine import buildinfo

        sys.stdout.write(buildinfo.version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="desklm",
        description="Private desktop chat with local GGUF models. "
        "With no command, opens the window.",
    )
    p.add_argument("--version", action=_VersionAction,
                   help="print DeskLM's version, llama.cpp's version, build and backend")
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
    _add_server_args(chat)

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
    bench.add_argument("--search", action="store_true",
                       help="time chat search per keystroke on 2,000 generated saved chats")
    _add_server_args(bench)
    bench.add_argument("--api", action="store_true",
                       help="compare generation through the OpenAI API server with direct "
                       "generation (tokens/s and added time to first token)")

    serve = sub.add_parser("serve", help="serve the model to other apps through an "
                           "OpenAI-compatible API (no window)")
    _add_model_args(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; "
                       "any other address needs --api-key-env)")
    serve.add_argument("--port", type=int, default=8642, help="port (default 8642)")
    serve.add_argument("--api-key-env", metavar="VAR",
                       help="require the API key held in environment variable VAR "
                       "(Authorization: Bearer KEY)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages from ORIGIN (e.g. http://localhost:3000) call the "
                       "API; repeatable (default: none)")
    serve.add_argument("--max-queued", type=int, default=8, metavar="N",
                       help="requests that may wait for the model before 429 (default 8)")

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
    hq = hsub.add_parser("search", help="search titles and messages of every saved chat")
    hq.add_argument("query", nargs="+", help="words to find (case and accents ignored; the "
                    "last word also matches as a prefix)")
    hq.add_argument("--json", action="store_true", help="print JSON")
    hq.add_argument("--limit", type=int, default=20, metavar="N", help="at most N results")
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
        if args.command == "serve":
            install_excepthooks()
            return cmd_serve(args)
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
    """``desklm chat``: on a local model, or with ``--server URL`` on a model served elsewhere
    (the same loop, signals, saving and output either way)."""
    from desklm.engine.llm import LoadCancelled
    from desklm.engine.models import resolve_model
    from desklm.engine.session import ChatSession
    from desklm.engine.store import ConversationStore

    settings = settings_from_args(args)
    store = None if args.no_save else ConversationStore()
    if args.resume and store is None:
        raise DeskLMError("--resume continues a saved conversation; drop --no-save")
    from desklm.engine.runner import OnRunner, Runner

    remote = _connect(args) if getattr(args, "server", None) else None
    if remote is not None:  # connected already: the server holds the model
        target = ChatSession(Path(remote.model), settings, engine=remote, store=store)
        target.settings.limits = dict(remote.settings.limits)
    else:
        target = ChatSession(resolve_model(args.model), settings, store=store)
    runner = Runner(interrupt=target.stop)  # the one inference thread, as in the window
    if remote is None:
        target.engine.cancel_hook = lambda: (j := runner.current) is not None and j.cancelled
    session: Any = OnRunner(target, runner)
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
            from desklm.engine.models import remember_model

            remember_model(info.path)
        if args.setting_n_threads is None:  # threads found by `desklm bench --tune`, if any
            _apply_tuned(session, info.path)
    out = sys.stdout
    tty = sys.stdin.isatty() and out.isatty()
    for note in info.notes:
        print(f"desklm: note: {note}", file=sys.stderr)
    if not args.json and tty:
        where = (f"on the server {remote.where}" if remote is not None
                 else f"format {info.chat_format}")
        print(f"DeskLM {__version__} — {info.name}, context {info.n_ctx} tokens, {where}. "
              "/help for commands, Ctrl+D to quit.", file=sys.stderr)
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


def _connect(args: argparse.Namespace) -> Any:
    """A RemoteBackend connected as ``--server``/``--api-key-env``/``--model`` say."""
    from desklm.engine.backends.remote import RemoteBackend
    from desklm.engine.connections import resolve_server

    url, key, model = resolve_server(args.server, args.api_key_env, args.model)
    backend = RemoteBackend()
    backend.connect(url, key, model, settings_from_args(args))
    return backend


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
                _err(session.save_error)
            if as_json:
                emit({**result.to_dict(), "conversation_id": session.conv_id})
            else:
                s = result.stats
                out.write("\n" if started[0] else f"{reply_label(session)}: (no text)\n")
                if s.trimmed:
                    out.write(f"[dropped {len(s.trimmed)} earlier message(s) to fit the context: "
                              + "; ".join(f"{d['role']}: {d['preview']}" for d in s.trimmed)
                              + "]\n")
                out.write(f"[{s.completion_tokens} tokens, {fmt_rate(s.gen_tokens_per_s)} tok/s, "
                          f"first token {fmt_secs(s.ttft_s)}, context {s.context_used}/{s.n_ctx}, "
                          f"{s.finish_reason}"
                          + (f", restored {s.restored_tokens} tokens from cache"
                             if s.restored_tokens else "") + "]\n\n")
                out.flush()
                if getattr(s, "note", "") and s.finish_reason == "error":
                    _err(s.note)  # a reply cut short by a server: kept, and the reason said
        except DeskLMError as e:
            if as_json:
                emit({"error": str(e)})
            else:
                _err(str(e))
    return 0


def reply_label(session: Any) -> str:
    """Who is speaking, for a reply in the terminal: the model's name."""
    info = getattr(session, "load_info", None)
    return (getattr(info, "name", "") or "model") if info is not None else "model"


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
        pct = 100 * done / total if total else 0
        print(f"\r{chosen.path}: {pct:5.1f}%  {fmt_transfer(done, total, now - t0)}   ",
              end="", file=sys.stderr, flush=True)

    path = hub.download(chosen, progress)
    if sys.stderr is not None:
        print(file=sys.stderr)
    print(path)
    print(f"verified sha256; chat with it: desklm chat --model '{path}'", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):
        return cmd_bench_remote(args)
    from desklm import benchrun
    from desklm.engine.models import resolve_model

    if args.search:
        from desklm.engine.search import bench_search, bench_table

        r = bench_search(2000, say=benchrun._stderr)
        print(json.dumps(r) if args.json else bench_table(r))
        return 0
    model = resolve_model(args.model)
    settings = settings_from_args(args)
    if args.runs < 1 or args.gen_tokens < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    if args.api:
        from desklm.server.bench import run_api_bench, table

        res = run_api_bench(model, settings, runs=args.runs, gen_tokens=args.gen_tokens,
                            say=benchrun._stderr)
        print(benchrun.dump(res) if args.json else table(res))
        return 0
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


def cmd_bench_remote(args: argparse.Namespace) -> int:
    """``desklm bench --server URL``: DeskLM's remote path against the bare openai client."""
    from desklm.engine.remote_bench import bench_remote, table

    if args.runs < 1 or args.gen_tokens < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    backend = _connect(args)
    try:
        out = bench_remote(backend, runs=args.runs, gen_tokens=args.gen_tokens,
                           say=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        backend.close()
    print(json.dumps(out, ensure_ascii=False) if args.json else table(out))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``desklm serve``: load the model on the inference runner and serve it until Ctrl+C or
    SIGTERM; one line per request on stderr."""
    import threading

    from desklm.engine.llm import ChatEngine
    from desklm.engine.models import resolve_model
    from desklm.engine.runner import Runner
    from desklm.server import ApiServer

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "").strip()
        if not key:
            raise DeskLMError(f"--api-key-env {args.api_key_env}: that environment variable "
                              "is not set or empty")
    if args.max_queued < 1:
        raise DeskLMError("--max-queued must be at least 1")
    settings = settings_from_args(args)
    model = resolve_model(args.model)
    engine = ChatEngine()
    runner = Runner(interrupt=engine.stop)
    engine.cancel_hook = lambda: (j := runner.current) is not None and j.cancelled
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, on_signal)
    server = ApiServer(runner, lambda: engine, lambda: settings, max_waiting=args.max_queued)
    try:
        info = runner.call(lambda: engine.load(model, settings), "load")
        for note in info.notes:
            print(f"desklm: note: {note}", file=sys.stderr)
        if args.setting_n_threads is None:  # threads found by `desklm bench --tune`, if any
            from desklm.engine.bench import tuned_for

            tuned = tuned_for(info.path)
            if tuned:
                runner.call(lambda: engine.set_threads(tuned["n_threads"],
                                                       tuned["n_threads_batch"]))
        server.add_listener(lambda ev, rec: print(rec.line(), file=sys.stderr, flush=True)
                            if ev == "request" else None)
        url = server.start(args.host, args.port, key, args.cors_origin)
        print(f"listening on {url} (model {info.path.stem}, context {info.n_ctx}); "
              "Ctrl+C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(timeout=1.5)
        runner.shutdown(1.0)
        engine.unload()
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from desklm.engine.store import ConversationStore, StoreError, to_markdown

    store = ConversationStore()
    if args.history_command == "search":
        return _history_search(store, " ".join(args.query), args.limit, args.json)
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


def _history_search(store: Any, query: str, limit: int, as_json: bool) -> int:
    from desklm.engine.search import SearchIndex

    if limit < 1:
        raise DeskLMError("--limit must be at least 1")
    index = SearchIndex(store)
    try:
        r = index.search(query, limit=limit)
    finally:
        index.close()
    if as_json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
        return 0
    tty = sys.stdout.isatty()
    for h in r.hits:
        where = "title" if h.message_id is None else \
            f"{h.role} {h.message_id}{'' if h.active else ' (older version)'}"
        snippet = h.marked("\x1b[1m", "\x1b[0m") if tty else h.marked("«", "»")
        print(f"{h.conversation_id}  {h.title}  [{where}]\n    {snippet}")
    if not r.hits:
        print("no matches", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
