"""Regenerate, versions, edit and resend, delete, and the v1 -> v2 migration, on the real model."""

import json
import shutil
from pathlib import Path

import pytest

from desklm.engine.chat import branches
from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import SCHEMA_VERSION, ConversationStore
from desklm.errors import DeskLMError
from tests.conftest import small_settings

V1 = Path(__file__).parent / "data" / "conversation-v1.json"


def session(engine, model_path, tmp_path, **over):
    s = ChatSession(
        model_path,
        small_settings(max_tokens=6, temperature=1.0, seed=-1, **over),
        engine=engine,
        store=ConversationStore(tmp_path / "conv"),
    )
    s.reset()
    return s


def stored(s):
    return json.loads(s.store.path(s.conv_id).read_text("utf-8"))


def test_a_version_1_file_loads_and_saves_as_the_current_version_losing_nothing(tmp_path):
    assert SCHEMA_VERSION == 3
    root = tmp_path / "conv"
    root.mkdir()
    original = json.loads(V1.read_text("utf-8"))
    assert original["schema"] == 1
    shutil.copy(V1, root / V1.name.replace("conversation-v1", original["id"]))
    st = ConversationStore(root)
    rec = st.load(original["id"])
    assert rec["schema"] == SCHEMA_VERSION
    st.save(rec)
    again = json.loads((root / f"{original['id']}.json").read_text("utf-8"))
    assert again["schema"] == SCHEMA_VERSION
    for key in ("id", "title", "created", "model", "settings", "context_start", "messages"):
        assert again[key] == original[key], key


def test_regenerate_keeps_every_reply_and_switches(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    s.send("Name a colour.")
    first = s.conversation.messages[-1]
    streamed: list[str] = []
    r = s.regenerate(streamed.append)
    assert "".join(streamed).strip() == r.reply.strip()
    msgs = s.conversation.messages
    assert len(msgs) == 2 and msgs[-1].content == r.reply.strip()
    assert branches.version_label(msgs[-1]) == "2/2"
    seen = []
    r3 = s.regenerate(on_start=lambda plan, reused: seen.append((len(plan.tokens), reused)))
    [(n, reused)] = seen
    assert reused == n - 1 == r3.stats.prompt_tokens_reused  # the same prompt: all from cache
    last = s.conversation.messages[-1]
    assert branches.version_label(last) == "3/3"
    shown = s.select_alternative(last.id, 0)
    assert shown.id == first.id and shown.content == first.content
    # saved with every version, and a reload shows the same
    rec = stored(s)
    assert rec["schema"] == SCHEMA_VERSION and len(rec["messages"][1]["alternatives"]) == 2
    assert rec["messages"][1]["alt_index"] == 0
    s2 = ChatSession(model_path, small_settings(), engine=engine, store=s.store)
    s2.open_conversation(s.conv_id)
    assert branches.version_label(s2.conversation.messages[1]) == "1/3"


def test_edit_and_resend_branches_and_keeps_the_old_branch(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    s.send("First question")
    s.send("Second question")
    q1 = s.conversation.messages[0]
    r = s.edit_and_resend(q1.id, "First question, edited")
    msgs = s.conversation.messages
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[0].content == "First question, edited" and msgs[1].content == r.reply.strip()
    assert branches.version_label(msgs[0]) == "2/2"
    assert r.stats.prompt_tokens > 0 and r.stats.completion_tokens > 0
    old = s.select_alternative(msgs[0].id, 0)
    assert old.content == "First question"
    assert [m.content for m in s.conversation.messages][2] == "Second question"
    with pytest.raises(DeskLMError, match="only your own messages"):
        s.edit_and_resend(s.conversation.messages[1].id, "x")


def test_a_failed_regenerate_changes_nothing(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    with pytest.raises(DeskLMError, match="nothing to regenerate"):
        s.regenerate()
    s.send("Hello")
    before = [m.to_dict() for m in s.conversation.messages]
    s.settings.set("max_tokens", 6)
    s.conversation.messages[0].content = "word " * 3000  # cannot fit any more
    with pytest.raises(DeskLMError, match="too long"):
        s.regenerate()
    s.conversation.messages[0].content = before[0]["content"]
    assert [m.to_dict() for m in s.conversation.messages] == before


def test_delete_a_message(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    s.send("One")
    s.send("Two")
    s.delete_message(s.conversation.messages[2].id)  # "Two" and its reply
    assert [m.content for m in s.conversation.messages][:1] == ["One"]
    assert len(s.conversation.messages) == 2 and len(stored(s)["messages"]) == 2
    s.delete_message(s.conversation.messages[1].id)
    assert [m.content for m in s.conversation.messages] == ["One"]
    r = s.regenerate()  # the question without a reply gets one
    assert s.conversation.messages[-1].content == r.reply.strip()
    with pytest.raises(DeskLMError, match="no message"):
        s.delete_message("nope")


def test_slash_commands_regen_alt_edit(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    s.send("Hi")
    res = s.run_command("/regen")
    assert res.turn is not None and res.data["versions"] == 2 and res.data["version"] == 2
    res = s.run_command("/alt")
    assert res.data["versions"] == 2 and "* 2:" in res.message
    res = s.run_command("/alt 1")
    assert res.data["version"] == 1
    with pytest.raises(DeskLMError, match="choose 1 to 2"):
        s.run_command("/alt 3")
    res = s.run_command("/edit Hello again")
    assert res.turn is not None and s.conversation.messages[0].content == "Hello again"
    assert branches.version_label(s.conversation.messages[0]) == "2/2"


def test_regenerate_on_a_resumed_conversation(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    s.send("Remember this")
    conv_id = s.conv_id
    s.new_conversation()
    s.open_conversation(conv_id)
    r = s.regenerate()
    assert branches.version_label(s.conversation.messages[-1]) == "2/2"
    assert r.stats.prompt_tokens_reused == 0  # the KV cache was cleared on open
    q = s.conversation.messages[0]
    s.edit_and_resend(q.id, "Remember that")
    assert stored(s)["messages"][0]["alternatives"][0]["content"] == "Remember this"
