"""A new user's first chat: 20 simple factual questions, each in a fresh chat, greedy.

Asks them through ``desklm chat --json`` (a subprocess, as a user would, with ``/reset`` —
a new chat — between questions) and, on the same GGUF file, through raw llama-cpp-python
with the Gemma turn format (what DeskLM used to send the embedded base model) and with the
plain few-shot dialogue DeskLM now renders. Prints, per path, how many replies are right and how
many end cleanly (finish reason ``stop``, not ``length``), side by side.

    python tests/benchmarks/first_chat.py [--model PATH] [--max-tokens N] [--json] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# (question, accepted answers): a reply is right when it contains one as a whole word
QUESTIONS: list[tuple[str, list[str]]] = [
    ("What is the capital of France?", ["paris"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("How many days are in a week?", ["seven", "7"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What is the largest planet in our solar system?", ["jupiter"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What is the chemical formula for water?", ["h2o", "h₂o"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("At what temperature in degrees Celsius does water boil?", ["100"]),
    ("What planet do we live on?", ["earth"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What language is spoken in Spain?", ["spanish"]),
    ("How many hours are in a day?", ["24", "twenty-four", "twenty four"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What is 2 plus 2?", ["4", "four"]),
    ("What gas do plants absorb from the air?", ["carbon dioxide", "co2", "co₂"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("How many continents are there?", ["seven", "7"]),
    ("What is the tallest mountain in the world?", ["everest"]),
]

SYSTEM = "You are a helpful assistant."  # DeskLM's default system prompt


def is_right(reply: str, accepted: list[str]) -> bool:
    low = reply.lower()
    return any(re.search(r"(?<![a-z0-9])" + re.escape(a) + r"(?![a-z0-9])", low) for a in accepted)


def run_desklm(
    model: Path | None, max_tokens: int, chat_format: str | None = None
) -> list[dict[str, Any]]:
    """All questions through one ``desklm chat --json`` process, a new chat for each."""
    args = [
        sys.executable,
        "-m",
        "desklm",
        "chat",
        "--json",
        "--no-save",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
    ]
    if model is not None:
        args += ["--model", str(model)]
    if chat_format:
        args += ["--chat-format", chat_format]
    stdin = "".join(f"{q}\n/reset\n" for q, _ in QUESTIONS)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "app") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"desklm chat failed ({r.returncode}): {r.stderr[-2000:]}")
    turns = [o for o in map(json.loads, r.stdout.splitlines()) if "reply" in o or "error" in o]
    if len(turns) != len(QUESTIONS):
        raise SystemExit(f"expected {len(QUESTIONS)} replies, got {len(turns)}: {r.stdout[-2000:]}")
    return [{"reply": t.get("reply", ""), "finish": t.get("finish_reason", "error")} for t in turns]


def run_raw(model: Path, max_tokens: int, fmt: str) -> list[dict[str, Any]]:
    """Raw llama-cpp-python on the same file, greedy: ``gemma`` turn format or ``dialogue``."""
    import llama_cpp

    from desklm.engine.prompt.chat_format import builtin_template

    llm = llama_cpp.Llama(str(model), n_ctx=2048, verbose=False, seed=0)
    template = builtin_template(fmt)
    out = []
    for q, _ in QUESTIONS:
        prompt = template.render(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        )
        res: Any = llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0.0, stop=template.stop
        )
        choice = res["choices"][0]
        out.append({"reply": choice["text"].strip(), "finish": choice["finish_reason"]})
    llm.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="GGUF file (default: the embedded model)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print every reply")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "app"))
    from desklm.engine.models.catalog import resolve_model

    model = resolve_model(str(args.model) if args.model else None)
    paths: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for name, fn in (
        ("desklm chat (auto format)", lambda: run_desklm(args.model, args.max_tokens)),
        (
            "raw llama-cpp-python, Gemma turn format",
            lambda: run_raw(model, args.max_tokens, "gemma"),
        ),
        (
            "raw llama-cpp-python, few-shot dialogue",
            lambda: run_raw(model, args.max_tokens, "dialogue"),
        ),
    ):
        t0 = time.perf_counter()
        paths[name] = fn()
        timings[name] = time.perf_counter() - t0
    summary = {}
    for name, results in paths.items():
        right = sum(
            is_right(r["reply"], acc) for r, (_, acc) in zip(results, QUESTIONS, strict=True)
        )
        clean = sum(r["finish"] == "stop" for r in results)
        summary[name] = {
            "right": right,
            "clean_stops": clean,
            "questions": len(QUESTIONS),
            "seconds": round(timings[name], 1),
        }
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(model),
                    "max_tokens": args.max_tokens,
                    "summary": summary,
                    "replies": paths,
                },
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    if args.verbose:
        for i, (q, acc) in enumerate(QUESTIONS):
            print(q)
            for name, results in paths.items():
                r = results[i]
                mark = "+" if is_right(r["reply"], acc) else "-"
                print(f"  {mark} {r['finish']:<6} {name[:28]:<28} {r['reply'][:90]!r}")
    print(
        f"model: {model.name}, {len(QUESTIONS)} questions, greedy, max {args.max_tokens} "
        "tokens per reply"
    )
    print(f"{'path':<42} {'right':>7} {'clean stop':>11} {'time':>8}")
    for name, s in summary.items():
        print(
            f"{name:<42} {s['right']:>4}/{s['questions']} {s['clean_stops']:>8}/"
            f"{s['questions']} {s['seconds']:>7.1f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
