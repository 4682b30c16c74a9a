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

from desklm.engine.chat_format import ChatTemplate, Msg, Part
from desklm.errors import DeskLMError


@dataclass
class Message:
    role: str  # "user" | "assistant"
    content: str
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stats: dict[str, Any] | None = None  # per-turn stats, on assistant messages
    # branches (see desklm.engine.branches): the other versions of this message, and this
    # one's place among all of them; an inactive version keeps what followed it
    alternatives: list[Message] = field(default_factory=list)
    alt_index: int = 0
    continuation: list[Message] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # [{name, chars, tokens}]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "role": self.role, "content": self.content,
                             "created": self.created}
        if self.stats is not None:
            d["stats"] = self.stats
        if self.attachments:
            d["attachments"] = [dict(a) for a in self.attachments]
        if self.alternatives or self.continuation:
            from desklm.engine.branches import tree_fields_to_dict

            d.update(tree_fields_to_dict(self))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], _depth: int = 0) -> Message:
        msg = cls(role=str(d["role"]), content=str(d["content"]),
                  created=float(d.get("created", time.time())),
                  id=str(d.get("id") or uuid.uuid4().hex[:12]), stats=d.get("stats"))
        if "alternatives" in d or "continuation" in d or "attachments" in d:
            from desklm.engine.branches import tree_fields_from_dict

            tree_fields_from_dict(msg, d, _depth)
        return msg


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

    def clear(self) -> None:
        self.messages.clear()
        self.context_start = 0

    def in_context(self) -> list[Message]:
        return self.messages[self.context_start :]

    def as_msgs(self, messages: list[Message]) -> list[Msg]:
        out: list[Msg] = []
        if self.system_prompt.strip():
            out.append({"role": "system", "content": self.system_prompt})
        out.extend({"role": m.role, "content": m.content} for m in messages)
        return out

    def plan(
        self,
        user_text: str,
        template: ChatTemplate,
        tokenize: Callable[[list[Part]], list[int]],
        n_ctx: int,
        max_tokens: int,
    ) -> PromptPlan:
        """Budget the prompt for a new user message (not yet appended).

        Raises DeskLMError when the message alone cannot fit, with both numbers.
        Does not modify the conversation; :meth:`commit_plan` applies the trimming.
        """
        reserve = reply_reserve(n_ctx, max_tokens)
        new = Message("user", user_text)
        candidate = [*self.in_context(), new]
        dropped: list[Message] = []
        while True:
            parts = template.render_parts(self.as_msgs(candidate))
            text = "".join(p.text for p in parts)
            tokens = tokenize(parts)
            if len(tokens) + reserve <= n_ctx:
                break
            if len(candidate) == 1:
                alone = len(tokenize(template.render_parts(self.as_msgs([new]))))
                raise DeskLMError(
                    f"message too long: it needs {alone} tokens (with the system prompt and "
                    f"{reserve} tokens kept for the reply: {alone + reserve}), but the context "
                    f"holds {n_ctx}; shorten it or raise the context length"
                )
            # drop the oldest whole turn: a user message and the replies that follow it
            dropped.append(candidate.pop(0))
            while len(candidate) > 1 and candidate[0].role != "user":
                dropped.append(candidate.pop(0))
        report = [
            {"id": m.id, "role": m.role, "preview": preview(m.content)} for m in dropped
        ]
        return PromptPlan(text=text, tokens=tokens, dropped=report, reserve=reserve)

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
