"""Trimming in O(history): Conversation.plan against the exhaustive drop-one-turn loop.

Pure logic on fake tokenizers first (fast), then the real model on random histories.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import pytest

from desklm.engine.chat.conversation import (
    Conversation,
    Message,
    PlanCancelled,
    PromptPlan,
    find_cut,
    preview,
    reply_reserve,
    turn_starts,
)
from desklm.engine.prompt.chat_format import ChatTemplate, Part, builtin_template
from desklm.errors import DeskLMError

WORDS = (
    "apple pear river mountain sea cloud quick brown fox jumps over lazy dog, "
    "the of and 42 7 — ünï 東京 ok yes no"
).split()


def reference_plan(
    conv: Conversation,
    user_text: str,
    template: ChatTemplate,
    tokenize: Callable[[str], list[int]],
    n_ctx: int,
    max_tokens: int,
) -> PromptPlan:
    """The exhaustive algorithm DeskLM used before: re-render after every dropped turn."""
    reserve = reply_reserve(n_ctx, max_tokens)
    new = Message("user", user_text)
    candidate = [*conv.in_context(), new]
    dropped: list[Message] = []
    while True:
        parts = template.render_parts(conv.as_msgs(candidate))
        text = "".join(p.text for p in parts)
        tokens = tokenize(parts)
        if len(tokens) + reserve <= n_ctx:
            break
        if len(candidate) == 1:
            alone = len(tokenize(template.render_parts(conv.as_msgs([new]))))
            raise DeskLMError(f"message too long: it needs {alone} tokens")
        dropped.append(candidate.pop(0))
        while len(candidate) > 1 and candidate[0].role != "user":
            dropped.append(candidate.pop(0))
    report = [{"id": m.id, "role": m.role, "preview": preview(m.content)} for m in dropped]
    return PromptPlan(text=text, tokens=tokens, dropped=report, reserve=reserve)


def _joined(text: str | list[Part]) -> str:
    """Prompts arrive as the template's parts (markup + message text), message text as a str."""
    return text if isinstance(text, str) else "".join(p.text for p in text)


class WordTokenizer:
    """Markup tags, words and punctuation are tokens; a BOS first. Counts its work."""

    BOS = 1

    def __init__(self) -> None:
        self.calls = 0
        self.chars = 0

    def __call__(self, text: str | list[Part]) -> list[int]:
        text = _joined(text)
        self.calls += 1
        self.chars += len(text)
        parts = re.findall(r"<[^>]+>|\w+|[^\w\s]", text)
        return [self.BOS] + [hash(p) % 50000 + 2 for p in parts]


