"""Tool calling in the prompt: tools rendered in, calls parsed out, a grammar that forces one.

No Qt, no llama.cpp at import time (the grammar imports ``llama_cpp.llama_grammar`` when
asked for one). Used by the API server (``tools`` / ``tool_choice``) and by the window and
``desklm chat`` (MCP tools).

How to use it (the whole interface; ``ui/`` and ``server/`` take the same names from the
facade: ``Tool``, ``ToolCall``, ``ToolStream``, ``ToolPrompt``, ``ToolSyntax`` (= Syntax),
``render_tools`` (= render), ``parse_tool_calls`` (= parse), ``tool_grammar`` (= grammar),
``tool_grammar_text``, ``ContentDelta``, ``CallStart``, ``ArgsDelta``)::

    from desklm.engine.prompt import tools as T

    specs = [T.Tool("get_weather", "Weather for a city",
                    {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]})]
    messages = [                                        # T.ToolMsg: plain dicts
        {"role": "user", "content": "Weather in Paris?"},
        # an earlier call and its result, when the conversation has them:
        {"role": "assistant", "content": "",
         "tool_calls": [T.ToolCall("get_weather", '{"city": "Paris"}', "call_1")]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 C"},
    ]
    prompt = T.render(engine.template, messages, specs)  # -> ToolPrompt
    tokens = engine.tokenize(prompt.parts)               # markup special, text as data
    grammar = T.grammar(specs, prompt.syntax, name="get_weather")  # forced (or None: auto)
    stream = T.ToolStream(prompt.syntax, names=[t.name for t in specs])
    reply, stats = engine.generate(tokens, settings, on_text=lambda s: handle(stream.feed(s)),
                                   grammar=grammar, stop=[] if grammar else None,
                                   keep=prompt.keep)
    handle(stream.end())                 # deltas: ContentDelta / CallStart / ArgsDelta
    parsed = stream.result()             # Parsed(content, calls): the same as T.parse(reply)

- :func:`render` puts the tools in the prompt: through the GGUF's own Jinja template when it
  renders ``tools`` (assistant ``tool_calls`` and ``tool`` messages too), else in the
  format's own tool syntax (:class:`Syntax`): Hermes/Qwen ``<tool_call>`` for chatml,
  Llama 3.x JSON for llama3, Mistral ``[TOOL_CALLS]`` for the mistral formats, and a generic
  JSON form (``{"tool_call": {"name", "arguments"}}``) for the rest, the ``dialogue`` format of
  base models included. Message text, tool results and tool definitions are data: tokenized
  as plain text, never control tokens; only the syntax's own markers are markup.
- :func:`parse` reads the calls in a finished reply; :class:`ToolStream` does it while the
  reply streams, holding back text that may still turn into a call.
- :func:`grammar` (and :func:`grammar_text`) constrain a reply to a call of one tool (or any
  of them) whose arguments match its JSON schema, via llama-cpp-python's own converter.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from desklm.engine.prompt.chat_format import ChatTemplate, Part
from desklm.engine.prompt.stream import split_reasoning
from desklm.errors import DeskLMError

ToolMsg = dict[str, Any]
"""A message: ``role`` (system, user, assistant, tool), ``content`` (str); an assistant's may
carry ``tool_calls`` (list of :class:`ToolCall`), a tool's ``tool_call_id`` and ``name``."""


class Syntax(StrEnum):
    """How a model writes a call (the formats of llama.cpp's ``common/chat.cpp``)."""

    HERMES = "hermes"  # <tool_call>{"name": .., "arguments": ..}</tool_call> (Qwen, Hermes)
    LLAMA3 = "llama3"  # {"name": .., "parameters": ..} or <|python_tag|>.. (Llama 3.1+)
    MISTRAL = "mistral"  # [TOOL_CALLS][{"name": .., "arguments": .., "id": ..}]
    GENERIC = "generic"  # {"tool_call": {"name": .., "arguments": ..}} (everything else)


