"""Command line: ``desklm`` (the window), ``desklm chat`` (terminal chat), and friends.

Every failure a user can cause prints one line ``desklm: error: <reason>`` to stderr and exits 2.
No traceback reaches the user; unexpected errors are logged to the log file and summarised.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from desklm.cli.common import EXIT_INTERNAL, EXIT_USER_ERROR, err, flushed, stdout_gone
from desklm.errors import DeskLMError

log = logging.getLogger("desklm")


def _add_model_args(p: argparse.ArgumentParser, *, sub: bool = True) -> None:
    """--model and a flag per setting. On a subcommand their defaults are suppressed, so
    ``desklm --ctx 1024 chat`` keeps the value given before the command."""
    from desklm.engine.settings import add_arguments

    default = argparse.SUPPRESS if sub else None
    g = p.add_argument_group("model and settings (a flag for every setting)")
    g.add_argument(
        "--model",
        metavar="PATH",
        default=default,
        help="GGUF file to load (default: the embedded model)",
    )
    add_arguments(g, default=default)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "a model on a server (vLLM, llama-server, Ollama, any OpenAI-compatible API)"
    )
    g.add_argument(
        "--server",
        metavar="URL|NAME",
        help="chat with a model served at URL (e.g. http://127.0.0.1:8000/v1), or a "
        "saved connection's NAME; --model then names the served model",
    )
    g.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="read the server's API key from environment variable VAR",
    )


def _add_common_args(p: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """--data-dir and --debug, before or after the command (``desklm chat --data-dir X`` and
    ``desklm --data-dir X chat`` mean the same; after the command it wins)."""
    default = argparse.SUPPRESS if sub else None
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="keep conversations, settings and logs under DIR (also DESKLM_DATA_DIR)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=default or False,
        help="log debug detail to the log file",
    )


class _VersionAction(argparse.Action):
    """``--version``: DeskLM's, and llama.cpp's version and build (read only when asked, so
    other commands do not pay for loading llama.cpp)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from desklm.engine import version_text

        sys.stdout.write(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="desklm",
        description="Private desktop chat with local GGUF models. "
        "With no command, opens the window.",
    )
    p.add_argument(
        "--version",
        action=_VersionAction,
        help="print DeskLM's version, llama.cpp's version, build and backend",
    )
    _add_common_args(p)
    p.add_argument(
        "--self-test",
        action="store_true",
        help="open the window, chat once on the model, /reset, print a JSON summary",
    )
    p.add_argument("--probe-model", metavar="PATH", help=argparse.SUPPRESS)
    p.add_argument(
        "--screenshot", metavar="PATH", help="with --self-test: save a PNG of the window"
    )
    _add_model_args(p, sub=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # accepted after the command too
    _add_common_args(common, sub=True)

    gui = sub.add_parser("gui", parents=[common], help="open the window (the default)")
    _add_model_args(gui)

    chat = sub.add_parser(
        "chat", parents=[common], help="chat in the terminal; reads one message per line from stdin"
    )
    _add_model_args(chat)
    chat.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per turn (and per command) instead of text",
    )
    chat.add_argument("--no-save", action="store_true", help="do not save this conversation")
    chat.add_argument(
        "--resume", metavar="ID", help="continue a saved conversation (see desklm history list)"
    )
    _add_server_args(chat)

    models = sub.add_parser(
        "models", parents=[common], help="models on this machine, and downloads"
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")  # none: list
    ml = msub.add_parser(
        "list",
        parents=[common],
        help="the embedded model, models opened before, and GGUF "
        "files in the Hugging Face cache (the default)",
    )
    ml.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    models.add_argument("--json", action="store_true", help="with no action: list as JSON")
    mp = msub.add_parser("pull", parents=[common], help="download a GGUF file from Hugging Face")
    mp.add_argument("repo", help="repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    mp.add_argument("file", nargs="?", help="which .gguf file (lists them when omitted)")

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="measure speed against raw llama-cpp-python, or "
        "--tune: find the fastest settings for this machine",
    )
    _add_model_args(bench)
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument(
        "--runs", type=int, default=3, metavar="N", help="interleaved runs per path (default 3)"
    )
    bench.add_argument(
        "--gen-tokens",
        type=int,
        default=128,
        metavar="N",
        help="tokens generated per run (default 128)",
    )
    bench.add_argument(
        "--long-tokens",
        type=int,
        default=1200,
        metavar="N",
        help="tokens of the long reply drawn in the window (default 1200)",
    )
    bench.add_argument(
        "--turns",
        type=int,
        default=20,
        metavar="N",
        help="turns of the multi-turn chat (default 20)",
    )
    bench.add_argument("--plot", metavar="PATH", help="also draw a PNG chart")
    bench.add_argument("--no-gui", action="store_true", help="skip the window's path")
    bench.add_argument(
        "--long-chats",
        action="store_true",
        help="also time turns on 50 / 500 / 5,000-message histories and switching "
        "back to a chat with and without its KV snapshot",
    )
    bench.add_argument(
        "--tune",
        action="store_true",
        help="sweep threads (and GPU layers) and remember the fastest",
    )
    bench.add_argument(
        "--search",
        action="store_true",
        help="time chat search per keystroke on 2,000 generated saved chats",
    )
    _add_server_args(bench)
    bench.add_argument(
        "--api",
        action="store_true",
        help="compare generation through the OpenAI API server with direct "
        "generation (tokens/s and added time to first token)",
    )
    bench.add_argument(
        "--concurrency",
        metavar="N,N,...",
        help="clients at once, e.g. 1,2,4,8: aggregate tokens/s, median and p95 time to "
        "first token and per-request tokens/s of DeskLM's API against DeskLM with parallel 1 "
        "and raw llama-cpp-python "
        "(and --peer); --gen-tokens per request (64 unless given)",
    )
    bench.add_argument(
        "--peer",
        metavar="PATH",
        help="with --concurrency: also measure this llama-server binary (-np parallel; "
        "tools/build_llama_server.sh builds one)",
    )

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the model to other apps through an OpenAI-compatible API (no window)",
    )
    _add_model_args(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; "
        "any other address needs --api-key-env)",
    )
    serve.add_argument("--port", type=int, default=8642, help="port (default 8642)")
    serve.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require the API key held in environment variable VAR (Authorization: Bearer KEY)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. http://localhost:3000) call the "
        "API; repeatable (default: none)",
    )
    serve.add_argument(
        "--max-queued",
        type=int,
        default=8,
        metavar="N",
        help="requests that may wait for the model before 429 (default 8)",
    )

    hist = sub.add_parser("history", parents=[common], help="saved conversations")
    hsub = hist.add_subparsers(dest="history_command", metavar="ACTION")  # none: list
    hl = hsub.add_parser(
        "list", parents=[common], help="list saved conversations, newest first (the default)"
    )
    hl.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    hist.add_argument("--json", action="store_true", help="with no action: list as JSON")
    hs = hsub.add_parser("show", parents=[common], help="print a conversation as Markdown")
    hs.add_argument("id")
    he = hsub.add_parser("export", parents=[common], help="export a conversation")
    he.add_argument("id")
    he.add_argument("--format", choices=("md", "json"), default="md")
    he.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    hq = hsub.add_parser(
        "search", parents=[common], help="search titles and messages of every saved chat"
    )
    hq.add_argument(
        "query",
        nargs="+",
        help="words to find (case and accents ignored; the last word also matches as a prefix)",
    )
    hq.add_argument("--json", action="store_true", help="print JSON")
    hq.add_argument("--limit", type=int, default=20, metavar="N", help="at most N results")
    from desklm.cli.tools import add_parser as add_tools_parser

    add_tools_parser(sub, common)
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


