"""The batch core on the embedded model: sequences decoded together in one llama.cpp context."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..batch_checks import assert_same_or_near_tie
from ..conftest import small_settings

PROMPTS = ["The capital of France is", "Once upon a time", "def fib(n):", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def beng(model_path: Path) -> Any:
    """An engine loaded with 4 slots (the default) and a short context."""
    from desklm.engine.backends.local.batch import batch_for
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=1024, parallel=4, n_batch=512))
    assert eng.batch is None and batch_for(eng) is eng.batch is not None
    yield eng
    eng.unload()


def _seq(
    eng: Any,
    prompt: str,
    *,
    temperature: float = 0.0,
    seed: int = 7,
    max_tokens: int = 16,
    repeat_penalty: float = 1.0,
    **kw: Any,
) -> Any:
    from desklm.engine.backends.local.batch import SamplingParams, Sequence

    return Sequence(
        eng.plain_tokens(prompt),
        sampling=SamplingParams(
            temperature=temperature, seed=seed, max_tokens=max_tokens, repeat_penalty=repeat_penalty
        ),
        strip=False,
        stop_token_ids=eng._stop_token_ids,
        **kw,
    )


def _forget(eng: Any) -> None:
    """Empty every slot's cache, so a run does not reuse the previous one's prompt."""
    import llama_cpp

    b = eng.batch
    for s in b.slots:
        llama_cpp.llama_memory_seq_rm(b.mem, s.seq_id, -1, -1)
        s.kv = []


def _solo_seq(eng: Any, prompt: str, **kw: Any) -> Any:
    _forget(eng)
    s = eng.batch.submit(_seq(eng, prompt, **kw))
    eng.batch.run()
    s.result()
    return s


def _solo(eng: Any, prompt: str, **kw: Any) -> str:
    return _solo_seq(eng, prompt, **kw).result()[0]


def _same(eng: Any, prompt: str, a: Any, b: Any) -> None:
    """Two sequences' replies are the same, or part only at a near tie (tests/batch_checks)."""
    assert_same_or_near_tie(eng, eng.plain_tokens(prompt), a.token_ids, b.token_ids)


def test_context_is_split_per_slot(beng: Any) -> None:
    import llama_cpp

    ctx = beng.llm._ctx.ctx
    assert llama_cpp.llama_n_seq_max(ctx) == 5  # four slots and the window's own chat
    assert beng.n_ctx == llama_cpp.llama_n_ctx_seq(ctx) == 1024
    assert beng.load_info.n_ctx == 1024
    assert beng.batch.n_ctx_slot == 1024


def test_together_same_as_one_at_a_time(beng: Any) -> None:
    solo = [_solo_seq(beng, p) for p in PROMPTS]
    _forget(beng)
    steps_before = beng.batch.stats().steps_total
    seqs = [beng.batch.submit(_seq(beng, p)) for p in PROMPTS]
    beng.batch.run()
    for p, a, b in zip(PROMPTS, solo, seqs, strict=True):
        _same(beng, p, a, b)
    assert all(s.result()[0].strip() for s in seqs)
    assert sum(a.result()[0] == b.result()[0] for a, b in zip(solo, seqs, strict=True)) >= 2
    # decoded together: fewer steps than the four replies' tokens one at a time
    tokens = sum(s.result()[1].completion_tokens for s in seqs)
    assert beng.batch.stats().steps_total - steps_before < tokens


def test_each_sequence_draws_with_its_own_seed(beng: Any) -> None:
    """Sampling (temperature 0.8): the same seeds give the same texts run after run; the
    seeds are the sequences' own (a different one changes that reply only)."""

    def run(seeds: list[int]) -> list[str]:
        _forget(beng)
        seqs = [
            beng.batch.submit(_seq(beng, PROMPTS[1], temperature=0.8, seed=s, max_tokens=24))
            for s in seeds
        ]
        beng.batch.run()
        return [s.result()[0] for s in seqs]

    first = run([1, 2, 3, 4])
    assert run([1, 2, 3, 4]) == first
    assert len(set(first)) > 1  # four seeds, not one shared draw
    assert run([1, 2, 3, 4])[0] == first[0]


@pytest.fixture(scope="module")
def single(model_path: Path) -> Any:
    """The same model with parallel 1: no slots, so ChatEngine.generate is Llama.generate."""
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=1024, parallel=1, n_batch=512))
    assert eng.n_slots == 0
    yield eng
    eng.unload()


