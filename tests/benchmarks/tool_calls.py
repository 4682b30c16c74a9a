"""Tool calls on a local model: how often a reply is a valid call, and what the grammar costs.

For each of a few requests (a user question and two tools), greedy, on the same engine:

- forced (``tool_choice`` a named function: the grammar from the tool's schema),
- auto (tools described in the prompt, no grammar: does the model call by itself?),
- free text (no tools) of the same length, for the grammar's cost per token.

Prints, per mode, valid calls (arguments valid for the schema, by ``jsonschema``), the tokens
and the rate from request to last token (prompt evaluation included).

    python tests/benchmarks/tool_calls.py [--model PATH] [--ctx N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

WEATHER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["city", "unit"],
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
}
SEARCH = {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}}}
ASKS = [
    ("What is the weather in Paris?", "get_weather"),
    ("Is it raining in Tokyo right now?", "get_weather"),
    ("How cold is it in Oslo, in fahrenheit?", "get_weather"),
    ("Find me recent news about volcanoes.", "web_search"),
    ("Search the web for the tallest building in Europe.", "web_search"),
    ("Who won the last football world cup? Look it up.", "web_search"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a GGUF file (default: the embedded model)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    import jsonschema

    from desklm.engine import (
        ChatEngine,
        Settings,
        Tool,
        embedded_model_path,
        parse_tool_calls,
        render_tools,
        tool_grammar,
    )

    tools = [
        Tool("get_weather", "The current weather in a city", WEATHER),
        Tool("web_search", "Search the web", SEARCH),
    ]
    schemas = {t.name: t.parameters for t in tools}
    eng = ChatEngine()
    eng.load(
        args.model or embedded_model_path(),
        Settings({"n_ctx": args.ctx, "max_tokens": args.max_tokens, "temperature": 0, "seed": 1}),
    )
    sampling = Settings({"max_tokens": args.max_tokens, "temperature": 0, "seed": 1})
    assert eng.template is not None
    rows: dict[str, dict[str, Any]] = {}
    for mode in ("forced", "auto", "free text"):
        valid = right = tokens = 0
        seconds = 0.0
        for question, want in ASKS:
            msgs = [{"role": "user", "content": question}]
            offered = tools if mode != "free text" else []
            prompt = render_tools(eng.template, msgs, offered)
            grammar = tool_grammar(tools, prompt.syntax, name=want) if mode == "forced" else None
            t0 = time.perf_counter()
            reply, stats = eng.generate(
                eng.tokenize(prompt.parts),
                sampling,
                grammar=grammar,
                stop=[] if grammar is not None else None,
                keep=prompt.keep,
            )
            seconds += time.perf_counter() - t0
            tokens += stats.completion_tokens
            if not offered:
                continue
            for call in parse_tool_calls(reply, prompt.syntax, names=[t.name for t in tools]).calls[
                :1
            ]:
                try:
                    jsonschema.validate(json.loads(call.arguments), schemas[call.name])
                except (ValueError, jsonschema.ValidationError):
                    continue
                valid += 1
                right += call.name == want
        rows[mode] = {
            "requests": len(ASKS),
            "valid_calls": valid,
            "right_tool": right,
            "tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        }
    name = eng.load_info.path.name if eng.load_info else "?"
    if args.json:
        print(json.dumps({"model": name, "format": eng.template.name, "modes": rows}, indent=2))
    else:
        print(f"{name} ({eng.template.name} format), greedy, {len(ASKS)} requests per mode")
        print(f"{'mode':<10} {'valid calls':>11} {'right tool':>10} {'tokens':>7} {'tok/s':>7}")
        for mode, r in rows.items():
            calls = f"{r['valid_calls']}/{r['requests']}" if mode != "free text" else "-"
            right = f"{r['right_tool']}/{r['requests']}" if mode != "free text" else "-"
            print(
                f"{mode:<10} {calls:>11} {right:>10} {r['tokens']:>7} "
                f"{r['tokens_per_s'] or 0:>7.1f}"
            )
    eng.unload()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