@dataclass(frozen=True)
class Tool:
    """A function the model may call. ``parameters``: its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def openai(self) -> dict[str, Any]:
        """OpenAI's shape: ``{"type": "function", "function": {...}}`` (what templates get)."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = dict(self.parameters)
        return {"type": "function", "function": fn}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCall:
    """A call: the function's name, its arguments as JSON text (as the model wrote them), and
    an id (the model's where it writes one, else made up)."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)

    def args(self) -> Any:
        """The arguments decoded (``{}`` when they are not valid JSON)."""
        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return {}

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Parsed:
    """A reply read back: its text (without the calls) and the calls in order."""

    content: str
    calls: list[ToolCall]


# --- which syntax ---------------------------------------------------------------------------
_BUILTIN_SYNTAX = {"chatml": Syntax.HERMES, "llama3": Syntax.LLAMA3}


def syntax_for(template: ChatTemplate) -> Syntax:
    """The call syntax of a chat template: by its Jinja text's markers (as llama.cpp detects
    its formats), or by the built-in format's name."""
    src = template.source
    if src:
        if "<tool_call>" in src:
            return Syntax.HERMES
        if "[TOOL_CALLS]" in src:
            return Syntax.MISTRAL
        if "<|start_header_id|>" in src and ("ipython" in src or "<|python_tag|>" in src):
            return Syntax.LLAMA3
        return Syntax.GENERIC
    if template.name.startswith("mistral"):
        return Syntax.MISTRAL
    return _BUILTIN_SYNTAX.get(template.name, Syntax.GENERIC)


# control tokens whose text the reply must keep for the parser (they detokenize to "" else)
KEEP_TOKENS: dict[Syntax, tuple[str, ...]] = {
    Syntax.HERMES: ("<tool_call>", "</tool_call>"),
    Syntax.LLAMA3: ("<|python_tag|>",),
    Syntax.MISTRAL: ("[TOOL_CALLS]",),
    Syntax.GENERIC: (),
}


# --- rendering ------------------------------------------------------------------------------
@dataclass
class ToolPrompt:
    """A rendered prompt: ``parts`` for ``ChatEngine.tokenize``, the ``syntax`` replies use,
    and ``keep``: control tokens the reply's text must keep (``generate(keep=...)``)."""

    parts: list[Part]
    syntax: Syntax
    keep: tuple[str, ...]
    native: bool  # the model's own template rendered the tools


_MARK = "\ue004dlt{}.{}\ue005"
_MARK_RE = re.compile("\ue004dlt(\\d+)\\.(\\d+)\ue005")


class _Marks:
    """Sentinels no message holds, put in the template's input and turned into parts after it
    ran: markup inside message text (a syntax's markers in a rendered call: special parts),
    and data inside what the template writes as markup (tool definitions and call arguments
    a template renders itself: data parts, so they never become control tokens)."""

    def __init__(self, blob: str) -> None:
        self.nonce = 0
        while f"\ue004dlt{self.nonce}." in blob:
            self.nonce += 1
        self.texts: list[tuple[str, bool]] = []

    def __call__(self, text: str) -> str:
        """``text`` as markup."""
        self.texts.append((text, True))
        return _MARK.format(self.nonce, len(self.texts) - 1)

    def data(self, value: Any) -> Any:
        """``value`` (a JSON value) with each string that could hold control-token text
        swapped for a sentinel."""
        if isinstance(value, str):
            if not _RISKY.search(value):
                return value
            self.texts.append((value, False))
            return _MARK.format(self.nonce, len(self.texts) - 1)
        if isinstance(value, Mapping):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def split(self, parts: list[Part]) -> list[Part]:
        out: list[Part] = []
        for p in parts:
            pieces = _MARK_RE.split(p.text)
            if len(pieces) == 1:
                out.append(p)
                continue
            for k, piece in enumerate(pieces[0::3]):
                if piece:
                    out.append(Part(piece, p.special))
                if k >= len(pieces) // 3:
                    continue
                nonce, idx = int(pieces[3 * k + 1]), int(pieces[3 * k + 2])
                if nonce != self.nonce:  # not ours: text as it was
                    out.append(Part(_MARK.format(nonce, idx), p.special))
                    continue
                text, special = self.texts[idx]
                quoted = piece.endswith('"') and pieces[3 * k + 3].startswith('"')
                if not special and quoted:  # written by tojson: the JSON-escaped text
                    text = json.dumps(text, ensure_ascii=False)[1:-1]
                out.append(Part(text, special))
        return _merge(out)


def _merge(parts: list[Part]) -> list[Part]:
    out: list[Part] = []
    for p in parts:
        if out and out[-1].special == p.special:
            out[-1] = Part(out[-1].text + p.text, p.special)
        elif p.text:
            out.append(p)
    return out