def test_same_text_as_the_single_stream_engine(beng: Any, single: Any) -> None:
    """The batch's sampler chain is Llama.generate's: a slot's reply and the window's (the
    batch's sequence 0) match parallel 1's ``Llama.generate``, with the same stats."""
    settings = small_settings(temperature=0.0, max_tokens=16)
    tokens = single.plain_tokens(PROMPTS[0])
    assert beng.plain_tokens(PROMPTS[0]) == tokens
    single.reset()
    reply, plain = single.generate(tokens, settings, stop=[], strip=False)
    assert _solo(beng, PROMPTS[0], repeat_penalty=1.1) == reply
    beng.reset()
    home, stats = beng.generate(tokens, settings, stop=[], strip=False)
    assert home == reply
    assert (stats.prompt_tokens, stats.completion_tokens) == (
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert stats.finish_reason == plain.finish_reason
    assert stats.context_used == plain.context_used == beng.context_used
    assert stats.gen_tokens_per_s and stats.prompt_tokens_per_s and stats.ttft_s


def test_the_window_reply_is_decoded_in_the_same_steps_as_the_slots(beng: Any) -> None:
    """A window turn while API sequences run: they advance during its reply (one batch, not
    a queue), its text is its own, and theirs is what they give alone. A long API prompt
    puts that sequence's KV past the window's: ``Llama.eval`` on sequence 0 removed every
    sequence's cells from its own length on, which cut the slot's KV under it."""
    settings = small_settings(temperature=0.0, max_tokens=20)
    tokens = beng.plain_tokens(PROMPTS[2])
    beng.reset()
    alone, _ = beng.generate(tokens, settings, stop=[], strip=False)
    long_prompt = "Here is a list of numbers: " + ", ".join(str(i) for i in range(120)) + ","
    solo = [_solo_seq(beng, p, max_tokens=40) for p in (long_prompt, PROMPTS[3])]
    _forget(beng)
    seqs = [beng.batch.submit(_seq(beng, p, max_tokens=40)) for p in (long_prompt, PROMPTS[3])]
    while min(s.live_tokens for s in seqs) < 2:  # both are generating
        beng.batch.step()
    seen: list[int] = []
    beng.reset()
    again, stats = beng.generate(
        tokens,
        settings,
        lambda _piece: seen.append(sum(s.live_tokens for s in seqs)),
        stop=[],
        strip=False,
    )
    assert again == alone and stats.completion_tokens > 2
    assert seen[-1] > seen[0]  # the slots' replies grew while the window's was written
    beng.batch.run()
    for p, a, b in zip((long_prompt, PROMPTS[3]), solo, seqs, strict=True):
        _same(beng, p, a, b)
    # the window's KV prefix stays: the next turn evaluates only what is new
    _, next_stats = beng.generate(tokens, settings, stop=[], strip=False)
    assert next_stats.prompt_tokens_reused == len(tokens) - 1


def test_stopping_the_window_reply_keeps_its_kv_and_the_slots_going(beng: Any) -> None:
    from desklm.engine.backends.base import FinishReason

    settings = small_settings(temperature=0.0, max_tokens=60)
    _forget(beng)
    s = beng.batch.submit(_seq(beng, PROMPTS[1], max_tokens=40))
    beng.batch.step()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            beng.stop()  # the window's Stop, from the reply's own callback

    beng.reset()
    tokens = beng.plain_tokens(PROMPTS[0])
    reply, stats = beng.generate(tokens, settings, on_text, stop=[], strip=False)
    assert stats.finish_reason == FinishReason.CANCELLED
    assert 3 <= stats.completion_tokens < 10 and reply == "".join(pieces)
    assert beng.context_used == beng.kv_cache_pos_max() + 1 >= len(tokens)
    assert not s.done()  # the slot's sequence did not stop with it
    beng.batch.run()
    assert s.result()[1].finish_reason == FinishReason.LENGTH


def test_a_sequence_counts_its_reasoning(beng: Any) -> None:
    """A reply that starts inside <think> (the template opened it) counts its tokens as
    reasoning until </think>, the same clock as ChatEngine.generate's."""
    _forget(beng)
    opened = beng.batch.submit(_seq(beng, PROMPTS[1], max_tokens=8, reasoning_open=True))
    plain = beng.batch.submit(_seq(beng, PROMPTS[1], max_tokens=8))
    beng.batch.run()
    o, p = opened.result()[1], plain.result()[1]
    assert o.reasoning_tokens == o.completion_tokens == 8 and o.reasoning_s is not None
    assert p.reasoning_tokens == 0 and p.reasoning_s is None


def test_cancel_one_mid_batch_leaves_the_others_intact(beng: Any) -> None:
    from desklm.engine.backends.base import FinishReason

    solo = [_solo_seq(beng, p, max_tokens=24) for p in PROMPTS]
    _forget(beng)
    seqs = [beng.batch.submit(_seq(beng, p, max_tokens=24)) for p in PROMPTS]
    victim = seqs[1]
    while victim.live_tokens < 4:
        beng.batch.step()
    victim.cancel()
    beng.batch.step()  # it leaves at the next step...
    assert victim.done()
    slot = next(i for i, s in enumerate(beng.batch.slots) if s.seq is None)
    assert beng.batch.kv_tokens(slot) == 0  # ...and its KV is freed at once
    beng.batch.run()
    partial, stats = victim.result()
    assert stats.finish_reason == FinishReason.CANCELLED
    assert 4 <= stats.completion_tokens < solo[1].result()[1].completion_tokens
    assert len(partial) < len(solo[1].result()[0])
    for i in (0, 2, 3):
        assert seqs[i].result()[1].finish_reason != FinishReason.CANCELLED
        _same(beng, PROMPTS[i], solo[i], seqs[i])


def test_cancel_while_waiting_never_runs(beng: Any) -> None:
    from desklm.engine.runner import JobCancelled

    _forget(beng)
    seqs = [beng.batch.submit(_seq(beng, p, max_tokens=4)) for p in PROMPTS + PROMPTS[:2]]
    assert beng.batch.waiting == 6
    seqs[5].cancel()  # beyond the four slots: still waiting
    assert seqs[5].done() and beng.batch.waiting == 5
    with pytest.raises(JobCancelled):
        seqs[5].result()
    beng.batch.run()
    assert all(s.result()[1].completion_tokens > 0 for s in seqs[:5])


def test_grammar_constrained_batched_with_a_free_one(beng: Any) -> None:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    free_solo = _solo_seq(beng, PROMPTS[1], max_tokens=32)
    _forget(beng)
    grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    constrained = beng.batch.submit(
        _seq(beng, "A JSON object describing a cat: ", max_tokens=48, grammar=grammar)
    )
    free = beng.batch.submit(_seq(beng, PROMPTS[1], max_tokens=32))
    beng.batch.run()
    text, stats = constrained.result()
    _same(beng, PROMPTS[1], free_solo, free)
    if stats.finish_reason == "stop":  # the grammar completed: it must parse
        assert isinstance(json.loads(text), dict | list | str | int | float | bool | None)
    else:  # cut at max_tokens: what there is starts like the grammar's value
        assert text.lstrip()[:1] in '{["-0123456789tfn'
    assert text.strip()
    # a GBNF string works the same as a LlamaGrammar
    digits = beng.batch.submit(
        _seq(beng, "My phone number is", max_tokens=8, grammar="root ::= [0-9]+")
    )
    beng.batch.run()
    assert digits.result()[0].isdigit()


def test_a_bad_grammar_fails_that_request_only(beng: Any) -> None:
    from desklm.errors import DeskLMError

    _forget(beng)
    bad = beng.batch.submit(_seq(beng, PROMPTS[0], grammar="root ::= ("))
    good = beng.batch.submit(_seq(beng, PROMPTS[1], max_tokens=4))
    beng.batch.run()
    with pytest.raises(DeskLMError, match="grammar"):
        bad.result()
    assert good.result()[1].completion_tokens == 4


def test_kv_freed_when_sequences_leave(model_path: Path) -> None:
    """keep_cache off: every slot's KV is empty once its sequence left; on: a finished reply's
    KV stays as the slot's cache (and a cancelled one's is freed anyway)."""
    from desklm.engine.backends.local.batch import BatchEngine, batch_for
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=512, parallel=2))
    try:
        old = batch_for(eng)
        eng.batch = BatchEngine(eng.llm, 2, keep_cache=False)
        old.close()
        seqs = [eng.batch.submit(_seq(eng, p, max_tokens=6)) for p in PROMPTS[:2]]
        eng.batch.step()
        eng.batch.step()
        assert all(eng.batch.kv_tokens(i) > 0 for i in range(2))
        eng.batch.run()
        assert [eng.batch.kv_tokens(i) for i in range(2)] == [0, 0]
        assert all(s.result()[1].completion_tokens == 6 for s in seqs)

        eng.batch.keep_cache = True
        kept = eng.batch.submit(_seq(eng, PROMPTS[0], max_tokens=6))
        eng.batch.run()
        _reply, stats = kept.result()
        slot = next(i for i, s in enumerate(eng.batch.slots) if s.kv)
        # the prompt and every reply token but the last (sampled, never decoded)
        assert eng.batch.kv_tokens(slot) == stats.prompt_tokens + stats.completion_tokens - 1
        # the window's own sequence 0 is untouched by all of it
        import llama_cpp

        assert llama_cpp.llama_memory_seq_pos_max(eng.batch.mem, 0) == -1
    finally:
        eng.unload()


