"""The engine on the real embedded model: streaming, stop, reset, prefix reuse, trimming."""

import itertools
import threading

import pytest

from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.chat.session import ChatSession
from desklm.errors import DeskLMError
from tests.conftest import small_settings

LONG_TEXT = " ".join(f"Sentence number {i} talks about apples and pears." for i in range(120))


@pytest.fixture
def session(engine, model_path):
    s = ChatSession(model_path, small_settings(), engine=engine)
    s.reset()
    return s


def test_load_reports_the_model_and_picks_the_dialogue_format(engine, model_path):
    li = engine.load_info
    assert li.architecture == "gemma3" and li.n_layers == 18 and li.n_ctx_train == 32768
    assert li.n_ctx == 2048
    # the embedded Gemma 3 270M is a base model (no chat template): a plain dialogue
    assert li.chat_format == "dialogue" and li.base_model
    assert li.format_note.startswith("base model: continues text")
    assert li.path == model_path


def test_reply_streams_in_pieces_that_add_up_to_the_reply(session):
    pieces = []
    res = session.send("Write a short poem about the sea.", pieces.append)
    assert len(pieces) >= 2
    assert "".join(pieces) == res.reply
    s = res.stats
    assert s.completion_tokens > 0 and s.finish_reason in ("stop", "length")
    assert s.ttft_s is not None and 0 < s.ttft_s < s.total_s
    assert s.gen_tokens_per_s and s.gen_tokens_per_s > 0  # any speed: busy machines are slow
    assert s.prompt_tokens_per_s and s.prompt_tokens_per_s > 0
    assert s.context_used > s.prompt_tokens
    assert session.conversation.messages[-1].role == "assistant"


def test_stop_from_another_thread_ends_the_reply_as_cancelled(session):
    session.settings.set("max_tokens", 2000)
    first = threading.Event()
    pieces = []

    def on_text(t):
        pieces.append(t)
        first.set()

    result = {}
    worker = threading.Thread(
        target=lambda: result.update(r=session.send("Tell a long story.", on_text))
    )
    worker.start()
    assert first.wait(60)
    session.stop()
    worker.join(30)
    assert not worker.is_alive()
    s = result["r"].stats
    assert s.finish_reason == "cancelled"
    assert s.completion_tokens < 2000


def test_stop_during_prompt_evaluation_cuts_the_prefill_short(model_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings(n_batch=32))
    try:
        s = ChatSession(model_path, small_settings(n_batch=32), engine=eng)
        timer = threading.Timer(0.3, eng.stop)
        timer.start()
        res = s.send(LONG_TEXT)
        timer.join()
        assert res.stats.finish_reason == "cancelled"
        assert res.stats.completion_tokens == 0
        # the KV cache holds only the batches evaluated before the abort
        assert res.stats.context_used < res.stats.prompt_tokens
    finally:
        eng.unload()


def test_reset_really_clears_the_kv_cache(session, engine):
    r1 = session.send("Hello!")
    assert engine.kv_cache_pos_max() >= r1.stats.prompt_tokens - 1
    out = session.run_command("/reset")
    assert out.reset and session.conversation.messages == []
    assert engine.kv_cache_pos_max() == -1  # the memory itself, not only the token counter
    assert engine.context_used == 0
    r2 = session.send("Hello!")
    assert r2.stats.prompt_tokens_reused == 0
    assert r2.stats.prompt_tokens == r1.stats.prompt_tokens


def test_later_turns_reuse_the_kv_prefix(session):
    stats = [
        session.send(q).stats
        for q in ("Hi, who are you?", "What do you like?", "Tell me about the weather.", "Thanks!")
    ]
    for prev, cur in itertools.pairwise(stats):
        # everything up to the previous prompt is reused; only the new turn is evaluated
        assert cur.prompt_tokens_reused >= prev.prompt_tokens
        assert cur.prompt_tokens_evaluated < cur.prompt_tokens / 2
        assert cur.prompt_tokens_evaluated < 40 + prev.completion_tokens


