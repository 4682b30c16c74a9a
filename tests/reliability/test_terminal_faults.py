"""`desklm chat` and friends as real subprocesses, fed what they do not expect: bytes that are
not UTF-8, NUL characters, a reader that leaves, SIGTERM. Nothing ends a chat or loses a turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desklm.engine.store.files import ConversationStore
from tests.conftest import small_settings

CHAT = [sys.executable, "-m", "desklm", "chat"]
SMALL = ["--ctx", "1024", "--max-tokens", "4", "--seed", "1"]


def run_bytes(args: list[str], stdin: bytes, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)


def saved(data_dir: Path) -> list[dict]:
    st = ConversationStore(data_dir / "data" / "conversations")
    return [st.load(it["id"]) for it in st.list_all()]


# every class of bytes that is not UTF-8
BAD_BYTES = [
    b"\x80 a lone continuation byte",
    b"cut short \xe2\x82",
    b"overlong \xc0\xaf",
    b"a surrogate \xed\xa0\x80",
    b"latin-1 caf\xe9",
    b"\xff\xfe\x00w\x00i",
]


def test_input_that_is_not_utf8_is_a_turn_with_replacement_characters(data_dir, model_path):
    stdin = b"\n".join(BAD_BYTES) + b"\nplain text\n"
    r = run_bytes([*CHAT, "--json", *SMALL], stdin)
    err = r.stderr.decode()
    assert r.returncode == 0, err[-800:]
    turns = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(turns) == len(BAD_BYTES) + 1 and all("reply" in t for t in turns)
    assert err.count("is not valid UTF-8") == len(BAD_BYTES) and "Traceback" not in err
    (conv,) = saved(data_dir)
    users = [m["content"] for m in conv["messages"] if m["role"] == "user"]
    assert len(users) == len(BAD_BYTES) + 1 and users[-1] == "plain text"
    assert all("\ufffd" in u for u in users[:-1])
    assert users[4] == "latin-1 caf\ufffd"


def test_nul_only_lines_are_skipped_with_a_note_and_never_saved(data_dir, model_path):
    r = run_bytes([*CHAT, "--json", *SMALL], b"\x00\n\x00 \x00\t\x00\nhel\x00lo\n")
    assert r.returncode == 0, r.stderr[-800:]
    turns = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(turns) == 1
    assert r.stderr.decode().count("held only NUL characters") == 2
    (conv,) = saved(data_dir)
    assert conv["messages"][0]["content"] == "hello"
    assert all(m["content"].strip() for m in conv["messages"] if m["role"] == "user")


def test_nul_alone_is_an_empty_message_in_the_session(engine, model_path):
    from desklm.engine.chat.session import ChatSession
    from desklm.errors import DeskLMError

    s = ChatSession(model_path, small_settings(max_tokens=2), engine=engine)
    for text in ["\x00", "\x00\x00 \x00", " \x00\n"]:
        with pytest.raises(DeskLMError, match="empty message"):
            s.send(text)
    assert s.conversation.messages == []


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/tmp/a\x00b.md", "NUL"),
        ("{tmp}", "is a folder"),
        ("{tmp}/no/such/folder/x.md", "does not exist"),
        ("/dev/full", "No space left"),
    ],
)
def test_export_to_a_bad_path_is_a_reason_and_the_chat_goes_on(
    data_dir, model_path, tmp_path, path, needle
):
    line = f"hi\n/export {path.format(tmp=tmp_path)}\nagain\n".encode()
    r = run_bytes([*CHAT, "--json", *SMALL], line)
    assert r.returncode == 0, r.stderr[-800:]
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [("reply" in o, "error" in o) for o in objs] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert needle in objs[1]["error"] and "internal error" not in objs[1]["error"]


def test_history_list_into_head_exits_quietly(data_dir):
    st = ConversationStore(data_dir / "data" / "conversations")
    for i in range(1500):  # ~100 KB of listing: more than a pipe holds
        st.save(
            {
                "id": f"c{i:05d}",
                "title": f"chat number {i} " + "x" * 40,
                "created": 1.0,
                "messages": [{"role": "user", "content": "q"}],
            }
        )
    cmd = f'{sys.executable} -m desklm history list | head -1; echo "rc=${{PIPESTATUS[0]}}"'
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "chat number" in lines[0]
    assert r.stderr == "", r.stderr[-800:]  # no "internal error", no "Exception ignored"
    assert lines[1] in ("rc=0", "rc=141")


def test_a_reader_that_leaves_stops_the_reply_and_keeps_the_turn(data_dir, model_path):
    p = subprocess.Popen(
        [*CHAT, "--ctx", "1024", "--max-tokens", "300", "--seed", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin and p.stdout and p.stderr
    p.stdin.write(b"Write a long story about a cat.\nAnd another one.\n")
    p.stdin.close()
    p.stdout.read(1)  # the reply has begun
    p.stdout.close()
    rc = p.wait(60)
    err = p.stderr.read().decode()
    assert rc in (0, 141) and "Traceback" not in err and "error" not in err, err[-800:]
    (conv,) = saved(data_dir)
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]


def start_chat(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*CHAT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def sigterm(p: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    t0 = time.monotonic()
    os.kill(p.pid, sig)
    try:
        rc = p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.stderr
    return rc, time.monotonic() - t0, p.stderr.read().decode()


def test_sigterm_during_a_reply_keeps_it_marked_cancelled(data_dir, model_path):
    # the Gemma turn format on this base model runs on (the dialogue format would end the reply
    # before the signal): a reply that is surely still running when SIGTERM arrives
    p = start_chat(
        [
            "--ctx",
            "2048",
            "--max-tokens",
            "1500",
            "--seed",
            "1",
            "--temperature",
            "0.8",
            "--chat-format",
            "gemma",
        ]
    )
    assert p.stdin and p.stdout
    p.stdin.write(b"Count from one to five hundred, one number a line.\n")
    p.stdin.flush()  # stdin stays open: the chat would wait for more after the reply
    got = b""
    while b": " not in got.split(b"\n", 1)[-1] or len(got.split(b"\n", 1)[-1]) < 40:
        got += os.read(p.stdout.fileno(), 64)  # past the echoed input, into the reply
    rc, took, err = sigterm(p)
    assert rc == 0 and took < 10.0, (rc, took, err[-800:])  # generous: a hang fails
    assert "Traceback" not in err
    (conv,) = saved(data_dir)
    user, reply = conv["messages"]
    assert user["content"].startswith("Count from one")
    assert reply["stats"]["finish_reason"] == "cancelled"
    assert reply["stats"]["completion_tokens"] < 1500 and reply["content"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_at_the_prompt_saves_and_exits_0(data_dir, model_path, sig):
    p = start_chat(["--json", *SMALL])
    assert p.stdin and p.stdout
    p.stdin.write(b"hello\n")
    p.stdin.flush()
    assert "reply" in json.loads(p.stdout.readline())  # the turn is done; now it waits
    rc, took, err = sigterm(p, sig)
    assert rc == 0 and took < 10.0, (rc, took, err[-800:])  # generous: a hang fails
    (conv,) = saved(data_dir)
    assert len(conv["messages"]) == 2
