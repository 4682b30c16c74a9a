import pytest

from desklm.engine.prompt.chat_format import (
    FORMAT_NAMES,
    builtin_template,
    choose_template,
    detect_family,
    fallback_template,
    format_for,
    gguf_template,
    model_kind,
    split_reasoning,
)
from desklm.errors import DeskLMError

MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3"])
def test_gemma_family_without_template_gets_the_gemma_turn_format(arch):
    t = choose_template(arch, None)
    assert t.name == "gemma"
    assert t.render(MSGS) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "<end_of_turn>" in t.stop


def test_architecture_table():
    assert format_for("qwen2") == "chatml"
    assert format_for("llama", vocab_has=lambda tok: tok == "<|eot_id|>") == "llama3"
    assert format_for("llama", vocab_has=lambda tok: False) == "llama2-sys-strip"
    assert format_for("phi3") == "phi3"
    assert format_for("somethingnew") == "chatml"


def test_a_gguf_template_wins_and_is_rendered():
    tpl = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{{ bos_token }}"
    t = choose_template("gemma3", tpl, bos_token="<s>", eos_token="</s>")
    assert t.name == "gguf"
    assert t.render(MSGS[:2]) == "<system>Be brief.<user>Hi<s>"


def test_a_hostile_gguf_template_cannot_reach_python():
    payload = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    t = choose_template("llama", payload, "<s>", "</s>")
    with pytest.raises(DeskLMError, match="chat template failed"):
        t.render(MSGS)


# --- llama.cpp's adjustments to GGUF templates ----------------------------------------------
PHI4_MINI = (  # microsoft/Phi-4-mini-instruct's template
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + "
    "'<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + "
    "message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


def test_phi4_mini_renders():
    t = gguf_template(PHI4_MINI, "<s>", "<|endoftext|>")
    assert t.render(MSGS) == (
        "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello!"
        "<|end|><|user|>Bye<|end|><|assistant|>"
    )


def test_tools_are_undefined_not_none():
    # a template that tests `tools is defined` fails on None (None | length); llama.cpp leaves
    # tools undefined when there are none
    tpl = (
        "{% if tools is defined %}{{ tools | length }} tools{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    )
    assert gguf_template(tpl, "", "").render(MSGS[1:2]) == "<user>Hi"


def test_a_template_without_a_system_role_gets_it_in_the_first_user_turn():
    tpl = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m.role }}]{{ m.content }}{% endfor %}"
    )
    t = gguf_template(tpl, "", "")
    assert t.render(MSGS) == "[user]Be brief.\nHi[assistant]Hello![user]Bye"
    # and one that silently drops it, likewise
    drops = (
        "{% for m in messages %}{% if m.role != 'system' %}[{{ m.role }}]{{ m.content }}"
        "{% endif %}{% endfor %}"
    )
    assert (
        gguf_template(drops, "", "").render(MSGS) == "[user]Be brief.\nHi[assistant]Hello![user]Bye"
    )


def test_a_chatml_template_stops_at_im_end_even_when_eos_is_another_token():
    tpl = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n"
    )
    t = gguf_template(tpl, "<bos>", "<eos>")
    assert t.stop[0] == "<eos>" and "<|im_end|>" in t.stop


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("{{ '<|im_start|>' + m }}", "chatml"),
        ("{{ '<start_of_turn>' }}", "gemma"),
        ("<|start_header_id|>{{ r }}<|end_header_id|>", "llama3"),
        ("<|user|>{{ c }}<|end|><|assistant|>", "phi3"),
        ("{{ bos_token + '[INST] ' + c + ' [/INST]' }}", "llama2-sys-bos"),
        ("[SYSTEM_PROMPT]{{ s }}[INST]", "mistral-v7"),
        ("{{ hello }}", None),
    ],
)
def test_family_is_recognised_from_the_template_text(text, family):
    assert detect_family(text) == family


def test_a_failing_template_falls_back_to_its_family_not_only_the_architecture():
    broken = "{{ undefined_function() }}<|im_start|>"
    t = fallback_template("llama", broken)
    assert t.name == "chatml"
    assert fallback_template("gemma3", "{{ nope() }}").name == "gemma"


# --- base models and the dialogue format -----------------------------------------------------
def test_model_kind_from_metadata():
    assert model_kind({"general.name": "Gemma 3 270m", "general.basename": "gemma-3"}, None).base
    assert not model_kind({"general.name": "Gemma 3 270m It"}, None).base
    assert not model_kind({"general.finetune": "instruct"}, None).base
    assert not model_kind({"general.name": "Qwen2.5 0.5B Chat"}, None).base
    assert not model_kind({"general.name": "x"}, "{{ messages }}").base  # a chat template
    assert not model_kind({"general.name": "x", "general.base_model.count": 1}, None).base
    assert model_kind({"general.name": "Llama 3 8B Base", "general.base_model.count": 1}, None).base


def test_auto_picks_the_dialogue_for_a_base_model_and_the_setting_overrides_it():
    assert choose_template("gemma3", None, base=True).name == "dialogue"
    assert choose_template("gemma3", None, base=False).name == "gemma"
    assert choose_template("gemma3", None, base=True, chat_format="gemma").name == "gemma"
    assert choose_template("qwen2", "{{ x }}", base=True).name == "gguf"
    with pytest.raises(DeskLMError, match="no chat template"):
        choose_template("gemma3", None, chat_format="gguf")
    with pytest.raises(DeskLMError, match="unknown chat format"):
        choose_template("gemma3", None, chat_format="nope")


