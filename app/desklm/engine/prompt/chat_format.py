"""Chat formats: which one a model needs, and rendering a conversation with it.

How the format is chosen (``chat_format`` = ``auto``):

1. A model that looks like a *base* model (no chat template, nothing in its name or metadata
   saying instruct/chat; see :func:`model_kind`) gets the plain-text ``dialogue`` format: a short
   preamble, a few example exchanges, then the conversation as ``User:`` / ``Assistant:`` lines.
   A base model never learned turn markers; it can continue a dialogue it has seen examples of.
2. Otherwise the GGUF's own ``tokenizer.chat_template`` (Jinja), rendered in a sandboxed Jinja
   environment (``ImmutableSandboxedEnvironment``: a template cannot touch Python objects), with
   llama.cpp's adjustments: a template without a system role gets the system prompt folded into
   the first user message, and ``tools`` is left undefined.
3. When that template fails, the family its text names (``<|im_start|>`` -> chatml, ``[INST]`` ->
   llama2/mistral, ``<start_of_turn>`` -> gemma, ...), as llama.cpp's
   ``llm_chat_detect_template`` does; failing that, the format for ``general.architecture``.

The built-in formats render exactly as llama.cpp's formats of the same name.

Rendering produces :class:`Part` s: the template's own markup (tokenized with control tokens
parsed) and message contents (tokenized as plain text), so text a user types can never become a
turn marker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from desklm.engine.prompt.stream import THINK_CLOSE, THINK_OPEN, split_reasoning  # noqa: F401
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

Msg = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Part:
    """A piece of a rendered prompt. ``special``: the template's own markup, whose control-token
    text becomes control tokens; otherwise data (message text), tokenized as plain text."""

    text: str
    special: bool


class _Out:
    def __init__(self) -> None:
        self.parts: list[Part] = []

    def mark(self, text: str) -> None:
        if text:
            self.parts.append(Part(text, True))

    def data(self, text: str) -> None:
        if text:
            self.parts.append(Part(text, False))


PartsFn = Callable[[Sequence[Msg]], list[Part]]


@dataclass
class ChatTemplate:
    """A way of turning messages into prompt parts.

    Attributes:
        name: the format's name ("gemma", "chatml", "dialogue", ...; "gguf" for the file's own).
        stop: stop strings (besides the model's end-of-generation tokens).
        keeps_reasoning: the format keeps ``<think>`` reasoning of earlier replies in the prompt;
            when False it is removed from assistant messages before rendering.
    """

    name: str
    parts_fn: PartsFn
    stop: list[str] = field(default_factory=list)
    keeps_reasoning: bool = False
    #: the GGUF's Jinja text ("" for a built-in format), and its renderer that takes extra
    #: template variables (``tools``) and messages carrying ``tool_calls`` (prompt/tools.py)
    source: str = ""
    render_with: Callable[[Sequence[dict[str, Any]], Mapping[str, Any]], list[Part]] | None = None

    def render_parts(self, messages: Sequence[Msg]) -> list[Part]:
        msgs = [dict(m) for m in messages]
        if not self.keeps_reasoning:
            for m in msgs:
                if m["role"] == "assistant" and "</think>" in m["content"]:
                    m["content"] = split_reasoning(m["content"])[1]
        try:
            return self.parts_fn(msgs)
        except DeskLMError:
            raise
        except Exception as e:  # a broken GGUF template must not crash a turn
            raise DeskLMError(f"the model's chat template failed to render: {e}") from e

    def render(self, messages: Sequence[Msg]) -> str:
        return "".join(p.text for p in self.render_parts(messages))


# --- built-in formats (each renders as llama.cpp's format of the same name) ------------------
def _chatml(msgs: Sequence[Msg]) -> list[Part]:
    o = _Out()
    for m in msgs:
        o.mark(f"<|im_start|>{m['role']}\n")
        o.data(m["content"])
        o.mark("<|im_end|>\n")
    o.mark("<|im_start|>assistant\n")
    return o.parts


def _gemma(msgs: Sequence[Msg]) -> list[Part]:
    # no system role: the (trimmed) system text opens the next user turn
    o = _Out()
    system = ""
    for m in msgs:
        if m["role"] == "system":
            system += m["content"].strip()
            continue
        role = "model" if m["role"] == "assistant" else m["role"]
        o.mark(f"<start_of_turn>{role}\n")
        if system and role != "model":
            o.data(system)
            o.mark("\n\n")
            system = ""
        o.data(m["content"].strip())
        o.mark("<end_of_turn>\n")
    o.mark("<start_of_turn>model\n")
    return o.parts


def _llama3(msgs: Sequence[Msg]) -> list[Part]:
    o = _Out()
    for m in msgs:
        o.mark(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n")
        o.data(m["content"].strip())
        o.mark("<|eot_id|>")
    o.mark("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return o.parts


def _llama2(system_tags: bool, bos_inside: bool, strip: bool) -> PartsFn:
    def render(msgs: Sequence[Msg]) -> list[Part]:
        o = _Out()
        o.mark("[INST] ")
        inside = True
        for m in msgs:
            content = m["content"].strip() if strip else m["content"]
            if not inside:
                inside = True
                o.mark("<s>[INST] " if bos_inside else "[INST] ")
            if m["role"] == "system":
                if system_tags:
                    o.mark("<<SYS>>\n")
                    o.data(content)
                    o.mark("\n<</SYS>>\n\n")
                else:
                    o.data(content)
                    o.mark("\n")
            elif m["role"] == "user":
                o.data(content)
                o.mark(" [/INST]")
            else:
                o.data(content)
                o.mark("</s>")
                inside = False
        return o.parts

    return render


def _mistral(lead: str, trail: str, trim_assistant: bool) -> PartsFn:
    def render(msgs: Sequence[Msg]) -> list[Part]:
        o = _Out()
        inside = False
        for m in msgs:
            if not inside:
                o.mark(f"{lead}[INST]{trail}")
                inside = True
            if m["role"] == "system":
                o.data(m["content"])
                o.mark("\n\n")
            elif m["role"] == "user":
                o.data(m["content"])
                o.mark(f"{lead}[/INST]")
            else:
                o.mark(trail)
                o.data(m["content"].strip() if trim_assistant else m["content"])
                o.mark("</s>")
                inside = False
        return o.parts

    return render


def _mistral_v7(space: str) -> PartsFn:
    def render(msgs: Sequence[Msg]) -> list[Part]:
        o = _Out()
        for m in msgs:
            if m["role"] == "system":
                o.mark(f"[SYSTEM_PROMPT]{space}")
                o.data(m["content"])
                o.mark("[/SYSTEM_PROMPT]")
            elif m["role"] == "user":
                o.mark(f"[INST]{space}")
                o.data(m["content"])
                o.mark("[/INST]")
            else:
                o.mark(space)
                o.data(m["content"])
                o.mark("</s>")
        return o.parts

    return render


def _phi3(msgs: Sequence[Msg]) -> list[Part]:
    o = _Out()
    for m in msgs:
        o.mark(f"<|{m['role']}|>\n")
        o.data(m["content"])
        o.mark("<|end|>\n")
    o.mark("<|assistant|>\n")
    return o.parts


def _phi4(msgs: Sequence[Msg]) -> list[Part]:
    o = _Out()
    for m in msgs:
        o.mark(f"<|im_start|>{m['role']}<|im_sep|>")
        o.data(m["content"])
        o.mark("<|im_end|>")
    o.mark("<|im_start|>assistant<|im_sep|>")
    return o.parts


_INST_STOPS = ["</s>", "[INST]"]
BUILTIN: dict[str, tuple[PartsFn, list[str]]] = {
    "chatml": (_chatml, ["<|im_end|>", "<|im_start|>"]),
    "gemma": (_gemma, ["<end_of_turn>", "<start_of_turn>"]),
    "llama3": (_llama3, ["<|eot_id|>", "<|start_header_id|>"]),
    "llama2": (_llama2(False, False, False), _INST_STOPS),
    "llama2-sys": (_llama2(True, False, False), _INST_STOPS),
    "llama2-sys-bos": (_llama2(True, True, False), _INST_STOPS),
    "llama2-sys-strip": (_llama2(True, False, True), _INST_STOPS),
    "mistral-v1": (_mistral(" ", " ", False), _INST_STOPS),
    "mistral-v3": (_mistral("", " ", True), _INST_STOPS),
    "mistral-v3-tekken": (_mistral("", "", False), _INST_STOPS),
    "mistral-v7": (_mistral_v7(" "), _INST_STOPS),
    "mistral-v7-tekken": (_mistral_v7(""), _INST_STOPS),
    "phi3": (_phi3, ["<|end|>", "<|user|>"]),
    "phi4": (_phi4, ["<|im_end|>", "<|im_start|>"]),
}


# --- the plain-text dialogue format for base models ------------------------------------------
# Chosen by measurement (tests/benchmarks/first_chat.py and a held-out set of 12 other
# questions, on the embedded Gemma 3 270M): the preamble, then the system prompt, then three
# example exchanges did best; the system prompt first, or fewer examples, did worse.
DIALOGUE_PREAMBLE = (
    "Below is a conversation between a User and an Assistant. The Assistant answers each "
    "question correctly in one short sentence."
)
DIALOGUE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
)
DIALOGUE_STOP = ["\nUser:", "\nAssistant:", "\n\n"]
DIALOGUE_USER, DIALOGUE_ASSISTANT = "User:", "Assistant:"


def _line(text: str) -> str:
    """Message text on one dialogue line: blank lines would end the turn (a stop string)."""
    return re.sub(r"\n\s*\n", "\n", text.strip())


def _dialogue(msgs: Sequence[Msg]) -> list[Part]:
    """Plain text throughout (no control tokens). Each label, message and line break is its own
    part, and parts are tokenized one by one, so history tokenizes identically every turn."""
    o: list[Part] = []
    system = "\n".join(m["content"].strip() for m in msgs if m["role"] == "system").strip()
    head = DIALOGUE_PREAMBLE + "\n" + (_line(system) + "\n" if system else "") + "\n"
    for q, a in DIALOGUE_EXAMPLES:
        head += f"{DIALOGUE_USER} {q}\n{DIALOGUE_ASSISTANT} {a}\n"
    o.append(Part(head, False))
    for m in msgs:
        if m["role"] == "system":
            continue
        o.append(Part(DIALOGUE_ASSISTANT if m["role"] == "assistant" else DIALOGUE_USER, False))
        o.append(Part(" " + _line(m["content"]), False))
        o.append(Part("\n", False))
    o.append(Part(DIALOGUE_ASSISTANT, False))
    return o


DIALOGUE = "dialogue"
GGUF = "gguf"
AUTO = "auto"
FORMAT_NAMES: tuple[str, ...] = (AUTO, GGUF, DIALOGUE, *BUILTIN)


def builtin_template(name: str) -> ChatTemplate:
    if name == DIALOGUE:
        return ChatTemplate(DIALOGUE, _dialogue, list(DIALOGUE_STOP))
    fn, stop = BUILTIN[name]
    return ChatTemplate(name, fn, list(stop))


ARCHITECTURE_FORMATS: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "phi3": "phi3",
    "mistral": "mistral-v3",
    "olmo": "chatml",
    "olmo2": "chatml",
    "smollm3": "chatml",
    "internlm2": "chatml",
}


def format_for(architecture: str, vocab_has: Callable[[str], bool] | None = None) -> str:
    """The built-in format for an architecture (used when the GGUF has no usable template)."""
    arch = (architecture or "").lower()
    if arch == "llama":
        # Meta's Llama 2 chat template is what llama.cpp calls llama2-sys-strip
        return "llama3" if vocab_has is not None and vocab_has("<|eot_id|>") else "llama2-sys-strip"
    return ARCHITECTURE_FORMATS.get(arch, "chatml")


def detect_family(template: str) -> str | None:
    """The built-in format a Jinja template's text names, by its markers (the facts llama.cpp's
    ``llm_chat_detect_template`` uses), or None when no built-in format matches it."""

    def has(s: str) -> bool:
        return s in template

    if has("<|im_start|>"):
        if has("<|im_sep|>"):
            return "phi4"
        return None if has("<end_of_utterance>") else "chatml"
    if template.startswith("mistral") or has("[INST]"):
        if has("[SYSTEM_PROMPT]"):
            return "mistral-v7"
        if has("' [INST] ' + system_message") or has("[AVAILABLE_TOOLS]"):
            if has(" [INST]"):
                return "mistral-v1"
            if has('"[INST]"'):
                return "mistral-v3-tekken"
            return "mistral-v3"
        if has("content.strip()"):
            return "llama2-sys-strip"
        if has("bos_token + '[INST]"):
            return "llama2-sys-bos"
        return "llama2-sys" if has("<<SYS>>") else "llama2"
    if has("<|assistant|>") and has("<|end|>"):
        return "phi3"
    if has("<start_of_turn>"):
        return "gemma"
    if has("<|start_header_id|>") and has("<|end_header_id|>"):
        return "llama3"
    return None


# --- the GGUF's own Jinja template ----------------------------------------------------------
_SENTINEL = "\ue000desklm{}:{}\ue001"
_SENTINEL_RE = re.compile("\ue000desklm(\\d+):(\\d+)\ue001")


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    # the settings chat templates are written for (Hugging Face's, llama-cpp-python's)
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = Jinja2ChatFormatter.tojson
    return env


def _raise(message: str) -> None:
    raise DeskLMError(f"the model's chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(fmt)


def _fold_system(msgs: Sequence[Msg]) -> list[Msg]:
    """For templates without a system role (as llama.cpp does): the system text opens the first
    user message, joined by a newline."""
    system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
    rest = [dict(m) for m in msgs if m["role"] != "system"]
    if system:
        for m in rest:
            if m["role"] == "user":
                m["content"] = system + "\n" + m["content"]
                break
        else:
            rest.insert(0, {"role": "user", "content": system})
    return rest


def _align(real: str, skeleton: str, contents: list[str]) -> list[Part] | None:
    """Split ``real`` into markup and contents, using ``skeleton`` (the same render with each
    content replaced by a sentinel). Contents the template trimmed are recognised; None when
    the two renders do not line up."""
    pieces = _SENTINEL_RE.split(skeleton)
    marks, refs = pieces[0::3], list(zip(pieces[1::3], pieces[2::3], strict=True))
    parts: list[Part] = []
    pos = 0
    if not real.startswith(marks[0]):
        return None
    if marks[0]:
        parts.append(Part(marks[0], True))
    pos = len(marks[0])
    for k, (_nonce, idx) in enumerate(refs):
        c = contents[int(idx)]
        nxt = marks[k + 1]
        last = k + 1 == len(refs)
        for cand in dict.fromkeys((c, c.strip(), c.lstrip(), c.rstrip(), c.strip("\n"))):
            end = pos + len(cand)
            if real.startswith(cand, pos) and (
                real.endswith(nxt) and end + len(nxt) == len(real)
                if last
                else real.startswith(nxt, end)
            ):
                break
        else:
            return None
        if cand:
            parts.append(Part(cand, False))
        if nxt:
            parts.append(Part(nxt, True))
        pos = end + len(nxt)
    return parts if pos == len(real) else None


def gguf_template(template: str, bos_token: str, eos_token: str) -> ChatTemplate:
    """Wrap a GGUF's own Jinja template, rendered sandboxed with llama.cpp's adjustments."""
    try:
        compiled = _environment().from_string(template)
    except Exception as e:  # a syntax error in the file's template
        raise DeskLMError(f"the model's chat template is invalid: {e}") from e

    def text(msgs: Sequence[Msg], extra: Mapping[str, Any] | None = None) -> str:
        # only what llama.cpp passes: without ``extra``, tools and the like stay *undefined*
        return str(
            compiled.render(
                messages=[dict(m) for m in msgs],
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=True,
                raise_exception=_raise,
                strftime_now=_strftime_now,
                **(extra or {}),
            )
        )

    def supports_system() -> bool:
        try:
            out = text(
                [
                    {"role": "system", "content": "\ue000sys\ue001"},
                    {"role": "user", "content": "\ue000usr\ue001"},
                ]
            )
        except Exception:
            return False
        return "\ue000sys\ue001" in out

    system_ok = supports_system()

    def parts(msgs: Sequence[Msg], extra: Mapping[str, Any] | None = None) -> list[Part]:
        msgs = list(msgs) if system_ok else _fold_system(msgs)
        real = text(msgs, extra)
        contents = [m["content"] for m in msgs]
        nonce = 0
        while any(f"\ue000desklm{nonce}:" in c for c in contents):
            nonce += 1  # a sentinel no message contains: deterministic, and unforgeable
        ghost = [
            {**m, "content": _SENTINEL.format(nonce, i) if m["content"] else ""}
            for i, m in enumerate(msgs)
        ]
        skeleton = text(ghost, extra)
        aligned = _align(real, skeleton, contents)
        if aligned is not None:
            return aligned
        # the template changes contents beyond trimming: its markup, with the contents as given
        log.debug("chat template transforms message text; markup and text tokenized apart")
        out: list[Part] = []
        last = 0
        for m in _SENTINEL_RE.finditer(skeleton):
            if m.start() > last:
                out.append(Part(skeleton[last : m.start()], True))
            if contents[int(m.group(2))]:
                out.append(Part(contents[int(m.group(2))], False))
            last = m.end()
        if last < len(skeleton):
            out.append(Part(skeleton[last:], True))
        return out

    family = detect_family(template)
    stop = [eos_token] if eos_token else []
    if family is not None:  # the turn's end marker, even where it is not an EOG token
        stop += [s for s in BUILTIN[family][1] if s not in stop]
    keeps = False
    try:  # does the template keep an earlier reply's reasoning?
        probe = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>\ue000r\ue001</think>a"},
            {"role": "user", "content": "q"},
        ]
        keeps = "\ue000r\ue001" in text(probe if system_ok else _fold_system(probe))
    except Exception:
        keeps = False

    def render_with(msgs: Sequence[dict[str, Any]], extra: Mapping[str, Any]) -> list[Part]:
        return parts(cast("Sequence[Msg]", msgs), extra)

    return ChatTemplate(
        GGUF, parts, stop, keeps_reasoning=keeps, source=template, render_with=render_with
    )


# --- instruct or base? ----------------------------------------------------------------------
_INSTRUCT_WORDS = re.compile(
    r"(?<![a-z])(it|instruct|instruction|chat|sft|dpo|rlhf|orpo|assistant|hermes|tulu|zephyr|"
    r"vicuna|alpaca|openchat|function|tool|reasoning|thinking|r1|coder-instruct)(?![a-z])"
)
_BASE_WORDS = re.compile(r"(?<![a-z])(base|pretrain|pretrained|pt|foundation)(?![a-z])")


@dataclass
class ModelKind:
    base: bool
    reason: str


def model_kind(metadata: Mapping[str, Any], chat_template: str | None) -> ModelKind:
    """Whether a GGUF holds a base (pretrained-only) model, from its metadata.

    A chat template means instruct. Otherwise ``general.finetune``, ``general.name``,
    ``general.basename`` and the file name are read for instruct words ("-it", "instruct",
    "chat", ...); ``general.base_model.*`` entries (a model derived from another) count as
    fine-tuned unless the names say base. Without any of these, the model is taken as base.
    """
    if chat_template and chat_template.strip():
        return ModelKind(False, "the file has a chat template")
    names = [
        str(metadata.get(k) or "")
        for k in ("general.finetune", "general.name", "general.basename", "general.file_name")
    ]
    words = " ".join(n.lower().replace("_", "-") for n in names if n)
    m = _INSTRUCT_WORDS.search(words)
    if m:
        return ModelKind(False, f"its name says '{m.group(1)}'")
    if _BASE_WORDS.search(words):
        return ModelKind(True, "its name says base")
    if int(metadata.get("general.base_model.count") or 0) > 0:
        return ModelKind(False, "it is derived from another model (general.base_model)")
    return ModelKind(True, "no chat template and nothing in its name says instruct or chat")


BASE_MODEL_NOTE = "base model: continues text, not trained to follow instructions"


# --- choosing -------------------------------------------------------------------------------
def choose_template(
    architecture: str,
    chat_template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    vocab_has: Callable[[str], bool] | None = None,
    chat_format: str = AUTO,
    base: bool = False,
) -> ChatTemplate:
    """The template for ``chat_format``: ``auto`` (dialogue for a base model, else the file's
    template, else a built-in by architecture), ``gguf``, ``dialogue`` or a built-in name."""
    if chat_format not in FORMAT_NAMES:
        raise DeskLMError(f"unknown chat format '{chat_format}'; known: " + ", ".join(FORMAT_NAMES))
    has_template = bool(chat_template and chat_template.strip())
    if chat_format == GGUF:
        if not has_template:
            raise DeskLMError(
                "this model file has no chat template of its own; choose auto, "
                "dialogue or a built-in format"
            )
        assert chat_template is not None
        return gguf_template(chat_template, bos_token, eos_token)
    if chat_format != AUTO:
        return builtin_template(chat_format)
    if base and not has_template:
        return builtin_template(DIALOGUE)
    if has_template:
        assert chat_template is not None
        return gguf_template(chat_template, bos_token, eos_token)
    return builtin_template(format_for(architecture, vocab_has))


def fallback_template(
    architecture: str, chat_template: str | None, vocab_has: Callable[[str], bool] | None = None
) -> ChatTemplate:
    """What to use when the file's template fails: its family by its text, else by
    architecture."""
    family = detect_family(chat_template or "")
    return builtin_template(family or format_for(architecture, vocab_has))