_RISKY = re.compile(r"[<>\[\]|]")  # every control token of the known formats has one


@dataclass(frozen=True)
class _Caps:
    tools: bool  # renders the ``tools`` variable
    calls: bool  # renders an assistant message's ``tool_calls`` and ``tool`` messages


_CAPS: dict[str, _Caps] = {}


def _caps(template: ChatTemplate) -> _Caps:
    if template.render_with is None:
        return _Caps(False, False)
    got = _CAPS.get(template.source)
    if got is not None:
        return got
    fn = template.render_with
    tool = Tool("desklm_probe_fn", "probe").openai()
    user = {"role": "user", "content": "q"}

    def text(msgs: list[dict[str, Any]]) -> str:
        try:
            return "".join(p.text for p in fn(msgs, {"tools": [tool]}))
        except Exception:
            return ""

    has_tools = "desklm_probe_fn" in text([user])
    out = text(
        [
            user,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "desklm_probe_call", "arguments": {"k": "v"}},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "desklm_probe_call",
                "content": "desklm probe result",
            },
        ]
    )
    caps = _Caps(has_tools, "desklm_probe_call" in out and "desklm probe result" in out)
    _CAPS[template.source] = caps
    return caps


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tools_text(tools: Sequence[Tool], syntax: Syntax, mark: _Marks, parallel: bool) -> str:
    """The system prompt's description of the tools, in the syntax the replies will use."""
    listing = "\n".join(_dump(t.openai()) for t in tools)
    many = " You may call more than one." if parallel else ""
    if syntax is Syntax.HERMES:
        return (
            "# Tools\n\nYou may call functions to answer. Their signatures, one per line, "
            f"within <tools></tools>:\n<tools>\n{listing}\n</tools>\n\nTo call a function, "
            "reply with a JSON object holding its name and arguments within "
            f"{mark('<tool_call>')}{mark('</tool_call>')} tags:\n{mark('<tool_call>')}\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n'
            f"{mark('</tool_call>')}{many}"
        )
    if syntax is Syntax.LLAMA3:
        return (
            "You have access to the functions below. To call one, reply with only a JSON "
            'object of the form {"name": function name, "parameters": object of argument '
            f"names and values}}. Do not use variables.{many}\n\n{listing}"
        )
    if syntax is Syntax.MISTRAL:
        return (
            f"{mark('[AVAILABLE_TOOLS]')}[{', '.join(_dump(t.openai()) for t in tools)}]"
            f"{mark('[/AVAILABLE_TOOLS]')}\nTo call functions, reply with "
            f"{mark('[TOOL_CALLS]')} and a JSON list of "
            '{"name": .., "arguments": {..}} objects.'
        )
    return (
        "You can call these functions (JSON schemas): "
        + " ".join(_dump(t.openai()["function"]) for t in tools)
        + ' To call one, reply with only {"tool_call": {"name": "<name>", "arguments": '
        "{<arguments>}}}"
        + (' (several: {"tool_calls": [{"name": .., "arguments": ..}, ...]})' if parallel else "")
        + "; otherwise answer in words."
    )


def _calls_text(calls: Sequence[ToolCall], syntax: Syntax, mark: _Marks) -> str:
    """Earlier calls, written the way the model writes them."""
    if syntax is Syntax.HERMES:
        return "\n".join(
            f"{mark('<tool_call>')}\n"
            + _dump({"name": c.name, "arguments": c.args()})
            + f"\n{mark('</tool_call>')}"
            for c in calls
        )
    if syntax is Syntax.LLAMA3:
        return "\n".join(_dump({"name": c.name, "parameters": c.args()}) for c in calls)
    if syntax is Syntax.MISTRAL:
        return mark("[TOOL_CALLS]") + _dump(
            [{"name": c.name, "arguments": c.args(), "id": c.id} for c in calls]
        )
    if len(calls) == 1:
        return _dump({"tool_call": {"name": calls[0].name, "arguments": calls[0].args()}})
    return _dump({"tool_calls": [{"name": c.name, "arguments": c.args()} for c in calls]})