def test_prefix_reuse_keeps_a_slots_cache(beng: Any) -> None:
    _forget(beng)
    first = beng.batch.submit(_seq(beng, "The history of the Roman Empire begins", max_tokens=8))
    beng.batch.run()
    reply, stats = first.result()
    assert stats.prompt_tokens_reused == 0
    follow = "The history of the Roman Empire begins" + reply + " Then"
    again = beng.batch.submit(_seq(beng, follow, max_tokens=8))
    beng.batch.run()
    _text, stats2 = again.result()
    assert stats2.prompt_tokens_reused >= stats.prompt_tokens  # only what is new was read
    _same(beng, follow, again, _solo_seq(beng, follow, max_tokens=8))  # as fresh


def test_chunked_prompt_evaluation_interleaves(beng: Any) -> None:
    """A long prompt is read in chunks between the others' tokens, not in one stall."""
    from desklm.engine.backends.local.batch import BatchEngine

    b = beng.batch
    _forget(beng)
    small = BatchEngine(beng.llm, 4, n_ctx_slot=1024, n_batch=64)  # the same 4 sequence ids
    try:
        runner = small.submit(_seq(beng, PROMPTS[1], max_tokens=40))
        small.step()
        small.step()
        long_prompt = " ".join(f"item {i} is a number." for i in range(80))
        long_seq = _seq(beng, long_prompt, max_tokens=4)
        n_long = len(long_seq.tokens)
        assert n_long > 3 * 64
        small.submit(long_seq)
        tokens_while_reading = 0
        while long_seq.live_tokens == 0 and not long_seq.done():
            before = runner.live_tokens
            small.step()
            tokens_while_reading += runner.live_tokens - before
        # the generating sequence got a token in every step the long prompt was being read
        assert tokens_while_reading >= n_long // 64 - 1
        small.run()
        assert long_seq.result()[1].completion_tokens > 0
        assert runner.result()[1].completion_tokens == 40
    finally:
        small.close()
        _forget(beng)  # the engine's own batch shares those sequence ids
    assert b.slots[0].seq_id == 1


