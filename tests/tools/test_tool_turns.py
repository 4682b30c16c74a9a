"""The turn loop with tools on, on the real llama.cpp and the embedded model: a call forced by
a grammar, consent each way, Stop while asked, a 1 MB result in a 2k context, tool output as
data, a server that cannot start; and the conversation schema 3 (calls saved with replies)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from desklm.engine.chat.conversation import Message
from desklm.engine.chat.session import ChatSession
from desklm.engine.chat.tools import Decision, ServerConfig, ToolHub, ToolRequest
from desklm.engine.store.files import SCHEMA_VERSION, ConversationStore
from desklm.errors import DeskLMError
from tests.conftest import small_settings

V2 = Path(__file__).parents[1] / "engine" / "data" / "conversation-v2.json"


def make(
    engine, model_path: Path, hub: ToolHub, answer: Decision = Decision.ONCE, **over: object
) -> tuple[ChatSession, list[ToolRequest], list[tuple[str, str]]]:
    values = {"max_tokens": 48, "temperature": 0.0, **over}
    s = ChatSession(model_path, small_settings(**values), engine=engine, store=ConversationStore())
    s.reset()
    asked: list[ToolRequest] = []
    events: list[tuple[str, str]] = []
    s.tools = hub

    def consent(req: ToolRequest) -> Decision:
        asked.append(req)
        return answer

    s.consent = consent
    s.on_tool = lambda kind, step: events.append((kind, step.status))
    return s, asked, events


def test_the_embedded_model_calls_a_tool_under_a_grammar(engine, model_path, stdio_hub):
    for name in ("weather", "add"):
        stdio_hub.set_tool("t", name, True)
    s, asked, events = make(engine, model_path, stdio_hub)
    s.force_tool = "weather"
    streamed: list[str] = []
    r = s.send("What is the weather like in Paris today?", streamed.append)
    [call] = r.tool_calls
    assert call["tool"] == "weather" and call["server"] == "t" and call["status"] == "ok"
    city = call["arguments"]["city"]
    assert isinstance(city, str) and set(call["arguments"]) == {"city"}  # valid for the schema
    assert call["result"] == f"Sunny and 21 degrees in {city}."  # the real server answered
    assert [a.tool for a in asked] == ["weather"] and asked[0].arguments == {"city": city}
    assert events == [("call", "asking"), ("result", "ok")]
    assert '"tool_call"' not in "".join(streamed)  # the call is not streamed as reply text
    assert "".join(streamed).strip() == r.reply.strip()
    assert s.force_tool is None  # forcing is for one turn
    saved = ConversationStore().load(s.conv_id)
    assert saved["schema"] == SCHEMA_VERSION == 3
    assert saved["messages"][1]["tool_calls"][0]["result"] == call["result"]
    msgs = s.conversation.as_msgs(s.conversation.messages)  # what later turns show the model
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]  # still alternating
    assert (
        call["result"] in msgs[1]["content"] and "the tool weather was called" in msgs[1]["content"]
    )
    reopened = ChatSession(model_path, small_settings(), engine=engine, store=ConversationStore())
    reopened.open_conversation(s.conv_id)
    assert reopened.conversation.messages[1].tool_calls == saved["messages"][1]["tool_calls"]


def test_a_denied_call_is_not_made_and_the_model_answers(engine, model_path, stdio_hub):
    stdio_hub.set_tool("t", "touch", True)
    s, asked, _ = make(engine, model_path, stdio_hub, answer=Decision.DENY)
    s.force_tool = "touch"
    # a fixed path: the prompt (and so the forced call) is the same every run; under
    # tmp_path the run's number changes it, and some numbers send the base model looping
    # inside the path string until the call's token limit (seen with pytest-5 and pytest-9)
    out = Path(tempfile.gettempdir()) / "desklm-denied"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    r = s.send(f"Create the file {out / 'x.txt'}")
    [call] = r.tool_calls
    assert call["status"] == "denied" and call["result"] == "" and len(asked) == 1
    assert not any(out.iterdir())  # the tool never ran
    assert r.stats.finish_reason in ("stop", "length")  # the model went on and answered


def test_stop_while_the_user_is_asked(engine, model_path, stdio_hub):
    stdio_hub.set_tool("t", "weather", True)
    s, _, events = make(engine, model_path, stdio_hub)

    def stop_then_allow(req: ToolRequest) -> Decision:
        s.stop()
        assert req.cancelled()  # the prompt sees the Stop and can close
        return Decision.ONCE

    s.consent = stop_then_allow
    s.force_tool = "weather"
    r = s.send("Weather in Rome?")
    assert r.tool_calls[0]["status"] == "stopped" and r.stats.finish_reason == "cancelled"
    assert events[-1] == ("result", "stopped")
    assert (
        ConversationStore().load(s.conv_id)["messages"][1]["tool_calls"][0]["status"] == "stopped"
    )


def test_a_megabyte_result_is_cut_to_fit_the_context(engine, model_path, stdio_hub):
    stdio_hub.set_tool("t", "megabyte", True)
    s, _, _ = make(engine, model_path, stdio_hub, max_tokens=32)
    s.force_tool = "megabyte"
    r = s.send("Fetch the data.")
    [call] = r.tool_calls
    assert call["status"] == "ok" and "cut from 977 KB to 64 KB" in call["note"]
    assert "to fit the context" in call["note"]
    assert len(call["result"]) < 8192 and r.stats.context_used <= r.stats.n_ctx == 2048
    assert r.stats.finish_reason in ("stop", "length")


def test_tool_output_is_data_never_control_tokens(engine, model_path, stdio_hub):
    stdio_hub.set_tool("t", "markers", True)
    s, _, _ = make(engine, model_path, stdio_hub)
    s.apply_settings({"chat_format": "gemma"})
    try:
        s.force_tool = "markers"
        r = s.send("Call the tool.")
        assert "<end_of_turn>" in r.tool_calls[0]["result"]
        parts = engine.template.render_parts(s.conversation.as_msgs(s.conversation.messages))
        tokens = engine.tokenize(parts)
        eot = engine._single_token("<end_of_turn>")
        marks = sum(p.text.count("<end_of_turn>") for p in parts if p.special)
        assert eot is not None and tokens.count(eot) == marks
        assert any("<end_of_turn>" in p.text for p in parts if not p.special)
    finally:
        s.apply_settings({"chat_format": "auto"})


def test_a_server_that_cannot_start_leaves_the_chat_going(engine, model_path, hub):
    hub.add(ServerConfig("gone", command="/no/such/program-xyz"))
    hub.set_tool("gone", "anything", True)
    s, _, _ = make(engine, model_path, hub, max_tokens=8)
    r = s.send("Hello!")
    assert r.tool_calls == [] and r.reply
    assert len(r.notes) == 1 and "no such program" in r.notes[0]
    s.force_tool = "anything"
    with pytest.raises(DeskLMError, match="no tool is on"):
        s.send("Call it.")
    assert len(s.conversation.messages) == 2  # the refused turn added nothing


# --- schema 3 -----------------------------------------------------------------------------------
def test_a_version_2_file_opens_and_saves_as_version_3(tmp_path):
    root = tmp_path / "conv"
    root.mkdir()
    original = json.loads(V2.read_text("utf-8"))
    shutil.copy(V2, root / f"{original['id']}.json")
    st = ConversationStore(root)
    rec = st.load(original["id"])
    assert rec["schema"] == 3 and st.last_notes == []
    [user, a] = [Message.from_dict(m) for m in rec["messages"]]
    assert user.content == "Name a colour."
    assert a.content == "Blue." and [x.content for x in a.alternatives] == ["Red."]
    assert a.alternatives[0].continuation[0].content == "Another?" and a.tool_calls == []
    st.save(rec)
    again = json.loads((root / f"{original['id']}.json").read_text("utf-8"))
    assert again["schema"] == 3 and again["messages"] == rec["messages"]


def test_stored_tool_calls_are_checked(tmp_path):
    root = tmp_path / "conv"
    st = ConversationStore(root)
    good = {
        "id": "c1",
        "server": "t",
        "tool": "add",
        "name": "add",
        "arguments": {"a": 1},
        "status": "ok",
        "result": "2",
        "note": "",
        "seconds": 0.1,
    }
    rec = {
        "id": "abc",
        "title": "x",
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    good,
                    {**good, "status": "exploded"},
                    {**good, "arguments": "rm -rf"},
                    {**good, "seconds": float("nan")},
                    "junk",
                ],
            },
        ],
    }
    st.save(rec)
    calls = st.load("abc")["messages"][1]["tool_calls"]
    assert calls[0] == good and len(calls) == 2 and calls[1]["seconds"] == 0.0
