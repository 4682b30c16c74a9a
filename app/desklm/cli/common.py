"""What every command shares: one-line errors, exit codes, stdout that may go away, and
connecting to a server from the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE


def err(msg: str) -> None:
    """``desklm: error: <msg>`` on stderr: the one way a command reports a failure."""
    if sys.stderr is not None:
        print(f"desklm: error: {msg}", file=sys.stderr, flush=True)


def flushed(rc: int) -> int:
    """Flush stdout now, so a reader that left shows up here (BrokenPipeError) and not as
    "Exception ignored" noise at interpreter exit."""
    if sys.stdout is not None:
        sys.stdout.flush()
    return rc


def stdout_gone() -> int:
    """Stdout's reader has gone: point fd 1 at the null device so the interpreter's own
    flush at exit has nowhere to fail, and leave quietly, as other command-line tools do."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return EXIT_BROKEN_PIPE


def connect(args: argparse.Namespace) -> Any:
    """A RemoteBackend connected as ``--server``/``--api-key-env``/``--model`` say."""
    from desklm.engine.backends.remote import RemoteBackend
    from desklm.engine.settings import settings_from_args
    from desklm.engine.store.connections import resolve_server

    url, key, model = resolve_server(args.server, args.api_key_env, args.model)
    backend = RemoteBackend()
    backend.connect(url, key, model, settings_from_args(args))
    return backend
