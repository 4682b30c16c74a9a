"""``desklm bench``: the benchmarks and the tuner."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from desklm.cli.common import connect
from desklm.engine.settings import settings_from_args
from desklm.errors import DeskLMError


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):
        return cmd_bench_remote(args)
    from desklm.bench import run as benchrun
    from desklm.engine.models.catalog import resolve_model

    if args.search:
        from desklm.bench.search import bench_search, bench_table

        r = bench_search(2000, say=benchrun._stderr)
        print(json.dumps(r) if args.json else bench_table(r))
        return 0
    model = resolve_model(args.model)
    settings = settings_from_args(args)
    if getattr(args, "concurrency", None):
        return _bench_concurrency(args, model, settings)
    if getattr(args, "peer", None):
        raise DeskLMError("--peer needs --concurrency (e.g. --concurrency 1,2,4,8)")
    if args.runs < 1 or args.gen_tokens < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    if args.api:
        from desklm.bench.api import run_api_bench, table

        api = run_api_bench(
            model, settings, runs=args.runs, gen_tokens=args.gen_tokens, say=benchrun._stderr
        )
        print(benchrun.dump(api) if args.json else table(api))
        return 0
    if args.tune:
        tr = benchrun.run_tune(model, settings, say=benchrun._stderr)
        if args.json:
            print(benchrun.dump(tr))
        else:
            for t in tr.trials:
                print(
                    f"GPU layers {t['n_gpu_layers']:>3}  threads {t['threads']:>2}  "
                    f"generation {t['gen_tps']:7.1f} tok/s  prompt {t['prompt_tps']:8.1f} tok/s"
                )
            print(
                f"fastest: n_threads {tr.n_threads}, n_threads_batch {tr.n_threads_batch}, "
                f"GPU layers {tr.n_gpu_layers}; remembered for this model on this machine"
            )
        return 0
    if args.long_tokens < 50:
        raise DeskLMError("--long-tokens must be at least 50 (the render cost compares fifths)")
    if args.turns < 2:
        raise DeskLMError("--turns must be at least 2 (the last turn is compared with the first)")
    if not args.no_gui:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = benchrun.run(
        model,
        settings,
        runs=args.runs,
        gen_tokens=args.gen_tokens,
        gui=not args.no_gui,
        long_tokens=args.long_tokens,
        turns=args.turns,
        say=benchrun._stderr,
        long_chats=args.long_chats,
    )
    if args.plot:
        out["plot"] = str(benchrun.plot(out, Path(args.plot)))
    print(benchrun.dump(out) if args.json else benchrun.table(out))
    return 0


def _bench_concurrency(args: argparse.Namespace, model: Path, settings: object) -> int:
    """``desklm bench --concurrency 1,2,4,8 [--peer PATH]``."""
    from desklm.bench import run as benchrun
    from desklm.bench.concurrency import run_concurrency_bench, table_text

    try:
        levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        raise DeskLMError(
            f"--concurrency {args.concurrency}: give numbers of clients, e.g. 1,2,4,8"
        ) from None
    if not levels or min(levels) < 1 or max(levels) > 64:
        raise DeskLMError("--concurrency: each number of clients must be 1 to 64")
    gen = args.gen_tokens if "--gen-tokens" in sys.argv else 64
    if args.runs < 1 or gen < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    peer = Path(args.peer).expanduser() if args.peer else None
    r = run_concurrency_bench(
        model,
        settings,
        levels,
        gen_tokens=gen,
        runs=1 if "--runs" not in sys.argv else args.runs,
        peer=peer,
        say=benchrun._stderr,
    )
    print(json.dumps(r) if args.json else table_text(r))
    return 0


def cmd_bench_remote(args: argparse.Namespace) -> int:
    """``desklm bench --server URL``: DeskLM's remote path against the bare openai client."""
    from desklm.bench.remote import bench_remote, table

    if args.runs < 1 or args.gen_tokens < 8:
        raise DeskLMError("--runs must be at least 1 and --gen-tokens at least 8")
    backend = connect(args)
    try:
        out = bench_remote(
            backend,
            runs=args.runs,
            gen_tokens=args.gen_tokens,
            say=lambda m: print(m, file=sys.stderr, flush=True),
        )
    finally:
        backend.close()
    print(json.dumps(out, ensure_ascii=False) if args.json else table(out))
    return 0