def test_history_overflow_drops_oldest_turns_and_says_exactly_which(model_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=512))
    try:
        s = ChatSession(model_path, small_settings(n_ctx=512, max_tokens=16), engine=eng)
        para = " ".join(["The quick brown fox jumps over the lazy dog."] * 10)
        results = [s.send(f"Note {i}: {para}") for i in range(6)]
        trimmed = [r.stats.trimmed for r in results]
        assert any(trimmed), "a 512-token context must overflow with ~120-token messages"
        all_dropped = [d for t in trimmed for d in t]
        msgs = s.conversation.messages
        # what was reported is exactly the oldest messages, in order, and nothing else
        assert [d["id"] for d in all_dropped] == [m.id for m in msgs[: len(all_dropped)]]
        assert s.conversation.context_start == len(all_dropped)
        assert all_dropped[0]["role"] == "user" and all_dropped[0]["preview"].startswith("Note 0")
        for r in results:
            assert r.stats.prompt_tokens + 1 <= 512
        assert len(msgs) == 12  # nothing lost from the transcript
    finally:
        eng.unload()


def test_a_message_too_long_for_the_context_is_refused_with_both_numbers(model_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=512))
    try:
        s = ChatSession(model_path, small_settings(n_ctx=512), engine=eng)
        with pytest.raises(DeskLMError) as e:
            s.send(LONG_TEXT)
        msg = str(e.value)
        assert "holds 512" in msg
        needed = int(msg.split("needs ")[1].split()[0])
        assert needed > 512
        assert s.conversation.messages == []  # nothing half-added
    finally:
        eng.unload()


def test_threads_change_live_without_reload(session, engine):
    loaded = engine.llm
    res = session.apply_settings({"n_threads": 1, "n_threads_batch": 1})
    assert not res.reloaded
    assert engine.threads() == (1, 1)
    assert engine.llm is loaded
    session.send("One more?")
    session.apply_settings({"n_threads": 2, "n_threads_batch": 2})
    assert engine.threads() == (2, 2)


def test_slash_commands(session, engine):
    assert "/reset" in session.run_command("/help").message
    with pytest.raises(DeskLMError, match="known commands: /reset"):
        session.run_command("/nope")
    r = session.run_command("/system You are a pirate.")
    assert session.conversation.system_prompt == "You are a pirate."
    assert r.command == "system"
    with pytest.raises(DeskLMError, match="unknown setting"):
        session.run_command("/set colour blue")
    with pytest.raises(DeskLMError, match="temperature = 9"):
        session.run_command("/set temperature 9")
    assert session.run_command("/set temperature 0.2").data["changed"] == {"temperature": 0.2}
    session.send("Hi")
    st = session.run_command("/stats")
    assert st.data["last_turn"]["completion_tokens"] > 0
    assert st.data["n_ctx"] == 2048 and "context:" in st.message


def test_set_a_reload_setting_reloads_and_keeps_the_conversation(model_path):
    eng = ChatEngine()
    s = ChatSession(model_path, small_settings(), engine=eng)
    s.load()
    try:
        s.send("Remember the word banana.")
        res = s.run_command("/set n_ctx 1024")
        assert res.reloaded and "reloaded" in res.message
        assert eng.n_ctx == 1024
        assert len(s.conversation.messages) == 2
        r = s.send("Which word?")
        assert r.stats.prompt_tokens_reused == 0  # a fresh context re-reads the conversation
        with pytest.raises(DeskLMError, match="512 to 32768"):
            s.run_command("/set n_ctx 65536")
        assert eng.n_ctx == 1024 and s.settings["n_ctx"] == 1024
    finally:
        eng.unload()


def test_a_failed_load_keeps_the_previous_model(model_path, tmp_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings())
    try:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
        with pytest.raises(DeskLMError):
            eng.load(bad, small_settings())
        assert eng.loaded and eng.load_info.path == model_path
        with pytest.raises(DeskLMError, match="needs flash attention"):
            eng.load(model_path, small_settings(kv_cache_type="q8_0"))
        assert eng.loaded
    finally:
        eng.unload()