def _result_text(m: ToolMsg, syntax: Syntax, mark: _Marks) -> str:
    content = str(m.get("content") or "")
    if syntax is Syntax.HERMES:
        return f"{mark('<tool_response>')}\n{content}\n{mark('</tool_response>')}"
    if syntax is Syntax.MISTRAL:
        return f"{mark('[TOOL_RESULTS]')}{content}{mark('[/TOOL_RESULTS]')}"
    if syntax is Syntax.LLAMA3:
        return content
    return _dump({"tool_response": {"tool": m.get("name") or "", "content": content}})


def _without_reasoning(template: ChatTemplate, m: ToolMsg) -> str:
    content = str(m.get("content") or "")
    if m["role"] == "assistant" and not template.keeps_reasoning and "</think>" in content:
        return split_reasoning(content)[1]
    return content


def render(
    template: ChatTemplate,
    messages: Sequence[ToolMsg],
    tools: Sequence[Tool],
    *,
    parallel: bool = True,
) -> ToolPrompt:
    """The prompt for ``messages`` with ``tools`` on offer (none: only the history's calls and
    results are rendered). Raises DeskLMError when the template refuses the conversation."""
    syntax = syntax_for(template)
    caps = _caps(template)
    native_tools = bool(tools) and caps.tools and syntax is not Syntax.GENERIC
    native_calls = caps.calls and syntax is not Syntax.GENERIC
    blob = json.dumps(
        [
            [
                {k: (v if k != "tool_calls" else [c.openai() for c in v]) for k, v in m.items()}
                for m in messages
            ],
            [t.openai() for t in tools],
        ],
        ensure_ascii=False,
    )
    mark = _Marks(blob)
    msgs: list[dict[str, Any]] = []
    from_tool: list[bool] = []
    for m in messages:
        role = m["role"]
        content = _without_reasoning(template, m)
        if role == "assistant" and m.get("tool_calls"):
            calls: list[ToolCall] = list(m["tool_calls"])
            if native_calls:
                wire = []
                for c in calls:
                    wire.append(
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": mark.data(c.args())},
                        }
                    )
                msgs.append({"role": "assistant", "content": content, "tool_calls": wire})
            else:
                text = _calls_text(calls, syntax, mark)
                msgs.append(
                    {
                        "role": "assistant",
                        "content": f"{content}\n{text}" if content.strip() else text,
                    }
                )
            from_tool.append(False)
        elif role == "tool":
            if native_calls:
                msgs.append(
                    {
                        "role": "tool",
                        "content": content,
                        "tool_call_id": m.get("tool_call_id") or "",
                        "name": m.get("name") or "",
                    }
                )
                from_tool.append(False)
                continue
            text = _result_text(m, syntax, mark)
            result_role = "ipython" if syntax is Syntax.LLAMA3 else "user"
            if from_tool and from_tool[-1] and msgs[-1]["role"] == result_role:
                msgs[-1]["content"] += "\n" + text  # parallel results: one turn
            else:
                msgs.append({"role": result_role, "content": text})
                from_tool.append(True)
        else:
            msgs.append({"role": role, "content": content})
            from_tool.append(False)
    extra: dict[str, Any] = {}
    if native_tools:
        extra["tools"] = [mark.data(t.openai()) for t in tools]
    elif tools:
        text = _tools_text(tools, syntax, mark, parallel)
        if msgs and msgs[0]["role"] == "system":
            msgs[0] = {**msgs[0], "content": msgs[0]["content"].rstrip() + "\n\n" + text}
        else:
            msgs.insert(0, {"role": "system", "content": text})
    try:
        if template.render_with is not None and (extra or native_calls):
            parts = template.render_with(msgs, extra)
        else:
            parts = template.render_parts(
                [{"role": m["role"], "content": m["content"]} for m in msgs]
            )
    except DeskLMError:
        raise
    except Exception as e:
        raise DeskLMError(f"the model's chat template failed to render: {e}") from e
    parts = mark.split(parts)
    return ToolPrompt(parts, syntax, KEEP_TOKENS[syntax], native_tools)


# --- reading calls back ---------------------------------------------------------------------
# A tiny matcher for the text around a call: sequences of elements, matched against a prefix
# of the text, answering "full" (matched, and where it ended), "partial" (the text ended
# inside: more may complete it) or "fail".
_El = tuple[Any, ...]
WS: _El = ("ws",)


def _lit(s: str) -> _El:
    return ("lit", s)


