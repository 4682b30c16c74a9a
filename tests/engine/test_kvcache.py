"""Per-conversation KV snapshots: the cache (pure, real files) and the round trip on the model."""

from __future__ import annotations

import json
import os
import shutil

from desklm.engine.backends.local import kvcache
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.backends.local.kvcache import MB, Snapshot, SnapshotCache
from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import ConversationStore
from tests.conftest import run_cli, small_settings


def snap(conv_id: str, size: int, fp: str = "fp", n: int = 10) -> Snapshot:
    return Snapshot(conv_id, fp, list(range(n)), bytes([len(conv_id) % 251]) * size)


# --- the cache alone ----------------------------------------------------------------------------
def test_ram_overflow_spills_least_recently_used_to_disk_and_reads_back(tmp_path):
    c = SnapshotCache(tmp_path, ram_bytes=250_000, disk_bytes=10 * MB)
    for name in ("a", "bb", "ccc"):
        c.put(snap(name, 100_000))
    u = c.usage()
    assert u["ram_snapshots"] == 2 and u["disk_snapshots"] == 1  # "a" went to disk
    assert (tmp_path / "a.kvs").exists()
    assert u["ram_bytes"] == 2 * (100_000 + 40) and u["disk_bytes"] > 100_000
    back = c.get("a", "fp")
    assert back is not None and back.data == snap("a", 100_000).data
    assert back.tokens == list(range(10))
    # a fresh cache on the same folder (a restarted app) finds it too
    assert SnapshotCache(tmp_path).get("a", "fp") is not None


def test_disk_is_bounded_least_recently_used_first(tmp_path):
    c = SnapshotCache(tmp_path, ram_bytes=0, disk_bytes=450_000)  # room for four
    for i, name in enumerate(("one", "two", "three", "four")):
        c.put(snap(name, 100_000))
        os.utime(tmp_path / f"{name}.kvs", (1000 + i, 1000 + i))
    c.get("one", "fp")  # used: now the most recent
    c.put(snap("five", 100_000))
    names = sorted(p.stem for p in tmp_path.glob("*.kvs"))
    assert names == ["five", "four", "one", "three"]  # "two" was the least recently used
    assert c.usage()["disk_bytes"] <= 450_000
    c.set_budgets(0, 150_000)
    assert len(list(tmp_path.glob("*.kvs"))) == 1


def test_a_snapshot_under_another_fingerprint_is_dropped(tmp_path):
    c = SnapshotCache(tmp_path, ram_bytes=MB, disk_bytes=MB)
    c.put(snap("a", 1000, fp="old"))
    assert c.get("a", "new") is None
    assert c.get("a", "old") is None  # gone for good
    c2 = SnapshotCache(tmp_path, ram_bytes=0, disk_bytes=MB)
    c2.put(snap("b", 1000, fp="old"))
    assert c2.get("b", "new") is None and not (tmp_path / "b.kvs").exists()


def test_a_damaged_file_is_deleted_and_ignored(tmp_path):
    c = SnapshotCache(tmp_path, ram_bytes=0, disk_bytes=MB)
    c.put(snap("a", 5000))
    p = tmp_path / "a.kvs"
    blob = bytearray(p.read_bytes())
    blob[-10] ^= 0xFF
    p.write_bytes(bytes(blob))
    assert c.get("a", "fp") is None and not p.exists()
    p.write_bytes(b"garbage")
    assert c.get("a", "fp") is None and not p.exists()


def test_flush_writes_ram_snapshots_and_zero_budgets_turn_tiers_off(tmp_path):
    c = SnapshotCache(tmp_path, ram_bytes=MB, disk_bytes=MB)
    c.put(snap("a", 1000))
    assert not list(tmp_path.glob("*.kvs"))
    c.flush()
    assert (tmp_path / "a.kvs").exists()
    off = SnapshotCache(tmp_path / "off", ram_bytes=0, disk_bytes=0)
    off.put(snap("z", 1000))
    assert off.get("z", "fp") is None and off.usage()["disk_snapshots"] == 0


def test_matches_needs_a_proper_prefix():
    s = Snapshot("a", "fp", [1, 2, 3], b"x")
    assert s.matches([1, 2, 3, 4])
    assert not s.matches([1, 2, 3])  # nothing new to evaluate: llama.cpp must replay anyway
    assert not s.matches([1, 2, 4, 5])
    assert not Snapshot("a", "fp", [], b"x").matches([1])


# --- on the real model --------------------------------------------------------------------------
def greedy(**over):
    return small_settings(temperature=0.0, max_tokens=12, **over)


def new_session(engine, model_path, tmp_path, **over) -> ChatSession:
    s = ChatSession(
        model_path,
        greedy(**over),
        engine=engine,
        store=ConversationStore(tmp_path / "convs"),
        kv=SnapshotCache(tmp_path / "kv", ram_bytes=256 * MB, disk_bytes=256 * MB),
    )
    s.reset()
    return s


A = ["My name is Ada and I keep bees.", "What do bees make?"]
A_NEXT = "And what is my name?"


