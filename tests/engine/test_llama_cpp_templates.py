"""DeskLM's chat formats against llama.cpp's reference (tests/test-chat-template.cpp).

The data file holds llama.cpp's cases as facts: each real model's template, the conversation,
and the exact text llama.cpp renders (``expected_output_jinja`` through its Jinja path when set,
else ``expected_output``; ``expected_output`` is also what its built-in format of that family
renders). Extracted from the C++ test's data with a small script; none of its code is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desklm.engine.prompt.chat_format import BUILTIN, builtin_template, detect_family, gguf_template

DATA = json.loads(
    (Path(__file__).parent / "data" / "llama_cpp_chat_templates.json").read_text("utf-8")
)
CASES = {c["name"]: c for c in DATA["cases"]}

# Cases DeskLM cannot render, each with the reason. llama.cpp cannot either through Jinja
# (its own test marks the case supported_with_jinja = false).
CANNOT = {
    "ai-sage/GigaChat-20B-A3B-instruct": "the template reads additional_special_tokens, which "
    "is tokenizer configuration that a GGUF does not carry",
}


def _messages(case: dict) -> list[dict[str, str]]:
    return [*DATA["conversation"], *case["extra_conversation"]]


def _render(case: dict) -> str:
    t = gguf_template(case["template"], case["bos_token"], case["eos_token"])
    return t.render(_messages(case))


@pytest.mark.parametrize("name", list(CASES))
def test_the_gguf_template_path_renders_llama_cpps_reference_byte_for_byte(name):
    case = CASES[name]
    expected = case["expected_output_jinja"] or case["expected_output"]
    if name in CANNOT:
        assert not case["supported_with_jinja"]
        pytest.xfail(CANNOT[name])
    assert _render(case) == expected


def test_at_least_34_of_36_cases_match_and_the_others_are_named():
    matched, differ = [], []
    for name, case in CASES.items():
        expected = case["expected_output_jinja"] or case["expected_output"]
        try:
            ok = _render(case) == expected
        except Exception:
            ok = False
        (matched if ok else differ).append(name)
    assert len(CASES) == 36
    assert len(matched) >= 34, differ
    assert set(differ) == set(CANNOT)


@pytest.mark.parametrize(
    "name", [n for n, c in CASES.items() if detect_family(c["template"]) is not None]
)
def test_built_in_formats_match_llama_cpps_formats_of_the_same_name(name):
    # llama.cpp detects the family from the template text and renders its built-in format;
    # DeskLM's built-in of that name must give the same text
    case = CASES[name]
    family = detect_family(case["template"])
    assert family in BUILTIN
    assert builtin_template(family).render(_messages(case)) == case["expected_output"]


def test_detection_covers_the_main_families():
    found = {detect_family(c["template"]) for c in CASES.values()}
    assert {
        "chatml",
        "gemma",
        "llama3",
        "llama2",
        "llama2-sys-bos",
        "llama2-sys-strip",
        "mistral-v1",
        "mistral-v3",
        "mistral-v3-tekken",
        "mistral-v7",
        "phi3",
        "phi4",
    } <= found


@pytest.mark.parametrize("name", [n for n in CASES if n not in CANNOT])
def test_markup_and_message_text_are_told_apart(name):
    # every message's text is a data part (tokenized as plain text); the rest is markup
    case = CASES[name]
    t = gguf_template(case["template"], case["bos_token"], case["eos_token"])
    parts = t.render_parts(_messages(case))
    assert "".join(p.text for p in parts) == _render(case)
    data = "".join(p.text for p in parts if not p.special)
    for m in _messages(case):
        assert m["content"].strip() in data
    for p in parts:
        if p.special:
            assert "Who are you" not in p.text and "Another question" not in p.text
