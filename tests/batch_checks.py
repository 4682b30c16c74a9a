"""Comparing a batched reply with the same request decoded alone.

llama.cpp's CPU kernels round differently when a token is computed in a batch of 1 and in a
batch of several rows (measured here on the embedded model: the same logit differs by up to
~0.2 between the two; llama.cpp's own server tests note the same). At temperature 0 two
candidates that close can swap, and from there the texts differ. So "the same text" is
checked as: identical, or identical up to a token where the model itself, evaluating that
prefix alone, finds the two diverging tokens within ``TIE`` logits of each other (a near tie).
Cross-talk between sequences (another sequence's KV, sampler or text leaking in) gives
unrelated tokens far apart, and fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

TIE = 0.5  # logits


def next_logits(eng: Any, tokens: Sequence[int]) -> Any:
    """The logits after ``tokens``, evaluated alone on the window's sequence 0 (forgets it)."""
    import llama_cpp

    eng.reset()
    eng.llm.eval(list(tokens))  # Llama.eval clears every sequence's KV past its start:
    if eng.batch is not None:  # the slots' records must say so
        for s in eng.batch.slots:
            s.kv = []
    return llama_cpp.llama_get_logits_ith(eng.llm._ctx.ctx, -1)


def assert_same_or_near_tie(
    eng: Any,
    prompt: list[int],
    a: list[int],
    b: list[int],
    call: Callable[[Callable[[], Any]], Any] = lambda f: f(),
) -> None:
    """Token ids ``a`` and ``b`` (two replies to ``prompt``) are equal, or part at a near tie.
    ``call`` runs a function on the inference thread (``runner.call``)."""
    if a == b:
        return
    k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    assert k is not None, f"one reply is a prefix of the other: {a} vs {b}"

    def margin() -> float:
        lg = next_logits(eng, [*prompt, *a[:k]])
        return abs(float(lg[a[k]]) - float(lg[b[k]]))

    m = call(margin)
    assert m < TIE, (
        f"replies part at token {k} ({a[k]} vs {b[k]}) where the model does not "
        f"waver: the logits are {m:.3f} apart"
    )


def assert_text_same_or_near_tie(
    eng: Any,
    prompt: list[int],
    a: str,
    b: str,
    call: Callable[[Callable[[], Any]], Any] = lambda f: f(),
) -> None:
    """As :func:`assert_same_or_near_tie` for replies known only as text (an API's): the
    texts part after their common prefix, cut back to where a word starts."""
    if a == b:
        return
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    while n > 0 and not a[n - 1].isspace() and a[n - 1].isalnum():
        n -= 1  # back to the start of the word they part in
    while n > 0 and a[n - 1].isspace():
        n -= 1  # a token carries its leading space

    def tokens(text: str) -> list[int]:
        return eng.llm.tokenize(text.encode(), add_bos=False, special=False)

    def check() -> tuple[float, int, int]:
        head = tokens(a[:n]) if n else []
        ta, tb = tokens(a[n:])[:1], tokens(b[n:])[:1]
        if not ta or not tb or ta == tb:
            return 0.0, -1, -1
        lg = next_logits(eng, [*prompt, *head])
        return abs(float(lg[ta[0]]) - float(lg[tb[0]])), ta[0], tb[0]

    m, x, y = call(check)
    assert m < TIE, (
        f"replies part after {a[:n]!r} ({x} vs {y}) where the model does not "
        f"waver: the logits are {m:.3f} apart\n{a!r}\n{b!r}"
    )