class ChunkTokenizer(WordTokenizer):
    """Not additive across message boundaries: one token per 3 characters of the whole text."""

    def __call__(self, text: str | list[Part]) -> list[int]:
        text = _joined(text)
        self.calls += 1
        self.chars += len(text)
        return [self.BOS] + [7] * (len(text) // 3)


def random_history(rng: random.Random, n: int, regular: bool = True) -> list[Message]:
    msgs = []
    for i in range(n):
        role = (
            ("user" if i % 2 == 0 else "assistant")
            if regular
            else rng.choice(["user", "assistant", "assistant"])
        )
        words = rng.choices(WORDS, k=rng.choice([1, 3, 8, 20, 60]))
        msgs.append(Message(role, " ".join(words)))
    return msgs


def conv_with(msgs: list[Message], system: str = "Be brief.", start: int = 0) -> Conversation:
    c = Conversation(system)
    c.messages = list(msgs)
    c.context_start = start
    return c


def same(a: PromptPlan, b: PromptPlan) -> None:
    assert a.tokens == b.tokens
    assert a.text == b.text
    assert a.dropped == b.dropped
    assert a.reserve == b.reserve


def test_turn_starts_follow_the_drop_rule():
    assert turn_starts(["user", "assistant", "user", "assistant", "user"]) == [0, 2, 4]
    # a history that begins with replies (or has several in a row) still cuts at user messages
    assert turn_starts(["assistant", "assistant", "user", "user", "assistant", "user"]) == [
        0,
        2,
        3,
        5,
    ]
    assert turn_starts(["user"]) == [0]


def test_find_cut_returns_the_first_start_that_fits_whatever_the_estimate():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(2, 60)
        sizes = [rng.randint(1, 40) for _ in range(n)]
        starts = sorted({0, *rng.sample(range(1, n), rng.randint(0, n - 1))})
        base = rng.randint(0, 20)

        def real(s: int, sizes: list[int] = sizes, base: int = base) -> int:
            return base + sum(sizes[s:])

        budget = rng.randint(0, real(0) - 1)
        # estimates from perfect to wildly wrong: the answer must not depend on them
        noise = rng.choice([0, 1, 5, 50])
        weights = [max(0, x + rng.randint(-noise, noise)) for x in sizes]
        expect = next((s for s in starts if real(s) <= budget), None)
        assert find_cut(starts, weights, real, budget) == expect


def test_find_cut_probes_few_prompts_with_good_estimates():
    sizes = [30] * 5000
    probed: list[int] = []

    def real(s: int) -> int:
        probed.append(s)
        return 10 + sum(sizes[s:])

    starts = list(range(0, 5000, 2))
    assert find_cut(starts, sizes, real, 1500) == 4952
    assert len(probed) <= 4  # the full history, the guess, and its neighbour


@pytest.mark.parametrize("template_name", ["gemma", "chatml", "llama2", "llama3", "dialogue"])
@pytest.mark.parametrize("tok_cls", [WordTokenizer, ChunkTokenizer])
def test_plan_equals_the_exhaustive_algorithm_on_random_histories(template_name, tok_cls):
    rng = random.Random(hash((template_name, tok_cls.__name__)) % 1000)
    template = builtin_template(template_name)
    for trial in range(40):
        msgs = random_history(rng, rng.randint(0, 80), regular=trial % 3 != 0)
        conv = conv_with(
            msgs,
            system=rng.choice(["", "Be brief.", "You are terse. " * 20]),
            start=rng.randint(0, len(msgs) // 4) if msgs else 0,
        )
        n_ctx = rng.choice([128, 256, 512, 1024, 4096])
        max_tokens = rng.choice([8, 64, 512])
        user = " ".join(rng.choices(WORDS, k=rng.choice([1, 10, 40])))
        tok = tok_cls()
        try:
            want = reference_plan(conv, user, template, tok, n_ctx, max_tokens)
        except DeskLMError:
            with pytest.raises(DeskLMError, match="message too long"):
                conv.plan(user, template, tok, n_ctx, max_tokens)
            continue
        got = conv.plan(user, template, tok, n_ctx, max_tokens)
        same(got, want)
        assert len(got.tokens) + got.reserve <= n_ctx
        # planning again (counts cached) gives the same plan
        same(conv.plan(user, template, tok, n_ctx, max_tokens), want)


def test_plan_work_is_linear_in_history_and_cached_across_turns():
    template = builtin_template("gemma")
    rng = random.Random(5)
    msgs = random_history(rng, 5000)
    history_chars = sum(len(m.content) for m in msgs)
    conv = conv_with(msgs)
    tok = WordTokenizer()
    t0 = time.perf_counter()
    plan = conv.plan("What next?", template, tok, 2048, 256)
    first_s = time.perf_counter() - t0
    assert plan.dropped and len(plan.tokens) + plan.reserve <= 2048
    # the tokenizer sees about two contexts' worth of text, not the history (let alone one
    # render of it per dropped turn: ~2,500 renders of the whole history)
    assert tok.chars < 20 * 2048 < history_chars / 10
    # the next plan over the same history tokenizes only the full render again
    tok2 = WordTokenizer()
    conv.plan("And then?", template, tok2, 2048, 256)
    assert tok2.calls < 20
    assert first_s < 5.0


def test_an_edited_message_is_recounted_not_served_from_the_cache():
    template = builtin_template("chatml")
    msgs = random_history(random.Random(9), 40)
    conv = conv_with(msgs)
    tok = WordTokenizer()
    conv.plan("q", template, tok, 256, 16)
    msgs[-5].content = " ".join(["long"] * 300)  # same id, new content
    got = conv.plan("q", template, WordTokenizer(), 512, 16)
    want = reference_plan(conv, "q", template, WordTokenizer(), 512, 16)
    same(got, want)


def test_stop_during_planning_raises_plan_cancelled_and_changes_nothing():
    template = builtin_template("gemma")
    msgs = random_history(random.Random(1), 3000)
    conv = conv_with(msgs)
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(PlanCancelled):
        conv.plan("hi", template, WordTokenizer(), 1024, 64, cancelled=cancelled)
    assert isinstance(PlanCancelled("x"), DeskLMError)
    assert conv.messages == msgs and conv.context_start == 0


def test_the_message_alone_too_long_is_refused_with_both_numbers():
    conv = conv_with(random_history(random.Random(2), 10))
    with pytest.raises(DeskLMError, match=r"message too long: it needs \d+ tokens.*holds 512"):
        conv.plan(" ".join(["word"] * 2000), builtin_template("gemma"), WordTokenizer(), 512, 64)


# --- the real model ---------------------------------------------------------------------------
def test_plan_equals_the_exhaustive_algorithm_on_the_real_model(engine):
    rng = random.Random(11)
    template = engine.template
    for trial in range(12):
        msgs = random_history(rng, rng.randint(5, 120), regular=trial % 4 != 0)
        conv = conv_with(msgs, system=rng.choice(["", "You are a helpful assistant."]))
        n_ctx = rng.choice([512, 1024, 2048])
        user = " ".join(rng.choices(WORDS, k=rng.choice([2, 30])))
        want = reference_plan(conv, user, template, engine.tokenize, n_ctx, 128)
        got = conv.plan(user, template, engine.tokenize, n_ctx, 128)
        same(got, want)
        assert len(got.tokens) + got.reserve <= n_ctx


def test_planning_5000_messages_on_the_real_model_is_fast(engine):
    msgs = random_history(random.Random(4), 5000)
    conv = conv_with(msgs)
    t0 = time.perf_counter()
    plan = conv.plan("And now?", engine.template, engine.tokenize, 2048, 256)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    conv.plan("And now?", engine.template, engine.tokenize, 2048, 256)
    again = time.perf_counter() - t0
    assert plan.dropped and len(plan.tokens) + plan.reserve <= 2048
    # the exhaustive loop took > 240 s here; one pass is well under a second or two on 2 cores
    assert first < 3.0 and again < 1.5, (first, again)


def test_stop_while_planning_a_long_history_ends_the_turn_with_nothing_added(engine, model_path):
    import threading

    from desklm.engine.chat.session import ChatSession
    from tests.conftest import small_settings

    s = ChatSession(model_path, small_settings(), engine=engine)
    s.reset()
    msgs = random_history(random.Random(8), 20000)
    s.conversation.messages = list(msgs)
    real_tokenize = engine.tokenize

    def tokenize(text: str) -> list[int]:  # the real tokenizer; Stop is pressed as it starts
        engine.stop()
        return real_tokenize(text)

    engine.tokenize = tokenize
    try:
        out = {}
        worker = threading.Thread(target=lambda: out.update(r=s.send("Go on.")))
        worker.start()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        del engine.tokenize
    r = out["r"]
    assert r.stats.finish_reason == "cancelled" and r.reply == ""
    assert r.stats.prompt_tokens == 0 and r.stats.completion_tokens == 0
    assert s.conversation.messages == msgs and s.conversation.context_start == 0
    # a Stop pressed while idle does not cancel the next turn
    engine.stop()
    s.conversation.messages = []
    assert s.send("Hello").stats.finish_reason in ("stop", "length")
