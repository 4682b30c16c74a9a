"""``desklm serve``: the OpenAI-compatible API with no window."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from desklm.engine.settings import settings_from_args
from desklm.errors import DeskLMError


def cmd_serve(args: argparse.Namespace) -> int:
    """``desklm serve``: load the model on the inference runner and serve it until Ctrl+C or
    SIGTERM; one line per request on stderr."""
    import threading

    from desklm.engine.models.catalog import resolve_model
    from desklm.engine.runtime import Runtime
    from desklm.server import ApiServer

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "").strip()
        if not key:
            raise DeskLMError(
                f"--api-key-env {args.api_key_env}: that environment variable is not set or empty"
            )
    if args.max_queued < 1:
        raise DeskLMError("--max-queued must be at least 1")
    settings = settings_from_args(args)
    model = resolve_model(args.model)
    rt = Runtime(settings, None, model_path=model, api_slots=True)  # no store: not chats
    runner = rt.runner
    stop = threading.Event()

    from desklm.engine.signals import QUIT_SIGNALS, install_quit_handlers

    install_quit_handlers(lambda _signum: stop.set(), (signal.SIGINT, *QUIT_SIGNALS))
    server = ApiServer.for_runtime(rt, max_waiting=args.max_queued)
    try:
        info = runner.call(lambda: rt.session.load(model), "load")
        for note in info.notes:
            print(f"desklm: note: {note}", file=sys.stderr)
        if args.setting_n_threads is None:  # threads found by `desklm bench --tune`, if any
            from desklm.engine.tune import tuned_for

            tuned = tuned_for(info.path)
            if tuned:
                runner.call(
                    lambda: rt.session.apply_settings(
                        {
                            "n_threads": tuned["n_threads"],
                            "n_threads_batch": tuned["n_threads_batch"],
                        }
                    )
                )
        server.add_listener(
            lambda ev, rec: (
                print(rec.line(), file=sys.stderr, flush=True) if ev == "request" else None
            )
        )
        url = server.start(args.host, args.port, key, args.cors_origin)
        print(
            f"listening on {url} (model {info.path.stem}, context {info.n_ctx}); Ctrl+C to stop",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(timeout=1.5)
        rt.close(timeout=2.0)
    return 0
