"""How the chat's turn loop shows tools to the model and reads its calls back.

The small interface :meth:`ChatSession.send` uses when tools are on:

* :func:`system_text` — the tools, described for the system prompt;
* :func:`parse_call` — a call in a reply (or None: the reply is an answer);
* :func:`may_be_call` — whether a reply that has only begun may still turn into a call (the
  window holds such text back instead of streaming a call's JSON to the user);
* :func:`grammar` — a llama.cpp grammar that forces a call (any tool, or a named one), from
  the tools' JSON schemas: even a base model then writes a valid call;
* :func:`with_results` — the turn's calls and their results, added to the user's message
  for the next prompt.

This is the seam with :mod:`desklm.engine.prompt.tools` (the API's tool calling, written
alongside): once it is in, these functions delegate to it (``render`` with the template's own
tool syntax, ``parse``/``ToolStream``, ``grammar``), and the calls of past turns can go to the
template as assistant ``tool_calls`` and ``tool`` messages where the template renders them.

The form is llama.cpp's generic one (``common/chat.cpp``): the reply is a JSON object
``{"tool_call": {"name": ..., "arguments": {...}}}``; it works on every chat format, the
plain dialogue of base models included. Tool results come back as message text (data, never
control tokens) after the user's message, each labelled with its call.
"""

from __future__ import annotations

import json
from typing import Any

from desklm.engine.chat.tools import ToolInfo, ToolStep
from desklm.engine.prompt.chat_format import Msg
from desklm.errors import DeskLMError

MAX_DESCRIPTION = 1000  # characters of a tool's description shown to the model
_OPEN = '{"tool_call"'


def system_text(tools: list[ToolInfo]) -> str:
    """The tools and how to call them, to follow the system prompt."""
    lines = [
        "You can call tools. To call one, answer with only this JSON and nothing else: "
        '{"tool_call": {"name": "<tool name>", "arguments": {<arguments>}}}. '
        "You then get the tool's result and answer the user with it. Answer normally "
        "when no tool is needed.",
        "Tools:",
    ]
    for t in tools:
        desc = " ".join(t.description.split())[:MAX_DESCRIPTION]
        lines.append(
            f"- {t.model_name}: {desc or '(no description)'} Arguments (JSON "
            f"schema): {json.dumps(_clean_schema(t.schema), ensure_ascii=False)}"
        )
    return "\n".join(lines)


def _first_object(text: str) -> tuple[Any, int] | None:
    """The JSON value starting at the first ``{`` of ``text``, and where it ends."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    return value, end


def parse_call(text: str, tools: list[ToolInfo]) -> tuple[str, dict[str, Any]] | None:
    """(tool name, arguments) when the reply is a call to one of ``tools``, else None.

    Accepts ``{"tool_call": {"name", "arguments"}}`` and the bare ``{"name", "arguments"}``,
    alone in the reply or in a ```json fence. Arguments given as a JSON string are decoded."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    if not body.startswith("{"):
        return None
    found = _first_object(body)
    if found is None:
        return None
    value, end = found
    if body[end:].strip().strip("`").strip():
        return None  # more text after the JSON: an answer that quotes JSON, not a call
    call = value.get("tool_call", value) if isinstance(value, dict) else None
    if not isinstance(call, dict):
        return None
    name = call.get("name")
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    names = {t.model_name for t in tools}
    if not isinstance(name, str) or name not in names or not isinstance(args, dict):
        return None
    return name, args


def may_be_call(prefix: str) -> bool:
    """Whether a reply beginning with ``prefix`` may still be a call (then it is held back)."""
    p = prefix.lstrip()
    if not p:
        return True
    if p.startswith("```"):
        p = p.strip("`").removeprefix("json").lstrip()
        if not p:
            return True
    compact = p.replace(" ", "").replace("\n", "")
    return (
        compact.startswith(_OPEN)
        or _OPEN.startswith(compact)
        or compact.startswith('{"name"')
        or '{"name"'.startswith(compact)
    )


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k not in ("$schema", "title", "$id")}
    out.setdefault("type", "object")
    return out


def grammar(tools: list[ToolInfo], name: str | None = None) -> Any:
    """A ``llama_cpp.LlamaGrammar`` the reply must follow: a call to ``name`` (or to any of
    ``tools``) with arguments valid for its schema, in the generic form; built by
    :func:`desklm.engine.prompt.tools.grammar`, the API's own."""
    from desklm.engine.prompt import tools as T

    chosen = [t for t in tools if name in (None, "*", t.model_name)]
    if not chosen:
        raise DeskLMError(
            f"no tool named {name!r} is on"
            if name not in (None, "*")
            else "no tool is on: turn one on first"
        )
    specs = [
        T.Tool(
            t.model_name, " ".join(t.description.split())[:MAX_DESCRIPTION], _clean_schema(t.schema)
        )
        for t in chosen
    ]
    return T.grammar(specs, T.Syntax.GENERIC, name=None if name in (None, "*") else name)


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """A call as the model writes it."""
    return json.dumps({"tool_call": {"name": name, "arguments": arguments}}, ensure_ascii=False)


def results_text(steps: list[ToolStep]) -> str:
    """The calls of a turn and their results, as text the model reads after the question."""
    return "\n\n".join(
        f"[the tool {s.name} was called with {json.dumps(s.arguments, ensure_ascii=False)}; "
        f"its result:]\n{s.model_text()}"
        for s in steps
    )


def with_results(msgs: list[Msg], steps: list[ToolStep]) -> list[Msg]:
    """``msgs`` (ending with the user's message) with the turn's calls and results after that
    message's text, so user and assistant turns still alternate for every template, and a
    model that has just seen its call as JSON does not copy it as its answer."""
    if not steps:
        return msgs
    text = results_text(steps)
    if msgs and msgs[-1]["role"] == "user":
        last = msgs[-1]
        return [*msgs[:-1], {"role": "user", "content": f"{last['content']}\n\n{text}"}]
    return [*msgs, {"role": "user", "content": text}]


class HeldStream:
    """Streams a reply's text on, except while it may still be a tool call: that text is held
    (a call is shown as a call, not as JSON typed into the reply). :meth:`flush` sends what
    was held once the reply turned out to be an answer."""

    def __init__(self, on_text: Any) -> None:
        self.on_text = on_text
        self.text = ""
        self.passing = False

    def feed(self, piece: str) -> None:
        self.text += piece
        if self.on_text is None:
            return
        if self.passing:
            self.on_text(piece)
        elif not may_be_call(self.text):
            self.passing = True
            self.on_text(self.text)

    def flush(self) -> None:
        if self.on_text is not None and not self.passing and self.text:
            self.passing = True
            self.on_text(self.text)