def _cap(key: str, until: str = '"') -> _El:
    return ("cap", key, until)


def _opt(*seq: _El) -> _El:
    return ("opt", seq)


def _alt(*seqs: Sequence[_El]) -> _El:
    return ("alt", tuple(tuple(s) for s in seqs))


_NAME_OK = re.compile(r"[\w.\-:/]*")
FULL, PARTIAL, FAIL = "full", "partial", "fail"


def _match(
    seq: Sequence[_El], s: str, i: int, cap: dict[str, str], final: bool
) -> tuple[str, int, dict[str, str]]:
    if not seq:
        return FULL, i, cap
    el, rest = seq[0], seq[1:]
    kind = el[0]
    if kind == "ws":
        while i < len(s) and s[i].isspace():
            i += 1
        return _match(rest, s, i, cap, final)
    if kind == "lit":
        lit = el[1]
        if s.startswith(lit, i):
            return _match(rest, s, i + len(lit), cap, final)
        if lit.startswith(s[i:]) and not final:
            return PARTIAL, len(s), cap
        return FAIL, i, cap
    if kind == "cap":
        j = s.find(el[2], i)
        if j == -1:
            ok = _NAME_OK.fullmatch(s[i:]) is not None and not final
            return (PARTIAL, len(s), cap) if ok else (FAIL, i, cap)
        if j == i or _NAME_OK.fullmatch(s[i:j]) is None:
            return FAIL, i, cap
        return _match(rest, s, j, {**cap, el[1]: s[i:j]}, final)
    if kind == "opt":
        with_ = _match((*el[1], *rest), s, i, cap, final)
        if with_[0] == FULL or (with_[0] == PARTIAL and not final):
            return with_
        return _match(rest, s, i, cap, final)
    if kind == "alt":
        best: tuple[str, int, dict[str, str]] = (FAIL, i, cap)
        for sub in el[1]:
            r = _match((*sub, *rest), s, i, cap, final)
            if r[0] == FULL:
                return r
            if r[0] == PARTIAL:
                best = r
        return best
    raise AssertionError(kind)


def _value_end(s: str, i: int) -> int | None:
    """Where the JSON object or array starting at ``s[i]`` ends (None: not yet)."""
    depth, in_str, j = 0, False, i
    while j < len(s):
        ch = s[j]
        if in_str:
            if ch == "\\":
                j += 2
                continue
            if ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


@dataclass(frozen=True)
class _Form:
    """One way a syntax writes calls: ``start`` once, then calls (``open`` up to the arguments
    object, ``close`` after it) separated by ``sep``, then ``end``. ``anywhere``: may follow
    text (else only the whole reply)."""

    start: tuple[_El, ...]
    open: tuple[_El, ...]
    close: tuple[_El, ...]
    sep: tuple[_El, ...] = (WS,)
    end: tuple[_El, ...] = ()
    anywhere: bool = True
    triggers: str = ""  # characters a call of this form can start with


def _name_args(args_key: Sequence[str] = ("arguments",)) -> tuple[_El, ...]:
    return (
        _lit("{"),
        WS,
        _lit('"name"'),
        WS,
        _lit(":"),
        WS,
        _lit('"'),
        _cap("name"),
        _lit('"'),
        WS,
        _lit(","),
        WS,
        _alt(*[[_lit(f'"{k}"')] for k in args_key]),
        WS,
        _lit(":"),
        WS,
    )


