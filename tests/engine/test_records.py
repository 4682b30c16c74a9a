"""One odd file never hides the rest, and "damaged" means damaged.

Conversation files and settings.json with every class of wrong shape: wrong-typed fields,
numbers out of any range, deep nesting, non-objects, and files that cannot be read at all.
What is valid loads, what is not is named, and only unusable content is moved aside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desklm.engine.chat.session import ChatSession
from desklm.engine.settings import Settings
from desklm.engine.store.files import AppConfig, ConversationStore, StoreError, to_markdown
from tests.conftest import run_cli

DEEP = 100_000  # far past Python's recursion limit


def rec(conv_id: str = "good", **over: object) -> dict:
    r = {
        "schema": 1,
        "id": conv_id,
        "title": "Hello",
        "created": 1.7e9,
        "updated": 1.7e9,
        "model": "m.gguf",
        "settings": {"system_prompt": "Be kind."},
        "context_start": 0,
        "messages": [
            {"id": "u", "role": "user", "content": "question", "created": 1.7e9},
            {
                "id": "a",
                "role": "assistant",
                "content": "answer",
                "created": 1.7e9,
                "stats": {"completion_tokens": 3, "finish_reason": "stop"},
            },
        ],
    }
    r.update(over)
    return r


def msg(**over: object) -> dict:
    return {"id": "x", "role": "user", "content": "hi", "created": 1.0, **over}


# a record that parses: every field of the wrong type or out of range; the file stays
ODD_RECORDS = {
    "updated a string": rec(updated="yesterday"),
    "updated huge": rec(updated=1e300),
    "created negative": rec(created=-5),
    "created a list": rec(created=[1, 2]),
    "title a number": rec(title=42),
    "title an object": rec(title={"a": 1}),
    "model a list": rec(model=["x"]),
    "settings a list": rec(settings=[1, 2]),
    "system prompt a number": rec(settings={"system_prompt": 7}),
    "context_start junk": rec(context_start="x"),
    "context_start past the end": rec(context_start=99),
    "id not the file name": rec(id="someone-else"),
    "message a plain string": rec(messages=["just text", msg()]),
    "message content a number": rec(messages=[msg(content=5), msg()]),
    "message without content": rec(messages=[{"role": "user"}, msg()]),
    "message with an odd role": rec(messages=[msg(role="system"), msg(role=None), msg()]),
    "message created a string": rec(messages=[msg(created="now")]),
    "stats a string": rec(messages=[msg(stats="fast")]),
    "stats nested deep": rec(messages=[msg(stats={"a": json.loads("[" * 500 + "]" * 500)})]),
    "trimmed junk": rec(messages=[msg(stats={"trimmed": [1, "x", {"role": ["u"]}]})]),
}
# raw text that cannot be a record at all: moved aside
UNUSABLE = {
    "not JSON": '{"schema": 1, "messages": [',
    "a list": "[1, 2, 3]",
    "nested too deep": '{"messages": ' + "[" * DEEP + "]" * DEEP + "}",
    "a 5000-digit number at the top": "1" * 5000,
    "messages not a list": '{"schema": 1, "messages": "hi"}',
    "not UTF-8": b'{"schema": 1, "messages": ["\xff\xfe"]}',
}
# numbers JSON can spell that Python's json reads as inf, nan or a giant int
RAW_ODD = {
    "updated NaN": '"updated": NaN',
    "updated Infinity": '"updated": Infinity',
    "updated 1e400": '"updated": 1e400',
    "updated 5000 digits": '"updated": ' + "9" * 5000,
}


def write_odd_files(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.json").write_text(json.dumps(rec()), "utf-8")
    for i, r in enumerate(ODD_RECORDS.values()):
        (root / f"odd{i}.json").write_text(
            json.dumps({**r, "id": r["id"].replace("good", f"odd{i}")}), "utf-8"
        )
    for i, text in enumerate(UNUSABLE.values()):
        data = text if isinstance(text, bytes) else text.encode()
        (root / f"bad{i}.json").write_bytes(data)
    for i, field in enumerate(RAW_ODD.values()):
        body = json.dumps({**rec(f"raw{i}"), "updated": 0})
        (root / f"raw{i}.json").write_text(body.replace('"updated": 0', field), "utf-8")


def test_every_odd_conversation_still_lists_opens_and_exports(tmp_path):
    st = ConversationStore(tmp_path)
    write_odd_files(tmp_path)
    items = st.list_all()
    ids = {it["id"] for it in items}
    assert ids == {"good"} | {f"odd{i}" for i in range(len(ODD_RECORDS))} | {
        f"raw{i}" for i in range(len(RAW_ODD))
    }
    for it in items:  # what the sidebar and `history list` use is always the right type
        assert isinstance(it["title"], str) and isinstance(it["updated"], float)
        assert isinstance(it["messages"], int)
    import datetime as dt

    for it in items:
        dt.datetime.fromtimestamp(it["updated"])
    # every unusable file is moved aside and named; the odd ones are named with what was skipped
    assert sorted(p.name for p in tmp_path.glob("bad*.json.corrupt")) == sorted(
        f"bad{i}.json.corrupt" for i in range(len(UNUSABLE))
    )
    assert sum("is damaged" in p for p in st.problems) == len(UNUSABLE)
    assert any("skipped 1 message(s): #1 (not an object but str)" in p for p in st.problems)
    assert any("'updated' is not a time ('yesterday')" in p for p in st.problems)
    for conv_id in ids:
        r = st.load(conv_id)
        to_markdown(r)
        assert all(
            m["role"] in ("user", "assistant") and isinstance(m["content"], str)
            for m in r["messages"]
        )
        s = ChatSession(Path("m.gguf"), store=st)
        s.open_conversation(conv_id)  # the session can take it as it is
        assert s.conversation.context_start <= len(s.conversation.messages)


def test_history_list_shows_the_rest_and_names_the_odd_ones(data_dir):
    write_odd_files(data_dir / "data" / "conversations")
    r = run_cli("history", "list")
    assert r.returncode == 0, r.stderr[-800:]
    assert len(r.stdout.splitlines()) == 1 + len(ODD_RECORDS) + len(RAW_ODD)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert r.stderr.count("is damaged") == len(UNUSABLE)
    j = run_cli("history", "list", "--json")
    assert j.returncode == 0 and len(json.loads(j.stdout)) == 1 + len(ODD_RECORDS) + len(RAW_ODD)


def test_a_file_that_cannot_be_read_is_left_alone(tmp_path):
    st = ConversationStore(tmp_path)
    st.save(rec())
    (tmp_path / "folder.json").mkdir()  # an OSError (EISDIR), not damage
    assert [it["id"] for it in st.list_all()] == ["good"]
    assert (tmp_path / "folder.json").is_dir() and not (tmp_path / "folder.json.corrupt").exists()
    assert any(
        "could not read conversation file folder.json" in p and "left untouched" in p
        for p in st.problems
    )
    with pytest.raises(StoreError, match="could not read"):
        st.load("folder")


def test_an_unreadable_file_is_not_renamed():
    # root reads every file: a child process drops to 'nobody' first (imports before that)
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp())
    request_cleanup = [tmp_path]
    d = tmp_path / "convs"
    d.mkdir()
    (d / "good.json").write_text(json.dumps(rec()))
    (d / "secret.json").write_text(json.dumps(rec("secret")))
    (d / "secret.json").chmod(0o000)
    for x in (tmp_path, d):
        x.chmod(0o777)
    (d / "good.json").chmod(0o644)
    code = (
        "import os, json, pathlib\n"
        "from desklm.engine.store.files import ConversationStore, AppConfig\n"
        "import desklm.engine.store.records, desklm.engine.settings, desklm.errors\n"
        "if os.geteuid() == 0:\n    os.setgid(65534); os.setuid(65534)\n"
        f"st = ConversationStore({str(d)!r})\n"
        "items = st.list_all()\n"
        f"cfg = AppConfig(pathlib.Path({str(d / 'secret.json')!r}))\n"
        "print(json.dumps([[i['id'] for i in items], st.problems, cfg.load(), cfg.problems]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
        )
        assert r.stdout, r.stderr[-800:]
        ids, problems, loaded, cfg_problems = json.loads(r.stdout)
        assert ids == ["good"] and "Permission denied" in problems[0], r.stderr[-500:]
        assert loaded == {} and "Permission denied" in cfg_problems[0]
        assert (d / "secret.json").exists() and not (d / "secret.json.corrupt").exists()
    finally:
        shutil.rmtree(request_cleanup[0], ignore_errors=True)


def test_the_data_dir_being_a_file_is_a_reason(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    st = ConversationStore(blocker / "conversations")
    assert st.list_all() == [] and "Not a directory" in st.problems[0]
    cfg = AppConfig(blocker / "settings.json")
    assert cfg.load() == {} and "Not a directory" in cfg.problems[0]
    assert blocker.read_text() == "not a folder"


# --- settings.json --------------------------------------------------------------------------
GOOD_CONFIG = {
    "last_model": "/models/x.gguf",
    "recent_models": ["/models/x.gguf"],
    "settings": {"n_ctx": 2048, "temperature": 0.5},
    "geometry": "AdnQywADAAA=",
    "window_state": "AAAA/wAAAAD9",
    "tuned": {"m::k": {"n_threads": 1, "n_threads_batch": 1, "n_gpu_layers": 0}},
    "servers": {"someone else's": ["key"]},
}
WRONG_SHAPES = {
    "settings a list": ({"settings": [1, 2]}, "settings", {}),
    "settings wrong types": (
        {
            "settings": {
                "n_ctx": "big",
                "temperature": [1],
                "use_mmap": "maybe",
                "system_prompt": 5,
                "top_k": 10,
            }
        },
        "settings",
        {"top_k": 10},
    ),
    "settings nested": ({"settings": {"n_ctx": {"a": {"b": {"c": [1]}}}}}, "settings", {}),
    "settings out of range": (
        {"settings": {"n_threads": 10_000, "temperature": 99.0}},
        "settings",
        {"n_threads": os.cpu_count(), "temperature": 2.0},
    ),
    "settings unknown": ({"settings": {"colour": "red", "seed": 3}}, "settings", {"seed": 3}),
    "geometry junk text": ({"geometry": "not base64 at all!!"}, "geometry", None),
    "geometry non-ASCII": ({"geometry": "ÄÖÜ€"}, "geometry", None),
    "geometry a number": ({"window_state": 12345}, "window_state", None),
    "geometry huge": ({"geometry": "A" * (2 << 20)}, "geometry", None),
    "last_model a number": ({"last_model": 7}, "last_model", ""),
    "last_model with NUL": ({"last_model": "/a\x00b.gguf"}, "last_model", ""),
    "recent_models an object": ({"recent_models": {"a": 1}}, "recent_models", []),
    "recent_models mixed": (
        {"recent_models": ["/ok.gguf", 3, None]},
        "recent_models",
        ["/ok.gguf"],
    ),
    "tuned a list": ({"tuned": [1]}, "tuned", {}),
    "tuned bad entry": ({"tuned": {"k": {"n_threads": "many"}}}, "tuned", {}),
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES))
def test_settings_with_a_wrong_shape_load_what_is_valid(tmp_path, case):
    bad, key, expect = WRONG_SHAPES[case]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({**GOOD_CONFIG, **bad}), "utf-8")
    cfg = AppConfig(path)
    data = cfg.load()
    assert cfg.problems and cfg.problem and "\n" not in cfg.problem
    if expect is None:
        assert key not in data
    else:
        assert data[key] == expect
    for other in set(GOOD_CONFIG) - set(bad):  # the rest is kept, even keys we do not know
        assert data[other] == GOOD_CONFIG[other]
    assert path.exists() and not path.with_suffix(".json.corrupt").exists()
    Settings().load_dict(data.get("settings", {}))  # what the window does with it: no error


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '"text"',
        "42",
        "null",
        "[" * DEEP + "]" * DEEP,
        '{"a": ' * DEEP + "1" + "}" * DEEP,
        "{not json",
        "9" * 5000,
    ],
)
def test_settings_that_are_not_an_object_are_moved_aside(tmp_path, text):
    path = tmp_path / "settings.json"
    path.write_text(text, "utf-8")
    cfg = AppConfig(path)
    assert cfg.load() == {}
    assert "moved aside" in cfg.problem and "\n" not in cfg.problem
    assert not path.exists() and path.with_suffix(".json.corrupt").read_text("utf-8") == text


def test_settings_that_cannot_be_read_are_left_alone_and_not_overwritten(tmp_path):
    path = tmp_path / "settings.json"
    path.mkdir()  # EISDIR: an OSError, not damage
    cfg = AppConfig(path)
    assert cfg.load() == {} and "could not read" in cfg.problem
    with pytest.raises(OSError):
        cfg.save({"settings": {}})
    assert path.is_dir() and not path.with_suffix(".json.corrupt").exists()


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2]",
        json.dumps({"tuned": [1], "settings": "x", "recent_models": 5}),
        json.dumps({"tuned": {"KEY": {"n_threads": "x"}}, "geometry": "ÄÖ"}),
        json.dumps({"tuned": {"KEY": {"n_threads": 999, "n_threads_batch": 1, "n_gpu_layers": 0}}}),
        json.dumps({"tuned": {"KEY": [1, 2]}}),
        "[" * DEEP + "]" * DEEP,
    ],
)
def test_desklm_chat_starts_whatever_settings_json_holds(data_dir, content, model_path):
    from desklm.engine.tune import machine_key, model_key

    (data_dir / "config").mkdir(parents=True)
    key = json.dumps(f"{machine_key()}::{model_key(model_path)}")[1:-1]
    (data_dir / "config" / "settings.json").write_text(content.replace("KEY", key), "utf-8")
    r = run_cli("chat", "--json", "--max-tokens", "2", "--ctx", "512", stdin="hi\n")
    assert r.returncode == 0, r.stderr[-800:]
    assert json.loads(r.stdout.splitlines()[-1])["completion_tokens"] >= 0
