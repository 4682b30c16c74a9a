"""``desklm models``: the models on this machine, and downloads."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from desklm.engine.fmt import fmt_bytes, fmt_transfer
from desklm.errors import DeskLMError


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command in (None, "list"):
        from desklm.engine.models.catalog import catalog

        items = catalog()
        if args.json:
            print(json.dumps(items, ensure_ascii=False))
        else:
            for it in items:
                print(f"{fmt_bytes(float(str(it['size']))):>10}  {it['source']:<19} {it['path']}")
        return 0
    from desklm.engine.models import hub

    hub.check_reachable()  # seconds, not huggingface_hub's ~22 s of retries, to say "offline"
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
            raise DeskLMError(
                f"{args.repo} has no file '{args.file}'; it has: "
                + ", ".join(f.path for f in files)
            )
        chosen = match[0]
    t0 = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if sys.stderr is None or (now - last[0] < 0.2 and done < total):
            return
        last[0] = now
        pct = 100 * done / total if total else 0
        print(
            f"\r{chosen.path}: {pct:5.1f}%  {fmt_transfer(done, total, now - t0)}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    path = hub.download(chosen, progress)
    if sys.stderr is not None:
        print(file=sys.stderr)
    print(path)
    print(f"verified sha256; chat with it: desklm chat --model '{path}'", file=sys.stderr)
    return 0