_HERMES_TAGS = ("tool_call", "function_call", "tools", "tool", "response", "json", "xml", "JSON")
_ID_TAIL = (
    WS,
    _opt(_lit(","), WS, _lit('"id"'), WS, _lit(":"), WS, _lit('"'), _cap("id"), _lit('"')),
    WS,
    _lit("}"),
)
_FORMS: dict[Syntax, tuple[_Form, ...]] = {
    # llama.cpp's Hermes 2 Pro parser: <tool_call> and the tags models use in its place,
    # optionally in a ``` fence; <function=name>{..}</function>; <function name="..">
    Syntax.HERMES: (
        _Form(
            (),
            (
                _opt(_lit("```"), _opt(_alt([_lit("xml")], [_lit("json")])), WS),
                _opt(_lit("<"), _alt(*[[_lit(t)] for t in _HERMES_TAGS]), _lit(">"), WS),
                *_name_args(),
            ),
            (
                WS,
                _lit("}"),
                WS,
                _opt(_lit("</"), _alt(*[[_lit(t)] for t in _HERMES_TAGS]), _lit(">")),
                WS,
                _opt(_lit("```")),
            ),
            triggers="`<{",
        ),
        _Form(
            (),
            (_lit("<function="), _cap("name", ">"), _lit(">"), WS),
            (WS, _lit("</function>")),
            triggers="<",
        ),
        _Form(
            (),
            (_lit('<function name="'), _cap("name"), _lit('">'), WS),
            (WS, _lit("</function>")),
            triggers="<",
        ),
    ),
    Syntax.LLAMA3: (
        _Form(
            (),
            (
                _lit("{"),
                WS,
                _opt(_lit('"type"'), WS, _lit(":"), WS, _lit('"function"'), WS, _lit(","), WS),
                *_name_args(("parameters", "arguments"))[1:],
            ),
            (WS, _lit("}")),
            sep=(WS, _opt(_lit(";")), WS),
            triggers="{",
        ),
    ),
    Syntax.MISTRAL: (
        _Form(
            (_lit("[TOOL_CALLS]"), WS, _lit("["), WS),
            (WS, *_name_args()),
            _ID_TAIL,
            sep=(WS, _lit(","), WS),
            end=(WS, _lit("]")),
            triggers="[",
        ),
    ),
    Syntax.GENERIC: (
        _Form(
            (WS, _lit("{"), WS, _lit('"tool_call"'), WS, _lit(":"), WS),
            (WS, *_name_args()),
            _ID_TAIL,
            sep=(),
            end=(WS, _lit("}")),
            anywhere=False,
        ),
        _Form(
            (WS, _lit("{"), WS, _lit('"tool_calls"'), WS, _lit(":"), WS, _lit("["), WS),
            (WS, *_name_args()),
            _ID_TAIL,
            sep=(WS, _lit(","), WS),
            end=(WS, _lit("]"), WS, _lit("}")),
            anywhere=False,
        ),
    ),
}
# the open pattern above starts at "{" for hermes/llama3 but after it for the list forms
_PYTHON_TAG = "<|python_tag|>"


@dataclass
class _Call:
    name: str
    args: str  # the arguments' JSON text so far
    done: bool
    id: str = ""


@dataclass
class _Scan:
    before: str  # text before the first call (or before what is held back)
    calls: list[_Call]
    after: str  # text after the calls (final)
    held: bool  # text is held back: it may still become a call


def _scan(
    text: str, syntax: Syntax, final: bool, parallel: bool, names: Collection[str] | None
) -> _Scan:
    forms = _FORMS[syntax]
    hold = None
    for p in range(len(text)):
        ch = text[p]
        if (
            syntax is Syntax.LLAMA3
            and ch == "<"
            and (
                text.startswith(_PYTHON_TAG, p) or (_PYTHON_TAG.startswith(text[p:]) and not final)
            )
        ):
            if not final:
                return _Scan(text[:p], [], "", True)
            call = _python_tag_call(text[p + len(_PYTHON_TAG) :])
            if call is not None and (names is None or call.name in names):
                return _Scan(text[:p], [call], "", False)
            continue
        for form in forms:
            if form.anywhere:
                if ch not in form.triggers:
                    continue
            elif p != 0:
                continue
            r = _match((*form.start, *form.open), text, p, {}, final)
            if r[0] == PARTIAL and hold is None:
                hold = p
            if r[0] != FULL:
                continue
            calls, after, held = _calls_from(text, r[1], r[2], form, final, parallel, names)
            if calls:
                return _Scan(text[:p], calls, after, held)
            if held and hold is None:
                hold = p
        if hold is not None:
            break
    if hold is not None and not final:
        return _Scan(text[:hold], [], "", True)
    return _Scan(text, [], "", False)