def test_every_format_name_is_a_setting_choice():
    from desklm.engine.settings import SCHEMA

    assert SCHEMA["chat_format"].choices == FORMAT_NAMES


def test_dialogue_renders_plain_lines_with_the_system_prompt_in_the_preamble():
    t = builtin_template("dialogue")
    text = t.render(MSGS)
    assert text.startswith("Below is a conversation between a User and an Assistant.")
    assert "answers each question correctly in one short sentence.\nBe brief.\n\nUser: " in text
    assert text.endswith("User: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:")
    assert all(not p.special for p in t.render_parts(MSGS))  # no control tokens at all
    assert "\nUser:" in t.stop and "\n\n" in t.stop


def test_dialogue_keeps_a_message_on_its_turn_even_with_blank_lines():
    t = builtin_template("dialogue")
    text = t.render([{"role": "user", "content": "one\n\n\ntwo  "}])
    assert text.endswith("User: one\ntwo\nAssistant:")


@pytest.mark.parametrize("name", ["dialogue", "gemma", "chatml", "llama3", "mistral-v7"])
def test_history_renders_identically_turn_after_turn(name):
    # the prompt of turn n + the reply is a prefix of turn n+1's prompt, part for part
    t = builtin_template(name)
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    before = t.render_parts(convo)
    later = t.render_parts(
        [*convo, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    )
    if name == "dialogue":  # parts are tokenized one by one: same parts, same tokens
        assert later[: len(before)] == before
    else:
        assert "".join(p.text for p in later).startswith("".join(p.text for p in before))


# --- reasoning ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "opened", "expected"),
    [
        ("<think>\nLet me see.\n</think>\n\nParis.", False, ("Let me see.", "Paris.")),
        ("Let me see.\n</think>\n\nParis.", False, ("Let me see.", "Paris.")),
        ("Let me see.</think>Paris.", True, ("Let me see.", "Paris.")),
        ("Paris.", False, ("", "Paris.")),
        ("still thinking", True, ("still thinking", "")),
        ("<think>unfinished", False, ("unfinished", "")),
        ("<think></think>Paris.", False, ("", "Paris.")),
        # a tag that is not at the start is the answer's own text (a reply about the tags)
        ("Use `<think>` tags in HTML.", False, ("", "Use `<think>` tags in HTML.")),
        ("Hi <think>a</think>b", False, ("", "Hi <think>a</think>b")),
        ("x" * 300 + "<think>y", False, ("", "x" * 300 + "<think>y")),
        ("answer\n```\n<think>\n```\nmore", False, ("", "answer\n```\n<think>\n```\nmore")),
    ],
)
def test_split_reasoning(reply, opened, expected):
    assert split_reasoning(reply, opened) == expected


def test_reasoning_is_kept_out_of_later_prompts_unless_the_template_keeps_it():
    convo = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>secret plan</think>A1"},
        {"role": "user", "content": "Q2"},
    ]
    text = builtin_template("chatml").render(convo)
    assert "secret plan" not in text and "<|im_start|>assistant\nA1<|im_end|>" in text
    keeps = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    t = gguf_template(keeps, "", "")
    assert t.keeps_reasoning and "secret plan" in t.render(convo)
    strips = "{% for m in messages %}[{{ m.content.split('</think>')[-1] }}]{% endfor %}"
    t = gguf_template(strips, "", "")
    assert not t.keeps_reasoning and t.render(convo) == "[Q1][A1][Q2]"


def test_reasoning_opened_by_the_template():
    from desklm.engine.chat.session import reasoning_opened

    assert reasoning_opened("<｜Assistant｜><think>\n")
    assert not reasoning_opened("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not reasoning_opened("user wrote <think> here\n<|im_start|>assistant\n")


def test_stop_strings_end_a_reply_but_a_blank_one_never_opens_it():
    from desklm.engine.prompt.stream import find_stop as _find_stop

    stops = ["\nUser:", "\n\n"]
    assert _find_stop(" Paris.\n\nUser:", stops, 0) == 7
    assert _find_stop("\n\n Paris.", stops, 0) is None  # leading blank lines are not the end
    assert _find_stop("\n\n Paris.\n\n", stops, 0) == 9
    assert _find_stop("\nUser: hi", stops, 0) == 0  # an empty reply that starts a user turn


def test_reasoning_clock_counts_the_tokens_inside_think():
    from desklm.engine.prompt.stream import ReasoningClock as _ReasoningClock

    def run(pieces, opened):
        c, reply = _ReasoningClock(opened), ""
        for p in pieces:
            reply += p
            c.token(reply)
        return c

    c = run(["<think>", "a", "b", "</think>", "Paris", "."], False)
    assert c.tokens == 4 and c.seconds is not None and c.seconds >= 0
    assert run(["a", "</think>", "Paris"], True).tokens == 2
    none = run(["Paris", "."], False)
    assert none.tokens == 0 and none.seconds is None
