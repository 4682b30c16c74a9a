"""Splitting a reply as it streams: stop strings (where one begins, how much text to hold back
because it may begin one) and reasoning (``<think>...</think>``: what is reasoning, what is the
answer, and the tokens and time the reasoning took). Pure functions, no model."""

from __future__ import annotations

import time

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_reasoning(text: str, opened: bool = False) -> tuple[str, str]:
    """Split a reply into (reasoning, answer), both stripped.

    Reasoning is ``<think>...</think>`` at the very start of the reply (after whitespace), or,
    where the template opened ``<think>`` in the prompt (``opened``, or a reply holding a
    ``</think>`` with no ``<think>`` before it), everything before the first ``</think>``. An
    unclosed ``<think>`` at the start is all reasoning (still thinking); a tag anywhere else is
    the answer's text (a reply that talks about ``<think>`` tags).
    """
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
        end = body.find(THINK_CLOSE)
        if end == -1:
            return body.strip(), ""
        return body[:end].strip(), body[end + len(THINK_CLOSE) :].strip()
    end = text.find(THINK_CLOSE)
    if end != -1 and THINK_OPEN not in text[:end]:
        return text[:end].strip(), text[end + len(THINK_CLOSE) :].strip()
    if opened and end == -1:
        return text.strip(), ""
    return "", text.strip()


def has_reasoning(text: str) -> bool:
    """Whether a reply carries reasoning the way :func:`split_reasoning` finds it: it opens
    with ``<think>``, or holds a ``</think>`` with no ``<think>`` before it."""
    if text.lstrip().startswith(THINK_OPEN):
        return True
    end = text.find(THINK_CLOSE)
    return end != -1 and THINK_OPEN not in text[:end]


class ReasoningClock:
    """Counts the reply's tokens inside ``<think>...</think>`` and the time they took."""

    def __init__(self, opened: bool) -> None:
        self.opened = opened
        self.tokens = 0
        # when the previous token arrived: a token's time ends with it (the first token's time
        # is the prompt's, not counted)
        self.t_prev: float | None = None
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.closed = False

    def token(self, reply: str) -> None:
        now = time.perf_counter()
        prev, self.t_prev = (now if self.t_prev is None else self.t_prev), now
        if self.closed or not (self.opened or THINK_OPEN in reply):
            return
        if self.t_first is None:
            self.t_first = prev
        self.tokens += 1
        self.t_last = now
        if THINK_CLOSE in reply:
            self.closed = True

    @property
    def seconds(self) -> float | None:
        if self.t_first is None or self.t_last is None:
            return None
        return self.t_last - self.t_first


def find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Where the first stop string begins (at or after ``start``); a whitespace-only stop
    counts only after the reply's leading whitespace (it ends a reply, never opens one)."""
    best = None
    lead = len(text) - len(text.lstrip())
    for s in stops:
        i = text.find(s, start if s.strip() else max(start, lead))
        if i != -1 and (best is None or i < best):
            best = i
    return best


def partial_stop_len(text: str, stops: list[str], hold: int) -> int:
    """Length of the longest suffix of ``text`` that could begin a stop string."""
    for n in range(min(hold, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
