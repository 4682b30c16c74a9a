import pytest

from desklm.engine.chat_format import choose_template, format_for
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