def _calls_from(
    text: str,
    at: int,
    cap: dict[str, str],
    form: _Form,
    final: bool,
    parallel: bool,
    names: Collection[str] | None,
) -> tuple[list[_Call], str, bool]:
    """The calls from ``at`` (just past the first call's opening, its name in ``cap``):
    (calls, the text after them, whether the scan waits for more text)."""
    calls: list[_Call] = []
    pos = at
    while True:
        name = cap.get("name", "")
        if names is not None and name not in names:
            return calls, text[pos:] if calls else "", False
        if pos < len(text) and text[pos] not in "{":
            return calls, "", False
        end = _value_end(text, pos)
        if end is None:  # the arguments are still coming (or were cut off)
            calls.append(_Call(name, text[pos:], False))
            return calls, "", not final
        args = text[pos:end]
        try:
            json.loads(args)
        except ValueError:
            return calls, "", False
        r = _match(form.close, text, end, {}, final)
        if r[0] == PARTIAL:
            calls.append(_Call(name, args, True))
            return calls, "", True
        if r[0] == FAIL:
            if not calls:
                return [], "", False
            return calls, text[end:], False
        calls.append(_Call(name, args, True, r[2].get("id", "")))
        pos = r[1]
        if not parallel:
            return calls, "", False
        if form.sep or not form.end:
            nxt = _match((*form.sep, *form.open), text, pos, {}, final)
            if nxt[0] == FULL:
                cap, pos = nxt[2], nxt[1]
                continue
            if nxt[0] == PARTIAL and text[pos:].strip():
                return calls, "", True
        if form.end:
            e = _match(form.end, text, pos, {}, final)
            if e[0] == PARTIAL:
                return calls, "", True
            if e[0] == FULL:
                pos = e[1]
        return calls, text[pos:], False


def _python_tag_call(rest: str) -> _Call | None:
    """Llama 3.1's ``<|python_tag|>``: ``name.call(key="value", ...)`` (a built-in tool),
    a JSON call, or else Python code for the ``python`` tool (llama.cpp reads it so)."""
    body = rest.strip()
    if body.endswith("<|eom_id|>"):
        body = body[: -len("<|eom_id|>")].strip()
    if body.startswith("{"):
        try:
            obj = json.loads(body)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("parameters", obj.get("arguments", {}))
            return _Call(obj["name"], _dump(args), True)
    m = re.fullmatch(r"([A-Za-z_]\w*)\.call\((.*)\)", body, re.S)
    if m:
        try:
            node = ast.parse(f"f({m.group(2)})", mode="eval").body
            assert isinstance(node, ast.Call) and not node.args
            args = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            return _Call(m.group(1), _dump(args), True)
        except (SyntaxError, ValueError, AssertionError):
            pass
    return _Call("python", _dump({"code": body}), True) if body else None


def parse(
    text: str, syntax: Syntax, *, parallel: bool = True, names: Collection[str] | None = None
) -> Parsed:
    """The calls in a finished reply and the text around them. ``names``: only calls of these
    functions count (others stay text); ``parallel=False``: only the first call."""
    sc = _scan(text, syntax, True, parallel, names)
    return Parsed(
        (sc.before + sc.after).strip(),
        [ToolCall(c.name, c.args, c.id or new_call_id()) for c in sc.calls],
    )


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgsDelta:
    index: int
    text: str


Delta = ContentDelta | CallStart | ArgsDelta


class ToolStream:
    """Reads calls while a reply streams. :meth:`feed` each piece, :meth:`end` at the end;
    both return deltas: text that can no longer be a call, a call's start (index, id, name)
    and pieces of its arguments' JSON text. The deltas add up to :meth:`result`, which is
    what :func:`parse` reads in the whole reply (the call ids are this stream's own)."""

    def __init__(
        self, syntax: Syntax, *, parallel: bool = True, names: Collection[str] | None = None
    ) -> None:
        self.syntax, self.parallel, self.names = syntax, parallel, names
        self.text = ""
        self._content = 0  # characters of content sent
        self._calls: list[tuple[str, int]] = []  # (id, characters of arguments sent)
        self._final: Parsed | None = None

    def feed(self, piece: str) -> list[Delta]:
        self.text += piece
        sc = _scan(self.text, self.syntax, False, self.parallel, self.names)
        return self._deltas(sc.before.strip(), sc.calls)

    def end(self) -> list[Delta]:
        sc = _scan(self.text, self.syntax, True, self.parallel, self.names)
        content = (sc.before + sc.after).strip()
        out = self._deltas(content, sc.calls)
        self._final = Parsed(
            content, [ToolCall(c.name, c.args, self._calls[i][0]) for i, c in enumerate(sc.calls)]
        )
        return out

    def result(self) -> Parsed:
        if self._final is None:
            self.end()
        assert self._final is not None
        return self._final

    def _deltas(self, content: str, calls: list[_Call]) -> list[Delta]:
        out: list[Delta] = []
        if len(content) > self._content:
            out.append(ContentDelta(content[self._content :]))
            self._content = len(content)
        for i, c in enumerate(calls):
            if i >= len(self._calls):
                self._calls.append((new_call_id(), 0))
                out.append(CallStart(i, self._calls[i][0], c.name))
            cid, sent = self._calls[i]
            if len(c.args) > sent:
                out.append(ArgsDelta(i, c.args[sent:]))
                self._calls[i] = (cid, len(c.args))
        return out