def test_leaving_and_coming_back_restores_the_kv_and_replies_the_same(engine, model_path, tmp_path):
    # without switching
    plain = new_session(engine, model_path, tmp_path / "plain")
    for q in A:
        plain.send(q)
    want = plain.send(A_NEXT)
    # with a switch to another chat in between
    s = new_session(engine, model_path, tmp_path)
    for q in A:
        last = s.send(q)
    a_id = s.conv_id
    s.new_conversation()
    assert s.kv_usage()["ram_snapshots"] == 1 and s.kv_usage()["ram_bytes"] > 100_000
    s.send("Tell me about the moon.")
    s.open_conversation(a_id)
    got = s.send(A_NEXT)
    st = got.stats
    assert st.restored_tokens > 0
    assert st.prompt_tokens_reused >= last.stats.prompt_tokens  # A's history, not re-read
    assert st.restored_tokens == st.prompt_tokens_reused
    assert st.prompt_tokens_reused == want.stats.prompt_tokens_reused
    assert got.reply == want.reply
    assert st.prompt_tokens_evaluated < 60
    # and the chat it left (B) now has its snapshot kept
    assert s.kv_usage()["ram_snapshots"] == 2
    text = s.run_command("/stats").message
    assert f"{st.restored_tokens} of them restored from cache" in text
    assert "chat caches: 2 in RAM" in text
    # a deleted chat's snapshot goes with it
    s.forget_kv(a_id)
    assert s.kv.get(a_id, kvcache.fingerprint(engine)) is None


def test_edited_history_is_not_restored_but_evaluated_in_full(engine, model_path, tmp_path):
    s = new_session(engine, model_path, tmp_path)
    s.send(A[0])
    a_id = s.conv_id
    s.new_conversation()
    rec = s.store.load(a_id)
    rec["messages"][0]["content"] = "My name is Grace and I keep goats."
    s.store.save(rec)
    s.open_conversation(a_id)
    st = s.send(A_NEXT).stats
    assert st.restored_tokens == 0 and st.prompt_tokens_reused == 0


def test_changed_kv_settings_or_model_file_invalidate_the_snapshot(model_path, tmp_path):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(model_path, copy)
    eng = ChatEngine()
    eng.load(copy, greedy())
    try:
        s = new_session(eng, copy, tmp_path)
        s.send(A[0])
        a_id = s.conv_id
        s.new_conversation()
        # 1. another context length: another KV layout
        s.apply_settings({"n_ctx": 1024})
        s.open_conversation(a_id)
        st = s.send(A_NEXT).stats
        assert st.restored_tokens == 0 and st.prompt_tokens_reused == 0
        # leave again (a snapshot under n_ctx 1024 now), then the model file changes
        s.new_conversation()
        assert s.kv.get(a_id, kvcache.fingerprint(eng)) is not None
        os.utime(copy, (1_000_000_000, 1_000_000_000))
        s.load()  # the same path, reloaded: another file as far as the snapshot knows
        s.open_conversation(a_id)
        st = s.send("One more?").stats
        assert st.restored_tokens == 0 and st.prompt_tokens_reused == 0
    finally:
        eng.unload()


def test_a_fresh_engine_resumes_from_the_disk_snapshot(model_path, tmp_path):
    eng = ChatEngine()
    eng.load(model_path, greedy())
    try:
        s = new_session(eng, model_path, tmp_path)
        for q in A:
            last = s.send(q)
        a_id = s.conv_id
        assert s.close()
        assert len(list((tmp_path / "kv").glob("*.kvs"))) == 1
    finally:
        eng.unload()
    eng2 = ChatEngine()  # as after a restart: a new engine, a new cache on the same folder
    eng2.load(model_path, greedy())
    try:
        s2 = new_session(eng2, model_path, tmp_path)
        s2.open_conversation(a_id)
        st = s2.send(A_NEXT).stats
        assert st.restored_tokens >= last.stats.prompt_tokens
    finally:
        eng2.unload()


def test_desklm_chat_resume_continues_a_saved_conversation_from_its_snapshot(model_path):
    first = run_cli(
        "chat",
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--ctx",
        "1024",
        stdin="My name is Ada and I keep bees.\n",
    )
    assert first.returncode == 0, first.stderr
    conv_id = json.loads(first.stdout.splitlines()[-1])["conversation_id"]
    second = run_cli(
        "chat",
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--ctx",
        "1024",
        "--resume",
        conv_id,
        stdin="And what is my name?\n",
    )
    assert second.returncode == 0, second.stderr
    assert 'resuming "My name is Ada and I keep bees." (2 messages)' in second.stderr
    assert "you: My name is Ada" in second.stderr
    turn = json.loads(second.stdout.splitlines()[-1])
    assert turn["conversation_id"] == conv_id
    assert turn["restored_tokens"] > 0 and turn["prompt_tokens_reused"] >= turn["restored_tokens"]
    rec = ConversationStore().load(conv_id)
    assert len(rec["messages"]) == 4
    bad = run_cli("chat", "--resume", "nope", stdin="")
    assert bad.returncode == 2 and "no conversation 'nope'" in bad.stderr
