"""Messages, the token budget, and trimming that is always reported, never silent.

A :class:`Conversation` keeps every message for display and saving. ``context_start`` marks the
first message the model still sees: when history outgrows the context, whole turns from the
oldest end are moved out of it (the system prompt and the latest user message always stay), and
the turn's result lists exactly what was dropped. A dropped turn stays dropped, so the prompt
prefix stays stable and the KV cache keeps being reused on later turns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from desklm.engine.prompt.chat_format import ChatTemplate, Msg, Part
from desklm.errors import DeskLMError

# Tokenizes message text (a str, as plain data) or a rendered prompt (parts: the template's
# markers as control tokens, message text as data).
Tokenize = Callable[[str | list[Part]], list[int]]


@dataclass
class Message:
    role: str  # "user" | "assistant"
    content: str
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stats: dict[str, Any] | None = None  # per-turn stats, on assistant messages
    # branches (see desklm.engine.chat.branches): the other versions of this message, and this
    # one's place among all of them; an inactive version keeps what followed it
    alternatives: list[Message] = field(default_factory=list)
    alt_index: int = 0
    continuation: list[Message] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # [{name, chars, tokens}]
    # schema 3: the tool calls an assistant reply made before its text (ToolStep.to_dict()s)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "created": self.created,
        }
        if self.stats is not None:
            d["stats"] = self.stats
        if self.attachments:
            d["attachments"] = [dict(a) for a in self.attachments]
        if self.tool_calls:
            d["tool_calls"] = [dict(c) for c in self.tool_calls]
        if self.alternatives or self.continuation:
            from desklm.engine.chat.branches import tree_fields_to_dict

            d.update(tree_fields_to_dict(self))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], _depth: int = 0) -> Message:
        msg = cls(
            role=str(d["role"]),
            content=str(d["content"]),
            created=float(d.get("created", time.time())),
            id=str(d.get("id") or uuid.uuid4().hex[:12]),
            stats=d.get("stats"),
        )
        if "tool_calls" in d and msg.role == "assistant":
            from desklm.engine.store.records import clean_tool_calls

            msg.tool_calls = clean_tool_calls(d["tool_calls"])
        if "alternatives" in d or "continuation" in d or "attachments" in d:
            from desklm.engine.chat.branches import tree_fields_from_dict

            tree_fields_from_dict(msg, d, _depth)
        return msg


class PlanCancelled(DeskLMError):
    """Stop was pressed while the prompt was being budgeted: the turn ends, nothing added."""


@dataclass
class PromptPlan:
    """The prompt for one turn, after budgeting."""

    text: str
    tokens: list[int]
    dropped: list[dict[str, Any]]  # what was moved out of the context this turn
    reserve: int  # tokens kept free for the reply


def preview(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Room kept free for the reply: max_tokens, but never more than a quarter of the context."""
    return max(1, min(max_tokens, n_ctx // 4))


class Conversation:
    def __init__(self, system_prompt: str = "") -> None:
        self.system_prompt = system_prompt
        self.messages: list[Message] = []
        self.context_start = 0
        self.tools_text = ""  # the tools of this turn, described after the system prompt
        # token counts of message texts, for one tokenizer + template (see _weights)
        self._count_sig: tuple[str, tuple[int, ...]] | None = None
        self._counts: dict[tuple[str, str, str], int] = {}
        self._markup = 0

    def clear(self) -> None:
        self.messages.clear()
        self.context_start = 0

    def in_context(self) -> list[Message]:
        return self.messages[self.context_start :]

    def as_msgs(self, messages: list[Message]) -> list[Msg]:
        out: list[Msg] = []
        system = "\n\n".join(t for t in (self.system_prompt, self.tools_text) if t.strip())
        if system.strip():
            out.append({"role": "system", "content": system})
        for m in messages:
            if m.tool_calls:  # the calls the reply made and their results, before its text
                from desklm.engine.chat.tool_format import with_results
                from desklm.engine.chat.tools import ToolStep

                out = with_results(out, [ToolStep.from_dict(c) for c in m.tool_calls])
            out.append({"role": m.role, "content": m.content})
        return out

    def plan(
        self,
        user_text: str,
        template: ChatTemplate,
        tokenize: Tokenize,
        n_ctx: int,
        max_tokens: int,
        cancelled: Callable[[], bool] | None = None,
    ) -> PromptPlan:
        """Budget the prompt for a new user message (not yet appended).

        Keeps as many of the newest whole turns as fit in ``n_ctx - reserve`` (exactly: the
        result is the one the exhaustive drop-one-turn-and-re-render loop would give), in
        O(history): token counts are cached per message, the cut is found by a search over
        turn boundaries, and only a few full renders confirm it. ``cancelled()`` is polled
        throughout; when it returns True, :class:`PlanCancelled` is raised.

        Raises DeskLMError when the message alone cannot fit, with both numbers.
        Does not modify the conversation; :meth:`commit_user` applies the trimming.
        """
        check = cancelled or (lambda: False)
        budget = n_ctx - reply_reserve(n_ctx, max_tokens)
        new = Message("user", user_text)
        candidate = [*self.in_context(), new]
        probes: dict[int, tuple[str, list[int]]] = {}

        def real(s: int) -> int:
            """Render and tokenize the prompt that keeps ``candidate[s:]``."""
            if s not in probes:
                if check():
                    raise PlanCancelled("stopped while preparing the prompt")
                parts = template.render_parts(self.as_msgs(candidate[s:]))
                probes[s] = ("".join(p.text for p in parts), tokenize(parts))
            return len(probes[s][1])

        weights = self._weights(candidate, template, tokenize, check, budget)
        starts = turn_starts([m.role for m in candidate])
        # Far over budget (the estimate is twice the budget): the whole history is not
        # rendered at all; the search anchors on the new message alone instead.
        far_over = len(starts) > 1 and sum(weights) > 2 * budget
        cut: int | None = 0
        if far_over or real(0) > budget:
            cut = find_cut(starts, weights, real, budget, anchor=len(starts) - 1 if far_over else 0)
            if cut is None:
                self._refuse(new, template, tokenize, n_ctx, max_tokens)
        s = cut or 0
        text, tokens = probes[s]
        report = [
            {"id": m.id, "role": m.role, "preview": preview(m.content)} for m in candidate[:s]
        ]
        return PromptPlan(
            text=text, tokens=tokens, dropped=report, reserve=reply_reserve(n_ctx, max_tokens)
        )

    def _refuse(
        self, new: Message, template: ChatTemplate, tokenize: Tokenize, n_ctx: int, max_tokens: int
    ) -> None:
        reserve = reply_reserve(n_ctx, max_tokens)
        alone = len(tokenize(template.render_parts(self.as_msgs([new]))))
        raise DeskLMError(
            f"message too long: it needs {alone} tokens (with the system prompt and "
            f"{reserve} tokens kept for the reply: {alone + reserve}), but the context "
            f"holds {n_ctx}; shorten it or raise the context length"
        )

    def _weights(
        self,
        candidate: list[Message],
        template: ChatTemplate,
        tokenize: Tokenize,
        check: Callable[[], bool],
        budget: int,
    ) -> list[int]:
        """Estimated tokens per message as rendered: its text's tokens (cached, keyed by the
        tokenizer, template, message id, role and content) plus the template's per-message
        markup. Only a guide for the search: the cut is always confirmed by real renders.

        Counted from the newest message back; once the newer ones alone are twice the budget,
        the older ones (certain to be dropped) are estimated from their length instead, so
        the tokenizer sees about two contexts' worth of text however long the history.
        """
        sig = (template.name, tuple(tokenize(_SIGNATURE_TEXT)))
        if self._count_sig != sig:
            self._count_sig, self._counts = sig, {}
            self._markup = _markup_per_message(template, tokenize)
        counts = self._counts
        empty = len(tokenize(""))  # the BOS a bare tokenization adds
        out = [0] * len(candidate)
        total = chars = tokens = 0
        for i in range(len(candidate) - 1, -1, -1):
            if i % 64 == 0 and check():
                raise PlanCancelled("stopped while preparing the prompt")
            m = candidate[i]
            key = (m.id, m.role, m.content)
            n = counts.get(key)
            if n is None:
                if total > 2 * budget:  # far beyond the cut: an estimate will do
                    n = len(m.content) * tokens // max(1, chars)
                else:
                    n = counts[key] = max(0, len(tokenize(m.content)) - empty)
            chars += len(m.content)
            tokens += n
            out[i] = n + self._markup
            total += out[i]
        return out

    def commit_user(self, user_text: str, plan: PromptPlan) -> Message:
        """Apply a plan's trimming and append the user message it was made for."""
        self.context_start += len(plan.dropped)
        msg = Message("user", user_text)
        self.messages.append(msg)
        return msg

    def add_assistant(self, text: str, stats: dict[str, Any] | None) -> Message:
        msg = Message("assistant", text, stats=stats)
        self.messages.append(msg)
        return msg


# --- budgeting helpers (pure) -------------------------------------------------------------------
# Tokenized once per plan: which tokenizer the cached counts belong to.
_SIGNATURE_TEXT = "DeskLM signature: The quick brown fox, 12,345 ünïcödé 東京 <start_of_turn>\n"


def turn_starts(roles: list[str]) -> list[int]:
    """Where the kept part of a prompt may begin: the first message, or any later user message
    (dropping works in whole turns: a user message and the replies that follow it). The last
    role is the new user message, so the last start keeps it alone."""
    return [0] + [i for i, r in enumerate(roles) if i > 0 and r == "user"]


def find_cut(
    starts: list[int],
    weights: list[int],
    real: Callable[[int], int],
    budget: int,
    guided: int = 4,
    anchor: int = 0,
) -> int | None:
    """The first of ``starts`` whose kept prompt fits: ``real(start) <= budget``.

    ``real`` is the true (expensive) token count of the prompt keeping messages ``start:``;
    ``starts[0]`` is taken not to fit. ``weights`` estimate each message's tokens; the
    estimate is anchored on a real probe of ``starts[anchor]`` and re-anchored on every
    probe after it, and guides the search; after ``guided`` probes it falls back to
    bisection. Assumes keeping fewer messages never costs more tokens, so the answer equals
    that of trying every start in order. None when even the last start (the new message
    alone) does not fit.
    """
    n = len(starts)
    suffix = [0] * (len(weights) + 1)
    for i in range(len(weights) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + weights[i]
    w = [suffix[s] for s in starts]  # decreasing
    lo, hi = 0, n  # starts[lo] is known not to fit; starts[hi] is known to fit (n: none known)
    r = real(starts[anchor])
    offset = r - w[anchor]
    if anchor > 0:
        if r > budget:  # the last start (keep less than this one) cannot do better: refuse
            if anchor == n - 1:
                return None
            lo = anchor
        else:
            hi = anchor
    probes = 0
    while hi - lo > 1:
        if probes < guided:
            # the first index in (lo, hi) predicted to fit: w[k] + offset <= budget
            a, b = lo + 1, hi
            while a < b:
                mid = (a + b) // 2
                if w[mid] + offset <= budget:
                    b = mid
                else:
                    a = mid + 1
            k = a if a < hi else hi - 1  # none predicted: check the last unknown one
        else:
            k = (lo + hi) // 2 if hi < n else max(lo + 1, (lo + n) // 2)
        probes += 1
        r = real(starts[k])
        offset = r - w[k]
        if r <= budget:
            hi = k
        else:
            lo = k
    return starts[hi] if hi < n else None


def _markup_per_message(template: ChatTemplate, tokenize: Tokenize) -> int:
    """Tokens a template adds around each message (measured on one extra turn); 0 when the
    template will not render the sample."""
    turn: list[Msg] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        one = len(tokenize(template.render_parts(turn)))
        two = len(tokenize(template.render_parts(turn + turn)))
    except DeskLMError:
        return 0
    empty = len(tokenize(""))
    text = len(tokenize("a")) - empty + len(tokenize("b")) - empty
    return max(0, (two - one - text) // 2)
