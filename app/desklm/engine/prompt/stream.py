"""Splitting a reply as it streams: stop strings (where one begins, how much text to hold back
because it may begin one) and reasoning (``<think>...</think>``: what is reasoning, what is the
answer, and the tokens and time the reasoning took). Pure functions, no model."""

from __future__ import annotations

import time

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_reasoning(text: str, opened: bool = False) -> tuple[str, str]:
    """Split a reply into (reasoning, answer), both stripped.

    Handles ``<think>...</think>answer`` and, where the template opened ``<think>`` in the prompt
    (``opened``, or a reply that holds only ``</think>``), ``reasoning</think>answer``. A reply
    whose reasoning never closed is all reasoning when it was opened, else all answer after the
    unclosed ``<think>`` is reasoning.
    """
    close = text.find(THINK_CLOSE)
    start = text.find(THINK_OPEN)
    if close == -1:
        if start != -1:
            return text[start + len(THINK_OPEN):].strip(), text[:start].strip()
        return (text.strip(), "") if opened else ("", text.strip())
    if start == -1 or start > close:
        return text[:close].strip(), text[close + len(THINK_CLOSE):].strip()
    return (text[start + len(THINK_OPEN):close].strip(),
            (text[:start] + text[close + len(THINK_CLOSE):]).strip())


def has_reasoning(text: str) -> bool:
    """Whether a reply has reasoning markers at all (then :func:`split_reasoning` applies)."""
    return THINK_CLOSE in text or THINK_OPEN in text


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