def test_utf8_split_over_tokens_is_whole(beng: Any) -> None:
    """Pieces are whole characters, and they add up to the reply."""
    pieces: list[str] = []
    s = beng.batch.submit(
        _seq(beng, "Emoji: 🎉🎉 and more emoji:", max_tokens=24, on_text=pieces.append)
    )
    beng.batch.run()
    reply = s.result()[0]
    assert "".join(pieces) == reply
    assert "\ufffd" not in reply


def test_stop_strings_and_max_tokens(beng: Any) -> None:
    from desklm.engine.backends.base import FinishReason

    full = _solo(beng, "1, 2, 3, 4,", max_tokens=20)
    assert " 7," in full
    s = beng.batch.submit(_seq(beng, "1, 2, 3, 4,", max_tokens=20, stops=[" 7,"]))
    beng.batch.run()
    reply, stats = s.result()
    assert reply == full[: full.index(" 7,")]
    assert stats.finish_reason == FinishReason.STOP
    s = beng.batch.submit(_seq(beng, "1, 2, 3, 4,", max_tokens=3))
    beng.batch.run()
    assert s.result()[1].completion_tokens == 3
    assert s.result()[1].finish_reason == FinishReason.LENGTH


def test_prompt_longer_than_a_slot_is_refused(beng: Any) -> None:
    from desklm.errors import DeskLMError

    s = beng.batch.submit(_seq(beng, "word " * 1100))
    beng.batch.run()
    with pytest.raises(DeskLMError, match="context holds 1024"):
        s.result()


