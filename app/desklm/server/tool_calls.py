"""Tool calling over the API: one request's tools, rendered, forced and read back.

Kept apart from app.py's request plumbing: the chat handler asks a :class:`ToolTurn` for the
prompt's tokens, the ``generate`` keywords, the stream's deltas and the whole reply's body.
The prompt work (templates, syntaxes, parsing, grammar) is the engine's
(``desklm.engine.prompt.tools``); this module only speaks OpenAI's shapes.
"""

from __future__ import annotations

from typing import Any

from desklm.engine import (
    ArgsDelta,
    CallStart,
    ContentDelta,
    Tool,
    ToolStream,
    ToolSyntax,
    parse_tool_calls,
    render_tools,
    tool_grammar,
    tool_grammar_text,
)
from desklm.errors import DeskLMError
from desklm.server import protocol as P

MAX_PARALLEL = 4  # calls one forced reply may hold (tool_choice required, parallel on)


class ToolTurn:
    """A chat request that offers tools or carries earlier calls and their results."""

    def __init__(self, req: P.ChatRequest) -> None:
        self.messages = req.tool_messages()
        self.tools = [
            Tool(
                t.function.name,
                t.function.description or "",
                t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in req.tools or []
        ]
        self.offered = self.tools if req.offers_tools else []
        self.named = req.named_tool
        self.forced = req.forced_tool
        self.parallel = req.parallel_tool_calls is not False
        self.names = [t.name for t in self.offered]
        self.syntax = ToolSyntax.GENERIC
        self.keep: tuple[str, ...] = ()
        self._stream: ToolStream | None = None
        self._calls = 0
        if self.forced:  # a schema the grammar converter cannot take: 400 now, not mid-job
            try:
                tool_grammar_text(
                    self.offered, ToolSyntax.GENERIC, name=self.named, max_calls=self.max_calls
                )
            except DeskLMError as e:
                raise P.unsupported("tools", str(e)) from None

    @property
    def max_calls(self) -> int:
        if self.named is not None or not self.parallel:
            return 1
        return max(1, min(len(self.offered), MAX_PARALLEL))

    # -- in the job (the inference thread) --
    def prepare(self, eng: Any) -> list[int]:
        """The prompt's tokens: tools and history through the model's template or syntax."""
        prompt = render_tools(eng.template, self.messages, self.offered, parallel=self.parallel)
        self.syntax, self.keep = prompt.syntax, prompt.keep
        if self.offered:
            self._stream = ToolStream(self.syntax, parallel=self.parallel, names=self.names)
        return list(eng.tokenize(prompt.parts))

    def generate_kw(self, extra_stop: list[str]) -> dict[str, Any]:
        """Keywords for ``ChatEngine.generate``: the forcing grammar (with only the request's
        own stop strings: the call's JSON must not be cut), and the tokens to keep."""
        kw: dict[str, Any] = {"keep": self.keep}
        if self.forced:
            kw["grammar"] = tool_grammar(
                self.offered, self.syntax, name=self.named, max_calls=self.max_calls
            )
            kw["stop"] = list(extra_stop)
        return kw

    # -- the reply, on the event loop --
    def deltas(self, text: str) -> list[dict[str, Any]]:
        """A streamed piece of text as chunk deltas (text held back while it may be a call)."""
        if self._stream is None:
            return [{"content": text}] if text else []
        return [self._delta(d) for d in self._stream.feed(text)]

    def end_deltas(self) -> list[dict[str, Any]]:
        if self._stream is None:
            return []
        return [self._delta(d) for d in self._stream.end()]

    def _delta(self, d: Any) -> dict[str, Any]:
        if isinstance(d, ContentDelta):
            return {"content": d.text}
        if isinstance(d, CallStart):
            self._calls += 1
            return {
                "tool_calls": [
                    {
                        "index": d.index,
                        "id": d.id,
                        "type": "function",
                        "function": {"name": d.name, "arguments": ""},
                    }
                ]
            }
        assert isinstance(d, ArgsDelta)
        return {"tool_calls": [{"index": d.index, "function": {"arguments": d.text}}]}

    def finish_reason(self, finish: str, had_calls: bool) -> str:
        return "tool_calls" if had_calls and finish == "stop" else finish

    @property
    def streamed_calls(self) -> bool:
        return self._calls > 0

    def body(
        self,
        cid: str,
        mid: str,
        reply: str,
        finish: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> dict[str, Any]:
        """The whole reply in OpenAI's shape: ``message.tool_calls`` and finish_reason
        ``tool_calls`` when the model called (content null when it wrote nothing else)."""
        if not self.offered:
            return P.chat_completion(cid, mid, reply, finish, prompt_tokens, completion_tokens)
        parsed = parse_tool_calls(reply, self.syntax, parallel=self.parallel, names=self.names)
        calls = [c.openai() for c in parsed.calls]
        content = parsed.content if parsed.content or not calls else None
        return P.chat_completion(
            cid,
            mid,
            content,
            self.finish_reason(finish, bool(calls)),
            prompt_tokens,
            completion_tokens,
            tool_calls=calls,
        )