def opened_file_args(argv: Sequence[str]) -> list[str]:
    """``desklm FILE.gguf``: a file manager's "Open with DeskLM" (the menu entry's ``%f``), or
    a model dropped on the program, opens the window on that model."""
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(".gguf"):
        return ["gui", "--model", argv[0], *argv[1:]]
    return list(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ensure_std_streams()
    parser = build_parser()
    args = parser.parse_args(opened_file_args(sys.argv[1:] if argv is None else argv))
    if args.probe_model:  # internal: the child process of the local backend's probe
        from desklm.engine.backends.local.engine import probe_child_main

        return probe_child_main(args.probe_model)
    if args.data_dir:
        os.environ["DESKLM_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from desklm.logs import install_excepthooks, setup_logging

    setup_logging(logging.DEBUG if args.debug else logging.INFO)
    try:
        if args.command == "chat":
            install_excepthooks()
            from desklm.cli.chat import cmd_chat

            return flushed(cmd_chat(args))
        if args.command == "history":
            from desklm.cli.history import cmd_history

            return flushed(cmd_history(args))
        if args.command == "tools":
            from desklm.cli.tools import cmd_tools

            return flushed(cmd_tools(args))
        if args.command == "models":
            from desklm.cli.models import cmd_models

            return flushed(cmd_models(args))
        if args.command == "bench":
            from desklm.cli.bench import cmd_bench

            return flushed(cmd_bench(args))
        if args.command == "serve":
            install_excepthooks()
            from desklm.cli.serve import cmd_serve

            return cmd_serve(args)
        return cmd_gui(args)
    except BrokenPipeError:  # `desklm history list | head -1`: the reader left; so do we
        return stdout_gone()
    except DeskLMError as e:
        err(str(e))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: log the traceback, show one line
        log.exception("internal error")
        err(f"internal error: {type(e).__name__}: {e} (details in the log file)")
        return EXIT_INTERNAL


def gui_main() -> int:
    """Entry point for the windowed launcher (no console on Windows)."""
    return main(sys.argv[1:])


def cmd_gui(args: argparse.Namespace) -> int:
    from desklm.ui.preflight import check_display

    problem = check_display()  # before Qt: no display or missing X libraries is one line
    if problem:
        raise DeskLMError(problem)
    from desklm.ui.app import run_gui

    return run_gui(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
