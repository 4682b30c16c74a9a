"""The prompt side of tools, as pure logic: calls parsed, replies held back while they may be
a call, results shown after the user's message, the grammar for a forced call."""

from __future__ import annotations

import pytest

from desklm.engine.chat import tool_format as tf
from desklm.engine.chat.tools import ToolInfo, ToolStep
from desklm.errors import DeskLMError

WEATHER = ToolInfo(
    "t",
    "weather",
    "Weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    on=True,
)


def test_parse_call_forms():
    tools = [WEATHER]
    assert tf.parse_call(
        '{"tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}}', tools
    ) == ("weather", {"city": "Oslo"})
    assert tf.parse_call(
        '```json\n{"name": "weather", "arguments": "{\\"city\\": \\"A\\"}"}\n```', tools
    ) == ("weather", {"city": "A"})
    assert tf.parse_call('{"tool_call": {"name": "nope", "arguments": {}}}', tools) is None
    assert tf.parse_call('Use {"name": "weather", "arguments": {}} like this', tools) is None
    assert tf.parse_call('{"name": "weather", "arguments": {}} and more text', tools) is None
    assert tf.parse_call("It is sunny.", tools) is None
    assert tf.parse_call('{"tool_call": {"name": "weather", "arguments": [1]}}', tools) is None


def test_held_stream_holds_only_what_may_be_a_call():
    out: list[str] = []
    h = tf.HeldStream(out.append)
    for piece in ['{"tool', '_call": {"name"']:
        h.feed(piece)
    assert out == []  # may still be a call: nothing shown
    h2 = tf.HeldStream(out.append)
    for piece in ["It", " is", " sunny."]:
        h2.feed(piece)
    assert "".join(out) == "It is sunny."
    out.clear()
    h3 = tf.HeldStream(out.append)
    h3.feed('{"a": 1}')  # JSON, but not a call: shown once it cannot be one
    assert out == ['{"a": 1}']
    h4 = tf.HeldStream(out.append)
    h4.feed('{"tool_call')
    h4.flush()  # the reply ended and was not a call after all
    assert out[-1] == '{"tool_call'


def test_results_follow_the_users_message_and_roles_alternate():
    step = ToolStep("1", "t", "weather", "weather", {"city": "Oslo"}, "ok", "Rain.", "", 0.1)
    denied = ToolStep("2", "t", "weather", "weather", {"city": "Rome"}, "denied")
    msgs = tf.with_results(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "Weather?"}],
        [step, denied],
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"].startswith("Weather?\n\n[the tool weather was called with")
    assert "Rain." in msgs[1]["content"] and "denied" in msgs[1]["content"]


def test_grammar_for_a_named_tool_and_for_none():
    assert tf.grammar([WEATHER], "weather") is not None
    with pytest.raises(DeskLMError, match="no tool named"):
        tf.grammar([WEATHER], "other")
    with pytest.raises(DeskLMError, match="no tool is on"):
        tf.grammar([], "*")


def test_system_text_describes_each_tool():
    text = tf.system_text([WEATHER])
    assert '{"tool_call":' in text and "- weather: Weather" in text and '"city"' in text
