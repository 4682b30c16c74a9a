"""Conversations on disk: versioned JSON, atomic writes, damaged and newer files."""

import json

import pytest

from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import SCHEMA_VERSION, ConversationStore, StoreError, to_markdown
from desklm.errors import DeskLMError
from tests.conftest import small_settings


def rec(conv_id="abc123", n=2, title="Hello"):
    msgs = []
    for i in range(n):
        msgs.append({"id": f"u{i}", "role": "user", "content": f"question {i}", "created": 1.0})
        msgs.append(
            {
                "id": f"a{i}",
                "role": "assistant",
                "content": f"answer {i}",
                "created": 2.0,
                "stats": {
                    "completion_tokens": 3,
                    "gen_tokens_per_s": 50.0,
                    "finish_reason": "stop",
                },
            }
        )
    return {
        "id": conv_id,
        "title": title,
        "created": 1.0,
        "model": "m.gguf",
        "settings": {"system_prompt": "Be kind."},
        "messages": msgs,
    }


def test_save_load_list_rename_delete(tmp_path):
    st = ConversationStore(tmp_path)
    p = st.save(rec())
    data = json.loads(p.read_text("utf-8"))
    assert data["schema"] == SCHEMA_VERSION and data["updated"] > 0
    assert st.load("abc123")["messages"][1]["content"] == "answer 0"
    st.save(rec("zzz", 1, "Other"))
    assert [c["id"] for c in st.list_all()] == ["zzz", "abc123"]  # newest first
    st.rename("abc123", "  Renamed   chat ")
    assert st.load("abc123")["title"] == "Renamed chat"
    st.delete("abc123")
    with pytest.raises(StoreError, match="no conversation"):
        st.load("abc123")
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_a_damaged_file_is_moved_aside_and_the_rest_still_load(tmp_path):
    st = ConversationStore(tmp_path)
    st.save(rec("good"))
    (tmp_path / "bad.json").write_text('{"schema": 1, "messages": [', "utf-8")
    (tmp_path / "odd.json").write_text("[1, 2, 3]", "utf-8")
    items = st.list_all()
    assert [c["id"] for c in items] == ["good"]
    assert len(st.problems) == 2 and all("moved aside" in p for p in st.problems)
    assert (tmp_path / "bad.json.corrupt").exists() and not (tmp_path / "bad.json").exists()


def test_a_newer_schema_is_refused_and_never_overwritten(tmp_path):
    st = ConversationStore(tmp_path)
    future = {**rec("new"), "schema": SCHEMA_VERSION + 1}
    (tmp_path / "new.json").write_text(json.dumps(future), "utf-8")
    before = (tmp_path / "new.json").read_bytes()
    with pytest.raises(StoreError, match="newer DeskLM"):
        st.load("new")
    with pytest.raises(StoreError, match="not overwriting"):
        st.save(rec("new"))
    assert (tmp_path / "new.json").read_bytes() == before
    assert st.list_all() == [] and "newer DeskLM" in st.problems[0]


def test_ids_cannot_escape_the_folder(tmp_path):
    with pytest.raises(StoreError):
        ConversationStore(tmp_path).path("../etc/passwd")


def test_markdown_export():
    md = to_markdown(rec())
    assert md.startswith("# Hello\n")
    assert "> **System:** Be kind." in md
    assert "## You\n\nquestion 1" in md and "## Model\n\nanswer 1" in md
    assert "*3 tokens · 50.0 tok/s · stop*" in md


def test_a_session_saves_after_every_turn_and_switches_cleanly(engine, model_path, tmp_path):
    st = ConversationStore(tmp_path)
    s = ChatSession(model_path, small_settings(max_tokens=8), engine=engine, store=st)
    s.reset()
    s.send("First chat, first message")
    first_id = s.conv_id
    assert len(st.load(first_id)["messages"]) == 2
    s.send("First chat, second message")
    assert len(st.load(first_id)["messages"]) == 4
    s.new_conversation()
    assert s.conversation.messages == [] and engine.kv_cache_pos_max() == -1
    s.send("Second chat")
    assert {c["id"] for c in st.list_all()} == {first_id, s.conv_id}
    rec1 = s.open_conversation(first_id)
    assert engine.kv_cache_pos_max() == -1  # switching clears the KV cache
    assert [m.content for m in s.conversation.messages][::2] == [
        "First chat, first message",
        "First chat, second message",
    ]
    assert rec1["title"] == "First chat, first message"
    r = s.send("Back again")
    # not from another chat's KV: only what its own snapshot restored (engine.kvcache)
    assert r.stats.prompt_tokens_reused == r.stats.restored_tokens > 0
    assert len(st.load(first_id)["messages"]) == 6
    out = s.run_command(f"/export {tmp_path / 'chat.md'}")
    assert "## You\n\nBack again" in (tmp_path / "chat.md").read_text("utf-8")
    assert out.data["path"].endswith("chat.md")
    s.export(tmp_path / "chat.json")
    assert json.loads((tmp_path / "chat.json").read_text("utf-8"))["id"] == first_id
    with pytest.raises(DeskLMError, match="no conversation"):
        s.open_conversation("doesnotexist")


def test_a_save_failure_is_reported_and_the_turn_is_kept(engine, model_path, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    st = ConversationStore(blocker / "conversations")  # a folder inside a file: cannot exist
    s = ChatSession(model_path, small_settings(max_tokens=4), engine=engine, store=st)
    s.reset()
    s.send("Hello")
    assert s.save_error and "could not save" in s.save_error
    assert len(s.conversation.messages) == 2
