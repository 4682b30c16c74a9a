"""Versions and branches of a conversation: pure list-and-object logic, no model."""

import json

import pytest

from desklm.engine.chat import branches
from desklm.engine.chat.conversation import Message
from desklm.errors import DeskLMError


def chat(*pairs):
    out = []
    for q, a in pairs:
        out.append(Message("user", q, id=f"u-{q}"))
        out.append(Message("assistant", a, id=f"a-{a}"))
    return out


def texts(path):
    return [m.content for m in path]


def roundtrip(path):
    return [Message.from_dict(json.loads(json.dumps(m.to_dict()))) for m in path]


def test_a_new_version_of_the_last_reply_keeps_the_old_one():
    path = chat(("q1", "a1"), ("q2", "a2"))
    path = branches.add_version(path, 3, Message("assistant", "a2-second", id="a2b"))
    assert texts(path) == ["q1", "a1", "q2", "a2-second"]
    assert branches.version_label(path[3]) == "2/2"
    path = branches.add_version(path, 3, Message("assistant", "a2-third", id="a2c"))
    assert branches.version_label(path[3]) == "3/3"
    path = branches.select(path, 3, 0)
    assert texts(path)[3] == "a2" and branches.version_label(path[3]) == "1/3"
    assert [v.content for v in branches.versions(path[3])] == ["a2", "a2-second", "a2-third"]


def test_editing_a_user_message_branches_and_the_old_branch_comes_back_whole():
    path = chat(("q1", "a1"), ("q2", "a2"), ("q3", "a3"))
    path = branches.add_version(path, 2, Message("user", "q2-edited", id="q2e"))
    path.append(Message("assistant", "a2-new", id="a2n"))
    assert texts(path) == ["q1", "a1", "q2-edited", "a2-new"]
    assert branches.version_label(path[2]) == "2/2"
    old = branches.select(path, 2, 0)
    assert texts(old) == ["q1", "a1", "q2", "a2", "q3", "a3"]
    back = branches.select(old, 2, 1)
    assert texts(back) == ["q1", "a1", "q2-edited", "a2-new"]


def test_versions_inside_an_inactive_branch_survive_switching_and_saving():
    path = chat(("q1", "a1"), ("q2", "a2"))
    path = branches.add_version(path, 3, Message("assistant", "a2-bis", id="a2bis"))
    path = branches.add_version(path, 2, Message("user", "q2-new", id="q2n"))
    path.append(Message("assistant", "x", id="x"))
    path = roundtrip(path)  # through the stored form
    old = branches.select(path, 2, 0)
    assert texts(old) == ["q1", "a1", "q2", "a2-bis"]
    assert branches.version_label(old[3]) == "2/2"
    assert texts(branches.select(old, 3, 0)) == ["q1", "a1", "q2", "a2"]


def test_reveal_finds_a_message_in_any_branch():
    path = chat(("q1", "a1"), ("q2", "a2"))
    path = branches.add_version(path, 3, Message("assistant", "a2-bis", id="deep"))
    path = branches.add_version(path, 0, Message("user", "q1-new", id="top"))
    assert texts(path) == ["q1-new"]
    shown, i = branches.reveal(path, "a-a2")
    assert i == 3 and texts(shown) == ["q1", "a1", "q2", "a2"]
    shown, i = branches.reveal(shown, "top")
    assert i == 0 and texts(shown) == ["q1-new"]
    with pytest.raises(DeskLMError, match="no message"):
        branches.reveal(shown, "nope")
    ids = {m.id: active for m, active in branches.walk(shown)}
    assert ids["top"] is True and ids["deep"] is False and len(ids) == 6


def test_delete_removes_the_version_shown_or_the_whole_turn():
    path = chat(("q1", "a1"), ("q2", "a2"))
    path = branches.add_version(path, 3, Message("assistant", "a2-bis", id="a2b"))
    path = branches.delete(path, 3)  # the version shown goes; the other comes back
    assert texts(path) == ["q1", "a1", "q2", "a2"] and not path[3].alternatives
    path = branches.delete(path, 0)  # a user message takes its reply with it
    assert texts(path) == ["q2", "a2"]
    path = branches.delete(path, 1)  # a reply goes alone
    assert texts(path) == ["q2"]


def test_select_refuses_a_version_that_does_not_exist():
    path = chat(("q1", "a1"))
    with pytest.raises(DeskLMError, match="1 version"):
        branches.select(path, 1, 1)


def test_hostile_version_fields_are_dropped_not_fatal():
    d = {
        "id": "m",
        "role": "assistant",
        "content": "hi",
        "alternatives": [
            {"role": "user", "content": "wrong role"},
            "junk",
            {"role": "assistant", "content": 5},
            {"role": "assistant", "content": "ok", "continuation": "x"},
        ],
        "alt_index": 99,
        "attachments": [{"name": "a.txt", "chars": "many"}, 3],
    }
    m = Message.from_dict(d)
    assert [a.content for a in m.alternatives] == ["ok"] and m.alt_index == 1
    assert m.attachments == [{"name": "a.txt"}]
    # nesting deeper than MAX_DEPTH is cut, not a RecursionError
    deep: dict = {"role": "assistant", "content": "leaf"}
    for _ in range(200):
        deep = {
            "role": "assistant",
            "content": "n",
            "alternatives": [{"role": "assistant", "content": "alt", "continuation": [deep]}],
        }
    Message.from_dict(deep)


def test_migrate_stamps_the_current_version_and_keeps_everything():
    v1 = {"schema": 1, "id": "c", "messages": [{"role": "user", "content": "hi"}]}
    v2 = branches.migrate(v1)
    assert v2["schema"] == branches.SCHEMA_VERSION == 3
    assert v2["messages"] == v1["messages"] and v1["schema"] == 1


def test_clean_tree_fields_for_a_record_checker():
    def clean_one(m):  # the shape of records.clean_message: (message or None, why)
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return None, "bad"
        out = {"id": m.get("id", "x"), "role": m.get("role"), "content": m["content"]}
        branches.clean_tree_fields(m, out, clean_one)
        return out, ""

    raw = {
        "id": "a",
        "role": "assistant",
        "content": "new",
        "alt_index": 7,
        "attachments": [{"name": "f.txt", "chars": 3}],
        "alternatives": [
            {
                "id": "o",
                "role": "assistant",
                "content": "old",
                "junk": 1,
                "continuation": [{"role": "user", "content": "q"}, 5],
            },
            {"role": "user", "content": "wrong role"},
            "junk",
        ],
    }
    out, _ = clean_one(raw)
    assert out["alt_index"] == 1 and out["attachments"] == [{"name": "f.txt", "chars": 3}]
    assert out["alternatives"] == [
        {
            "id": "o",
            "role": "assistant",
            "content": "old",
            "continuation": [{"id": "x", "role": "user", "content": "q"}],
        }
    ]
    m = Message.from_dict(out)
    assert branches.version_label(m) == "2/2"