# --- a grammar that forces a call -----------------------------------------------------------
def _args_schema(tool: Tool) -> dict[str, Any]:
    schema = dict(tool.parameters) if tool.parameters else {}
    if not schema or (
        schema.get("type") in (None, "object")
        and "properties" not in schema
        and not any(k in schema for k in ("$ref", "anyOf", "oneOf", "allOf"))
    ):
        return {"type": "object"}
    return schema


_CALL_TEXT: dict[Syntax, tuple[str, str, str]] = {
    # (before the name, between the name and the arguments, after the arguments)
    Syntax.HERMES: ('<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>"),
    Syntax.LLAMA3: ('{"name": "', '", "parameters": ', "}"),
    Syntax.MISTRAL: ('{"name": "', '", "arguments": ', "}"),
    Syntax.GENERIC: ('{"name": "', '", "arguments": ', "}"),
}
_LIST_TEXT: dict[Syntax, tuple[str, str, str, str]] = {
    # (start with one call, start with several, between calls, end with one call)
    Syntax.HERMES: ("", "", "\n", ""),
    Syntax.LLAMA3: ("", "", "; ", ""),
    Syntax.MISTRAL: ("[TOOL_CALLS][", "[TOOL_CALLS][", ", ", "]"),
    Syntax.GENERIC: ('{"tool_call": ', '{"tool_calls": [', ", ", "}"),
}


def grammar_text(
    tools: Sequence[Tool], syntax: Syntax, *, name: str | None = None, max_calls: int = 1
) -> str:
    """GBNF for a reply that is a call (of ``name``, else of any of ``tools``; up to
    ``max_calls`` of them) in ``syntax``, its arguments valid for the tool's JSON schema.
    Raises DeskLMError naming the tool whose schema the converter cannot handle."""
    from llama_cpp.llama_grammar import SchemaConverter

    chosen = [t for t in tools if name is None or t.name == name]
    if not chosen:
        raise DeskLMError(f"no tool named '{name}'")
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    lit = conv._format_literal
    pre, mid, post = _CALL_TEXT[syntax]
    alts = []
    for i, t in enumerate(chosen):
        try:
            schema = conv.resolve_refs(_args_schema(t), f"tool-{i}")
            args = conv.visit(schema, f"tool-{i}-args")
        except Exception as e:  # the converter raises bare exceptions for what it cannot do
            raise DeskLMError(
                f"the parameters of tool '{t.name}' cannot be turned into a grammar ({e})"
            ) from None
        alts.append(conv._add_rule(f"call-{i}", f"{lit(pre + t.name + mid)} {args} {lit(post)}"))
    conv._add_rule("call", " | ".join(alts))
    one, several, sep, end = _LIST_TEXT[syntax]
    if syntax is Syntax.GENERIC and max_calls > 1:
        end = "]}"
    start = several if max_calls > 1 else one
    more = f" ({lit(sep)} call){{0,{max_calls - 1}}}" if max_calls > 1 else ""
    root = " ".join(
        x for x in (lit(start) if start else "", "call" + more, lit(end) if end else "") if x
    )
    conv._add_rule("root", root)
    return str(conv.format_grammar())


def grammar(
    tools: Sequence[Tool], syntax: Syntax, *, name: str | None = None, max_calls: int = 1
) -> Any:
    """:func:`grammar_text` as a ``llama_cpp.LlamaGrammar`` for ``ChatEngine.generate``."""
    from llama_cpp.llama_grammar import LlamaGrammar

    text = grammar_text(tools, syntax, name=name, max_calls=max_calls)
    try:
        return LlamaGrammar.from_string(text, verbose=False)
    except Exception as e:
        raise DeskLMError(f"the tools' grammar could not be built ({e})") from None
