"""Which chat template a GGUF needs, and rendering a conversation with it.

Order of preference:

1. The GGUF's own ``tokenizer.chat_template`` (Jinja), rendered in llama-cpp-python's sandboxed
   Jinja environment (``ImmutableSandboxedEnvironment``): a template cannot touch Python objects.
2. Otherwise a built-in format chosen by ``general.architecture`` (gemma -> gemma, qwen2 ->
   chatml, llama with a llama-3 vocabulary -> llama-3, ...). The embedded Gemma 3 base model has
   no template of its own and gets the Gemma turn format this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from desklm.errors import DeskLMError

Msg = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class ChatTemplate:
    """A way of turning messages into prompt text.

    Attributes:
        name: "gemma", "chatml", "llama-3", ..., or "gguf" for the file's own template.
        stop: stop strings (besides the model's end-of-generation tokens).
        render_fn: renders messages (+ the generation prompt) to text.
    """

    name: str
    render_fn: Callable[[Sequence[Msg]], str]
    stop: list[str] = field(default_factory=list)

    def render(self, messages: Sequence[Msg]) -> str:
        try:
            return self.render_fn(messages)
        except DeskLMError:
            raise
        except Exception as e:  # a broken GGUF template must not crash a turn
            raise DeskLMError(f"the model's chat template failed to render: {e}") from e


def _merge_system(messages: Sequence[Msg]) -> tuple[str, list[Msg]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return system, [m for m in messages if m["role"] != "system"]


def _gemma(messages: Sequence[Msg]) -> str:
    # Gemma has no system role: the system text opens the first user turn (as Google's template).
    system, rest = _merge_system(messages)
    out = []
    for i, m in enumerate(rest):
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"].strip()
        if i == 0 and system and role == "user":
            content = f"{system.strip()}\n\n{content}"
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return "".join(out)


def _chatml(messages: Sequence[Msg]) -> str:
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def _llama3(messages: Sequence[Msg]) -> str:
    out = [
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in messages
    ]
    out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _llama2(messages: Sequence[Msg]) -> str:
    system, rest = _merge_system(messages)
    out = []
    for i, m in enumerate(rest):
        if m["role"] == "user":
            text = m["content"].strip()
            if i == 0 and system:
                text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
            out.append(("" if i == 0 else "<s>") + f"[INST] {text} [/INST]")
        else:
            out.append(f" {m['content'].strip()} </s>")
    return "".join(out)


def _mistral(messages: Sequence[Msg]) -> str:
    system, rest = _merge_system(messages)
    out = []
    for i, m in enumerate(rest):
        if m["role"] == "user":
            text = m["content"].strip()
            if i == 0 and system:
                text = f"{system}\n\n{text}"
            out.append(f"[INST] {text} [/INST]")
        else:
            out.append(f"{m['content'].strip()}</s>")
    return "".join(out)


def _phi3(messages: Sequence[Msg]) -> str:
    out = [f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages]
    out.append("<|assistant|>\n")
    return "".join(out)


BUILTIN: dict[str, tuple[Callable[[Sequence[Msg]], str], list[str]]] = {
    "gemma": (_gemma, ["<end_of_turn>", "<start_of_turn>"]),
    "chatml": (_chatml, ["<|im_end|>", "<|im_start|>"]),
    "llama-3": (_llama3, ["<|eot_id|>", "<|start_header_id|>"]),
    "llama-2": (_llama2, ["</s>", "[INST]"]),
    "mistral": (_mistral, ["</s>", "[INST]"]),
    "phi3": (_phi3, ["<|end|>", "<|user|>"]),
}

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
    "mistral": "mistral",
    "olmo": "chatml",
    "olmo2": "chatml",
    "smollm3": "chatml",
    "internlm2": "chatml",
}


def builtin_template(name: str) -> ChatTemplate:
    fn, stop = BUILTIN[name]
    return ChatTemplate(name, fn, list(stop))


def format_for(architecture: str, vocab_has: Callable[[str], bool] | None = None) -> str:
    """The built-in format for an architecture (used when the GGUF has no template)."""
    arch = (architecture or "").lower()
    if arch == "llama":
        return "llama-3" if vocab_has is not None and vocab_has("<|eot_id|>") else "llama-2"
    return ARCHITECTURE_FORMATS.get(arch, "chatml")


def gguf_template(template: str, bos_token: str, eos_token: str) -> ChatTemplate:
    """Wrap a GGUF's own Jinja template, rendered sandboxed exactly as llama-cpp-python does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token
        )
    except Exception as e:  # a syntax error in the file's template
        raise DeskLMError(f"the model's chat template is invalid: {e}") from e

    def render(messages: Sequence[Msg]) -> str:
        msgs: list[Any] = [dict(m) for m in messages]
        result = formatter(messages=msgs)
        return str(result.prompt)

    stop = [eos_token] if eos_token else []
    return ChatTemplate("gguf", render, stop)


def choose_template(
    architecture: str,
    chat_template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    vocab_has: Callable[[str], bool] | None = None,
) -> ChatTemplate:
    if chat_template and chat_template.strip():
        return gguf_template(chat_template, bos_token, eos_token)
    return builtin_template(format_for(architecture, vocab_has))