def test_the_window_sequence_and_the_slots_do_not_disturb_each_other(beng: Any) -> None:
    """The window's sequence 0 and the slots' steps interleave; each keeps its own text."""
    settings = small_settings(temperature=0.0, max_tokens=12)
    tokens = beng.plain_tokens(PROMPTS[2])
    alone, _ = beng.generate(tokens, settings, stop=[], strip=False)
    solo = _solo(beng, PROMPTS[3], max_tokens=24)
    s = beng.batch.submit(_seq(beng, PROMPTS[3], max_tokens=24))
    for _ in range(5):
        beng.batch.step()
    again, stats = beng.generate(tokens, settings, stop=[], strip=False)  # between steps
    assert again == alone
    assert stats.prompt_tokens_reused > 0  # the window's own KV prefix survived the batch
    beng.batch.run()
    assert s.result()[0] == solo


def test_loop_on_the_runner_yields_to_queued_jobs(beng: Any) -> None:
    """The batch job steps while nothing else waits, and lets a queued job run between two
    steps; the sequences carry on after it."""
    from desklm.engine.backends.local.batch import BatchLoop
    from desklm.engine.runner import Runner

    _forget(beng)
    runner = Runner(interrupt=beng.stop)
    loop = BatchLoop(runner, beng.batch)
    try:
        started = threading.Event()
        seqs = [loop.submit(_seq(beng, p, max_tokens=32, on_start=started.set)) for p in PROMPTS]
        assert started.wait(60)
        while seqs[0].live_tokens < 2:
            time.sleep(0.01)
        seen: dict[str, int] = {}
        t0 = time.perf_counter()
        runner.call(lambda: seen.update(tokens=seqs[0].live_tokens), "turn", timeout=60)
        waited = time.perf_counter() - t0
        assert 2 <= seen["tokens"] < 32  # it ran mid-batch, not after it
        assert waited < 10
        for s in seqs:
            s.result(timeout=120)
        assert all(s.result()[1].completion_tokens > 0 for s in seqs)
        assert not beng.batch.has_work()
    finally:
        assert runner.shutdown(5)


def test_unload_fails_what_is_left(model_path: Path) -> None:
    from desklm.engine.backends.local.batch import batch_for
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.errors import DeskLMError

    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=512, parallel=2))
    s = batch_for(eng).submit(_seq(eng, PROMPTS[0]))
    eng.batch.step()
    eng.unload()
    assert eng.batch is None
    with pytest.raises(DeskLMError, match="unloaded"):
        s.result(timeout=1)


def test_parallel_one_has_no_batch(model_path: Path) -> None:
    import llama_cpp

    from desklm.engine.backends.local.batch import batch_for
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings(n_ctx=512, parallel=1))
    try:
        assert batch_for(eng) is None
        assert llama_cpp.llama_n_seq_max(eng.llm._ctx.ctx) == 1
        assert eng.n_ctx == 512
    finally:
        eng.unload()


def test_a_runner_shutting_down_fails_the_sequences_it_will_not_step(beng: Any) -> None:
    """The batch job cancelled while queued (the runner closing) never runs: its sequences
    fail at once instead of waiting for a step that will not come."""
    from desklm.engine.backends.local.batch import BatchLoop
    from desklm.engine.runner import JobCancelled, Runner

    _forget(beng)
    runner = Runner(interrupt=beng.stop)
    gate = threading.Event()
    runner.submit(lambda _j: gate.wait(30), "turn")  # keeps the thread busy
    loop = BatchLoop(runner, beng.batch)
    s = loop.submit(_seq(beng, PROMPTS[0], max_tokens=4))
    try:
        runner.cancel(kinds=("batch",))
        gate.set()  # the runner reaches the cancelled batch job and drops it
        with pytest.raises(JobCancelled, match="shutting down"):
            s.result(timeout=30)
    finally:
        gate.set()
        assert runner.shutdown(5)
    beng.batch.run()  # nothing is left behind in the engine's own batch
    assert not beng.batch.has_work()
