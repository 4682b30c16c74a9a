"""Continuous batching: several sequences decoded together in one llama.cpp context.

The pieces (llama.cpp's own ``tools/server`` works the same way; this is a thin layer over
llama-cpp-python's low-level API, ``llama_cpp.llama_cpp``):

- :class:`BatchEngine` owns ``n_slots`` sequence ids of an existing ``llama_cpp.Llama``'s
  context for API requests (the model is loaded once: the batch shares the window's model and
  context, created with ``n_seq_max`` = slots + 1), and sequence 0, the window's own chat
  (:meth:`BatchEngine.run_home`: ``ChatEngine.generate`` decodes a window reply there, in
  the same steps as the API's replies; the ``Llama`` object keeps the record of which tokens
  sequence 0 holds, so prefix reuse and the per-chat KV snapshots work as before).
  Each :meth:`BatchEngine.step` builds one ``llama_batch``: the next token of every generating
  sequence, then a chunk of each sequence still reading its prompt (``n_batch`` shared by the
  busy slots, so a long prompt takes several steps and never stalls the others' tokens), and
  decodes it with one ``llama_decode``. Every sequence has its own sampler chain (penalties,
  grammar, top-k/top-p/min-p/temperature, a seeded ``dist``), stop strings, token limit and
  cancel flag, and its own UTF-8-safe detokenizer.
- New sequences (:meth:`BatchEngine.submit`, any thread) wait in a queue and join between
  steps; finished ones leave at once. A cancelled or failed sequence's KV is removed at once
  (``llama_memory_seq_rm``); a finished one's stays as its slot's cache, so the next request
  that shares a prefix with it (a chat's next turn) evaluates only what is new; a request
  goes to the free slot holding the longest common prefix.
- The context is split per sequence (``kv_unified`` off): each slot, and the window's chat,
  has its own context of ``n_ctx`` tokens, so the KV cache costs ``n_ctx`` x (slots + 1).

How batch steps share the one inference thread with ordinary jobs (loads, the window's turns,
commands) - the :class:`~desklm.engine.runner.Runner` stays unchanged, the one thread that
owns the model:

- :class:`BatchLoop` submits ONE runner job of kind ``"batch"`` while sequences are waiting or
  running. The job steps the batch until it is idle, or until another job is queued: then it
  returns between two steps (the batch's state lives in the :class:`BatchEngine`, not in the
  job) and submits itself again, behind the queued jobs. So a load, a window turn or a command
  waits at most one batch step (milliseconds to a prompt chunk). A window turn then steps the
  batch itself until its reply ends (the API's sequences go on in the same steps, and new
  ones join); a load or a command runs alone, and the batch resumes after it with every
  sequence where it was.
- A sequence is cancelled from any thread (a client that went away, the server stopping):
  a waiting one is dropped at once, a running one leaves at the next step and frees its KV.
- Cancelling the batch job (the runner shutting down) cancels every sequence.

No Qt here, and no knowledge of HTTP: the API server turns a request into a :class:`Sequence`.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp
import llama_cpp.llama_cpp as ll

from desklm.engine.backends.base import FinishReason, TurnStats
from desklm.engine.prompt.stream import ReasoningClock, find_stop, partial_stop_len
from desklm.engine.runner import JobCancelled
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

PENALTY_LAST_N = 64  # llama-cpp-python's Llama default (last_n_tokens_size): same replies
MIN_CHUNK = 16  # the least prompt tokens a reading sequence gets per step


# --- a sequence's sampling ----------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingParams:
    """What a sequence's sampler chain is built from (a :class:`Settings`' sampling values)."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int = -1  # -1: a random seed

    @classmethod
    def from_settings(cls, s: Mapping[str, Any] | Any) -> SamplingParams:
        return cls(
            temperature=float(s["temperature"]),
            top_k=int(s["top_k"]),
            top_p=float(s["top_p"]),
            min_p=float(s["min_p"]),
            repeat_penalty=float(s["repeat_penalty"]),
            max_tokens=int(s["max_tokens"]),
            seed=int(s["seed"]),
        )


def build_sampler(
    model: Any, params: SamplingParams, grammar: str | None = None, grammar_root: str = "root"
) -> Any:
    """A sampler chain like ``Llama.generate``'s (the same order, so the same replies):
    repeat penalty, the grammar, then greedy at temperature 0, else top-k, typical (off),
    top-p, min-p, temperature and a seeded draw. Free it with ``llama_sampler_free``."""
    vocab = ll.llama_model_get_vocab(model)
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())

    def add(s: Any) -> None:
        ll.llama_sampler_chain_add(chain, s)

    add(
        ll.llama_sampler_init_penalties(
            ll.llama_vocab_n_tokens(vocab), PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0
        )
    )
    if grammar is not None:
        g = ll.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), grammar_root.encode("utf-8")
        )
        if not g:
            ll.llama_sampler_free(chain)
            raise DeskLMError("the grammar could not be parsed (llama.cpp's log says where)")
        add(g)
    if params.temperature == 0.0:
        add(ll.llama_sampler_init_greedy())
    else:
        seed = params.seed if params.seed >= 0 else random.randrange(2**31 - 1)
        add(ll.llama_sampler_init_top_k(params.top_k))
        add(ll.llama_sampler_init_typical(1.0, 1))
        add(ll.llama_sampler_init_top_p(params.top_p, 1))
        add(ll.llama_sampler_init_min_p(params.min_p, 1))
        add(ll.llama_sampler_init_temp(params.temperature))
        add(ll.llama_sampler_init_dist(seed))
    return chain


def grammar_text(grammar: Any) -> tuple[str, str] | None:
    """(GBNF, root rule) of a GBNF string or a ``llama_cpp.LlamaGrammar``; None for none."""
    if grammar is None:
        return None
    if isinstance(grammar, str):
        return grammar, "root"
    text, root = getattr(grammar, "_grammar", None), getattr(grammar, "_root", "root")
    if not isinstance(text, str):
        raise DeskLMError(f"not a grammar: {type(grammar).__name__}")
    return text, str(root)


# --- the text of a reply -------------------------------------------------------------------------
class ReplyText:
    """A reply's text as its tokens arrive: UTF-8 decoded incrementally (a character split
    over tokens waits for its last byte), stop strings found and held back until ruled out,
    surrounding whitespace held back (``strip``) - the same rules as ``ChatEngine.generate``.
    ``on_text`` receives pieces that add up to the final :attr:`text`."""

    def __init__(
        self,
        stops: Iterable[str],
        strip: bool,
        on_text: Callable[[str], None] | None,
        check_stops: bool = True,
    ) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.strip = strip
        self.on_text = on_text
        self.check_stops = check_stops
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.reply = ""
        self.emitted = 0

    def add(self, piece: bytes) -> bool:
        """Add a token's bytes; True when a stop string ended the reply."""
        self.reply += self._decoder.decode(piece)
        reply, emitted = self.reply, self.emitted
        cut = (
            find_stop(reply, self.stops, max(0, emitted - self.hold)) if self.check_stops else None
        )
        if cut is not None:
            self.reply = reply[:cut]
            return True
        if self.strip and emitted == 0:  # never show leading whitespace
            lead = len(reply) - len(reply.lstrip())
            emitted = lead if lead < len(reply) else 0
        safe = len(reply) - partial_stop_len(reply, self.stops, self.hold)
        if self.strip:
            safe = min(safe, len(reply.rstrip()))  # trailing whitespace waits
        if self.on_text is not None and safe > emitted:
            self.on_text(reply[emitted:safe])
        self.emitted = max(emitted, safe)
        return False

    def finish(self) -> str:
        """Flush what was held back (not a stop string after all); returns the reply."""
        self.reply += self._decoder.decode(b"", final=True)
        if self.strip and self.emitted == 0:
            self.emitted = len(self.reply) - len(self.reply.lstrip())
        end = len(self.reply.rstrip()) if self.strip else len(self.reply)
        if self.on_text is not None and end > self.emitted:
            self.on_text(self.reply[self.emitted : end])
        self.emitted = max(self.emitted, end)
        return self.reply.strip() if self.strip else self.reply

    @property
    def text(self) -> str:
        return self.reply


# --- a sequence ---------------------------------------------------------------------------------
class Sequence:
    """One request in the batch; shaped like a runner :class:`~desklm.engine.runner.Job`
    (``cancel``, ``cancelled``, ``done``, ``result``, ``future``) so callers treat both alike.

    ``tokens`` is the prompt, or ``prepare()`` makes it on the inference thread when the
    sequence is admitted (raising rejects the request: its future holds the exception).
    ``on_start()`` runs when it is admitted, ``on_text(piece)`` for each piece of the reply;
    both on the inference thread. The future resolves to ``(reply, TurnStats)``; a cancelled
    running sequence resolves to its partial reply with finish reason ``cancelled``, one
    cancelled while waiting raises :class:`JobCancelled`.
    """

    kind = "batch"

    def __init__(
        self,
        tokens: list[int] | None = None,
        *,
        prepare: Callable[[], list[int]] | None = None,
        sampling: SamplingParams | None = None,
        stops: Iterable[str] = (),
        grammar: Any = None,
        strip: bool = True,
        on_text: Callable[[str], None] | None = None,
        on_start: Callable[[], None] | None = None,
        stop_token_ids: Iterable[int] = (),
        blank_stop_ids: Iterable[int] = (),
        ignore_eos: bool = False,
        keep_ids: Iterable[int] = (),
        reasoning_open: bool | None = None,
        label: str = "",
    ) -> None:
        if tokens is None and prepare is None:
            raise ValueError("a sequence needs tokens or prepare")
        self.tokens = list(tokens) if tokens is not None else None
        self.prepare = prepare
        self.sampling = sampling or SamplingParams()
        self.stops = list(stops)
        self.grammar = grammar  # GBNF text or a LlamaGrammar (read when the sequence starts)
        self.strip = strip
        self.on_text = on_text
        self.on_start = on_start
        self.stop_token_ids = frozenset(stop_token_ids)
        self.blank_stop_ids = frozenset(blank_stop_ids)
        self.ignore_eos = ignore_eos
        self.keep_ids = frozenset(keep_ids)  # control tokens whose text the reply keeps
        # None: no reasoning count; else whether the prompt opened <think> (ChatEngine.generate)
        self.reasoning_open = reasoning_open
        self.label = label
        self.future: Future[tuple[str, TurnStats]] = Future()
        self._cancel = threading.Event()
        self._owner: BatchEngine | None = None
        self.submitted_at = time.perf_counter()
        self.live_tokens = 0  # completion tokens so far (any thread may read)
        self.token_ids: list[int] = []  # the reply's tokens (those that count: no end token)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Any thread: a waiting sequence is dropped at once, a running one leaves at the
        next step (its KV freed)."""
        self._cancel.set()
        owner = self._owner
        if owner is not None:
            owner._drop_waiting(self)

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> tuple[str, TurnStats]:
        return self.future.result(timeout)

    def __repr__(self) -> str:
        return f"<Sequence {self.label or id(self)}>"


@dataclass
class _Slot:
    """A sequence id of the context and what it holds."""

    seq_id: int
    kv: list[int] = field(default_factory=list)  # the tokens in this sequence's KV, in order
    seq: Sequence | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    next_token: int | None = None  # sampled, to be decoded in the next step
    sampler: Any = None
    text: ReplyText | None = None
    stats: TurnStats | None = None
    reasoning: ReasoningClock | None = None
    max_new: int = 0
    t_admit: float = 0.0
    t_first: float | None = None
    t_last: float = 0.0
    batch_index: int = -1  # where this slot's logits are in the step's batch (-1: none)

    @property
    def busy(self) -> bool:
        return self.seq is not None


@dataclass(frozen=True)
class BatchStats:
    """Readings for gauges and ``/metrics``: any thread."""

    slots: int
    busy: int
    waiting: int
    tokens_per_s: float  # aggregate generation rate over the last few seconds
    per_request_tokens_per_s: tuple[float, ...]  # each running sequence's rate
    tokens_total: int  # generated since the engine was made
    prompt_tokens_total: int  # prompt tokens evaluated
    requests_total: int  # sequences that finished (any way)
    steps_total: int


class BatchEngine:
    """Sequences ``first_seq .. first_seq + n_slots - 1`` of ``llm``'s context, decoded
    together. :meth:`step` and :meth:`close` on the inference thread only; :meth:`submit`,
    :meth:`cancel_all`, :meth:`stats` from any thread."""

    def __init__(
        self,
        llm: llama_cpp.Llama,
        n_slots: int,
        *,
        n_ctx_slot: int | None = None,
        first_seq: int = 1,
        n_batch: int | None = None,
        keep_cache: bool = True,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        ctx = llm._ctx.ctx
        n_seq_max = int(ll.llama_n_seq_max(ctx))
        if first_seq + n_slots > n_seq_max:
            raise DeskLMError(
                f"the context holds {n_seq_max} sequences; {n_slots} slots from "
                f"sequence {first_seq} do not fit"
            )
        self.llm = llm
        self.ctx = ctx
        self.model = llm._model.model
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.mem = ll.llama_get_memory(ctx)
        self.n_ctx_slot = int(n_ctx_slot or ll.llama_n_ctx_seq(ctx))
        self.n_batch = int(n_batch or ll.llama_n_batch(ctx))
        self.keep_cache = keep_cache
        self.on_step = on_step
        self.slots = [_Slot(first_seq + i) for i in range(n_slots)]
        # sequence 0, the window's chat, when the slots leave it free: stepped together with
        # the slots while run_home drives it (never given to a request from the queue)
        self.home: _Slot | None = _Slot(0) if first_seq > 0 else None
        self._all = ([self.home] if self.home is not None else []) + self.slots
        self._batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._batch_live = True
        self._waiting: deque[Sequence] = deque()
        self._lock = threading.Lock()
        self._piece = ctypes.create_string_buffer(256)
        self._recent: deque[tuple[float, int]] = deque(maxlen=256)  # (time, tokens) per step
        self._tokens_total = 0
        self._prompt_total = 0
        self._requests_total = 0
        self._steps = 0
        self.closed = False
        self.loop: BatchLoop | None = None
        self._clean = False  # the slots' KV emptied (at the first step: inference thread)

    # -- any thread --
    def submit(self, seq: Sequence) -> Sequence:
        """Queue ``seq``; it joins the batch at the next step with a free slot."""
        with self._lock:
            if self.closed:
                raise DeskLMError("the model was unloaded")
            seq._owner = self
            self._waiting.append(seq)
        return seq

    def _drop_waiting(self, seq: Sequence) -> None:
        with self._lock:
            try:
                self._waiting.remove(seq)
            except ValueError:
                return
        if not seq.future.done():
            seq.future.set_exception(JobCancelled("cancelled before it started"))

    def cancel_all(self) -> int:
        """Cancel every waiting and running sequence; returns how many."""
        with self._lock:
            seqs = list(self._waiting) + [s.seq for s in self.slots if s.seq is not None]
        for q in seqs:
            q.cancel()
        return len(seqs)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.busy)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._waiting) or any(s.busy for s in self.slots)

    def stats(self, window_s: float = 3.0) -> BatchStats:
        now = time.perf_counter()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= window_s]
        rate = 0.0
        if len(recent) >= 2:
            span = recent[-1][0] - recent[0][0]
            rate = sum(n for _t, n in recent[1:]) / span if span > 0 else 0.0
        per = []
        for s in list(self.slots):
            if (
                s.seq is not None
                and s.t_first is not None
                and s.seq.live_tokens > 1
                and s.t_last > s.t_first
            ):
                per.append((s.seq.live_tokens - 1) / (s.t_last - s.t_first))
        return BatchStats(
            len(self.slots),
            self.busy,
            self.waiting,
            rate,
            tuple(per),
            self._tokens_total,
            self._prompt_total,
            self._requests_total,
            self._steps,
        )

    def kv_tokens(self, slot: int) -> int:
        """Cells sequence ``slot`` holds in the KV cache (llama.cpp's own count)."""
        seq_id = self.slots[slot].seq_id
        lo = int(ll.llama_memory_seq_pos_min(self.mem, seq_id))
        hi = int(ll.llama_memory_seq_pos_max(self.mem, seq_id))
        return 0 if hi < 0 else hi - lo + 1

    # -- the inference thread --
    def step(self) -> int:
        """Admit waiting sequences, decode one batch, sample, let finished ones leave.
        Returns the tokens decoded (0: nothing to do)."""
        if self.closed:
            return 0
        if not self._clean:  # start clean: nothing of an earlier owner's
            for s in self.slots:
                ll.llama_memory_seq_rm(self.mem, s.seq_id, -1, -1)
            self._clean = True
        self._reap_cancelled()
        self._admit()
        n = self._fill()
        if n == 0:
            return 0
        t0 = time.perf_counter()
        rc = int(ll.llama_decode(self.ctx, self._batch))
        # the window's Llama must not sample from this step's logits as if they were its own
        self.llm._requires_eval = True
        if rc != 0:
            self._decode_failed(rc)
            return n
        now = time.perf_counter()
        generated = self._sample(now)
        self._steps += 1
        self._recent.append((now, generated))
        log.debug("batch step: %d tokens, %d sampled in %.1f ms", n, generated, (now - t0) * 1000)
        if self.on_step is not None:
            self.on_step()
        return n

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Step until idle (or ``until()``): for tests and benchmarks without a runner."""
        while self.has_work() and not (until is not None and until()):
            self.step()

    def run_home(
        self, seq: Sequence, should_stop: Callable[[], bool] | None = None
    ) -> tuple[str, TurnStats]:
        """The window's reply as sequence 0, decoded together with the API's sequences until
        it ends (inference thread: a window turn's job calls this, so the slots' sequences
        advance with it, and ones that arrive meanwhile join between steps).

        The ``Llama`` object stays the record of what sequence 0 holds: its token ids are
        read here (a KV snapshot restored, a reset, an earlier turn) so the prompt reuses
        what they share, and written back at the end (the next turn, the gauges and the
        chat's snapshot read them). ``should_stop()`` is asked each step (the window's Stop).
        The reply's KV stays when it ends or is stopped; a failure clears it."""
        home = self.home
        if home is None or home.busy or self.closed:
            raise DeskLMError("the window's sequence is not free")
        tokens, sampler = self._prepared(seq)
        llm = self.llm
        home.kv = [int(t) for t in llm._input_ids[: llm.n_tokens]]
        try:
            self._start(home, seq, tokens, sampler)
            while home.busy:
                if should_stop is not None and should_stop():
                    seq._cancel.set()
                if self.step() == 0 and home.busy:  # nothing to decode: cannot go on
                    self._leave(home, error=DeskLMError("generation stalled"))
        except BaseException as e:
            if home.busy:  # a step raised (not a sequence's own failure): nothing half-kept
                self._leave(home, error=e)
            raise
        finally:
            n = len(home.kv)
            llm.input_ids[:n] = home.kv
            llm.n_tokens = n
        return seq.future.result()

    def abandon(self, reason: str) -> int:
        """Fail every waiting and running sequence without touching llama.cpp (any thread:
        for when no step will run again). Returns how many."""
        with self._lock:
            seqs = list(self._waiting) + [s.seq for s in self.slots if s.seq is not None]
            self._waiting.clear()
        for q in seqs:
            q._cancel.set()
            if not q.future.done():
                q.future.set_exception(JobCancelled(reason))
        return len(seqs)

    def close(self) -> None:
        """Fail what is left ("the model was unloaded") and free the batch. Inference thread."""
        with self._lock:
            self.closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for q in waiting:
            if not q.future.done():
                q.future.set_exception(DeskLMError("the model was unloaded"))
        for s in self.slots:
            if s.seq is not None:
                self._leave(s, error=DeskLMError("the model was unloaded"))
        if self._batch_live:
            ll.llama_batch_free(self._batch)
            self._batch_live = False

    # -- the steps --
    def _reap_cancelled(self) -> None:
        for s in self._all:
            if s.seq is not None and s.seq.cancelled:
                self._leave(s, FinishReason.CANCELLED)

    def _admit(self) -> None:
        while True:
            free = [s for s in self.slots if not s.busy]
            if not free:
                return
            with self._lock:
                if not self._waiting:
                    return
                seq = self._waiting.popleft()
            if seq.cancelled:
                if not seq.future.done():
                    seq.future.set_exception(JobCancelled("cancelled before it started"))
                continue
            try:
                tokens, sampler = self._prepared(seq)
            except BaseException as e:  # the request's own failure, delivered to its caller
                if not seq.future.done():
                    seq.future.set_exception(e)
                continue
            self._start(max(free, key=lambda s: _common_prefix(s.kv, tokens)), seq, tokens, sampler)

    def _prepared(self, seq: Sequence) -> tuple[list[int], Any]:
        """``seq``'s prompt (made now if it has a ``prepare``), checked against a slot's
        context, and its sampler chain; raises what the request did wrong."""
        tokens = seq.tokens if seq.tokens is not None else seq.prepare()  # type: ignore[misc]
        if not tokens:
            raise DeskLMError("the prompt is empty")
        if len(tokens) >= self.n_ctx_slot:
            raise DeskLMError(
                f"prompt needs {len(tokens)} tokens but the context holds {self.n_ctx_slot}"
            )
        grammar = grammar_text(seq.grammar) or (None, "root")
        return tokens, build_sampler(self.model, seq.sampling, *grammar)

    def _start(self, slot: _Slot, seq: Sequence, tokens: list[int], sampler: Any) -> None:
        """``seq`` takes ``slot``: the KV the prompt shares with the slot's cache stays, the
        rest is read in the next steps."""
        reuse = min(_common_prefix(slot.kv, tokens), len(tokens) - 1)
        if reuse < len(slot.kv):
            ll.llama_memory_seq_rm(self.mem, slot.seq_id, reuse, -1)
            del slot.kv[reuse:]
        now = time.perf_counter()
        slot.seq, slot.sampler = seq, sampler
        slot.pending = list(tokens[reuse:])
        slot.next_token = None
        slot.text = ReplyText(seq.stops, seq.strip, seq.on_text, check_stops=not seq.ignore_eos)
        slot.reasoning = None if seq.reasoning_open is None else ReasoningClock(seq.reasoning_open)
        slot.stats = TurnStats(
            prompt_tokens=len(tokens), prompt_tokens_reused=reuse, n_ctx=self.n_ctx_slot
        )
        slot.max_new = min(seq.sampling.max_tokens, self.n_ctx_slot - len(tokens))
        slot.t_admit, slot.t_first, slot.t_last = now, None, now
        seq.live_tokens = 0
        seq.token_ids = []
        if seq.on_start is not None:
            try:
                seq.on_start()
            except Exception:
                log.exception("a sequence's start callback failed")

    def _fill(self) -> int:
        """Write this step's tokens into the batch: each generating slot's next token, then
        prompt chunks sharing what is left of ``n_batch``."""
        b = self._batch
        n = 0

        def put(slot: _Slot, tok: int, logits: bool) -> None:
            nonlocal n
            b.token[n] = tok
            b.pos[n] = len(slot.kv)
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = slot.seq_id
            b.logits[n] = 1 if logits else 0
            slot.kv.append(tok)
            if logits:
                slot.batch_index = n
            n += 1

        for s in self._all:
            s.batch_index = -1
            if s.busy and s.next_token is not None:
                put(s, s.next_token, True)
                s.next_token = None
        reading = [s for s in self._all if s.busy and s.pending]
        busy = max(1, sum(1 for s in self._all if s.busy))
        share = max(MIN_CHUNK, self.n_batch // busy)
        for i, s in enumerate(reading):
            room = self.n_batch - n
            if room <= 0:
                break
            # the rest is shared by this and the slots after it
            chunk = min(len(s.pending), share, max(1, room // (len(reading) - i)))
            take, s.pending = s.pending[:chunk], s.pending[chunk:]
            for j, tok in enumerate(take):
                put(s, tok, not s.pending and j == len(take) - 1)
            self._prompt_total += len(take)
        b.n_tokens = n
        return n

    def _sample(self, now: float) -> int:
        generated = 0
        others = sum(1 for s in self._all if s.batch_index >= 0 and s.seq is not None) - 1
        for s in self._all:
            if s.batch_index < 0 or s.seq is None:
                continue
            seq, stats, text = s.seq, s.stats, s.text
            assert stats is not None and text is not None
            stats.shared_with = max(stats.shared_with, others)
            tok = int(ll.llama_sampler_sample(s.sampler, self.ctx, s.batch_index))
            if s.t_first is None:
                s.t_first = now
                stats.ttft_s = now - s.t_admit
            s.t_last = now
            if seq.cancelled:
                self._leave(s, FinishReason.CANCELLED)
                continue
            stop_tok = tok in seq.stop_token_ids and not (
                tok in seq.blank_stop_ids and not text.text.strip()
            )
            if (ll.llama_vocab_is_eog(self.vocab, tok) or stop_tok) and not seq.ignore_eos:
                self._leave(s, FinishReason.STOP)
                continue
            stats.completion_tokens += 1
            seq.token_ids.append(tok)
            seq.live_tokens = stats.completion_tokens
            generated += 1
            self._tokens_total += 1
            try:
                stopped = text.add(self._token_bytes(tok, tok in seq.keep_ids))
            except Exception as e:  # on_text failed: the caller's problem, reported to it
                self._leave(s, error=e)
                continue
            if s.reasoning is not None:
                s.reasoning.token(text.text)
            if stopped:
                self._leave(s, FinishReason.STOP)
            elif stats.completion_tokens >= s.max_new:
                self._leave(s, FinishReason.LENGTH)
            else:
                s.next_token = tok
        return generated

    def _token_bytes(self, tok: int, special: bool = False) -> bytes:
        buf = self._piece
        n = int(ll.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special))
        if n < 0:  # longer than the buffer: grow it
            self._piece = ctypes.create_string_buffer(-n)
            n = int(
                ll.llama_token_to_piece(self.vocab, tok, self._piece, len(self._piece), 0, special)
            )
        return self._piece.raw[: max(0, n)]

    def _decode_failed(self, rc: int) -> None:
        reason = {1: "the KV cache has no room for this batch", 2: "decoding was aborted"}.get(
            rc, f"llama_decode failed ({rc})"
        )
        log.error("batch step failed: %s", reason)
        for s in self._all:
            if s.busy and (s.batch_index >= 0 or s.kv):
                self._leave(s, error=DeskLMError(f"generation failed: {reason}"))

    def _leave(
        self, s: _Slot, finish: FinishReason = FinishReason.STOP, error: BaseException | None = None
    ) -> None:
        """The slot's sequence is done: resolve its future, free the sampler; free the KV
        unless it is a finished reply's (kept as the slot's cache)."""
        seq, stats, text, reasoning = s.seq, s.stats, s.text, s.reasoning
        s.seq, s.stats, s.text, s.next_token, s.pending = None, None, None, None, []
        s.reasoning = None
        if s.sampler is not None:
            ll.llama_sampler_free(s.sampler)
            s.sampler = None
        home = s is self.home
        if (
            error is not None
            or (finish == FinishReason.CANCELLED and not home)  # a stopped chat keeps its KV
            or not (self.keep_cache or home)
        ):
            ll.llama_memory_seq_rm(self.mem, s.seq_id, -1, -1)
            s.kv = []
        if not home:
            self._requests_total += 1
        if seq is None or seq.future.done():
            return
        if error is not None:
            seq.future.set_exception(error)
            return
        assert stats is not None and text is not None
        try:
            reply = text.finish()
        except Exception as e:  # on_text failed while flushing
            seq.future.set_exception(e)
            return
        end = time.perf_counter()
        stats.finish_reason = finish
        stats.total_s = end - s.t_admit
        stats.context_used = len(s.kv) if home else stats.prompt_tokens + stats.completion_tokens
        if reasoning is not None:
            stats.reasoning_tokens, stats.reasoning_s = reasoning.tokens, reasoning.seconds
        evaluated = stats.prompt_tokens - stats.prompt_tokens_reused
        if s.t_first is not None and s.t_first > s.t_admit and evaluated > 0:
            stats.prompt_tokens_per_s = evaluated / (s.t_first - s.t_admit)
        if s.t_first is not None and stats.completion_tokens > 1 and s.t_last > s.t_first:
            stats.gen_tokens_per_s = (stats.completion_tokens - 1) / (s.t_last - s.t_first)
        seq.future.set_result((reply, stats))


class _SlotsOwner(Protocol):
    """What :func:`batch_for` reads of a loaded ``ChatEngine`` (which imports this module)."""

    llm: llama_cpp.Llama | None
    n_slots: int
    batch: BatchEngine | None
    settings: Any

    @property
    def n_ctx(self) -> int: ...


def batch_for(eng: _SlotsOwner | Any) -> BatchEngine | None:
    """The loaded engine's batch of API slots, made on first use; None when the model was
    loaded with parallel 1 (or none is loaded). Any thread: making one touches no KV."""
    if not getattr(eng, "n_slots", 0):  # parallel 1, or a remote backend: nothing to batch
        return None
    if eng.batch is None and eng.llm is not None and eng.n_slots > 0:
        eng.batch = BatchEngine(
            eng.llm,
            eng.n_slots,
            n_ctx_slot=eng.n_ctx,
            first_seq=1,
            n_batch=int(eng.settings["n_batch"]) if eng.settings else None,
        )
    batch: BatchEngine | None = eng.batch
    return batch


def batch_loop(runner: _RunnerLike, eng: _SlotsOwner | Any) -> BatchLoop | None:
    """The :class:`BatchLoop` of ``eng``'s batch on ``runner`` (made on first use), or None
    when the engine has no slots."""
    batch = batch_for(eng)
    if batch is None:
        return None
    if batch.loop is None or batch.loop.runner is not runner:
        batch.loop = BatchLoop(runner, batch)
    return batch.loop


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- driving a batch on the runner ---------------------------------------------------------------
class _RunnerLike(Protocol):
    def submit(
        self, fn: Callable[[Any], Any], kind: str = ..., *, interrupt: bool = ...
    ) -> Any: ...

    def pending(self) -> list[Any]: ...


class BatchLoop:
    """Steps a :class:`BatchEngine` as a job of kind ``"batch"`` on a runner, yielding to any
    other job queued behind it (see the module's docstring)."""

    KIND = "batch"

    def __init__(self, runner: _RunnerLike, batch: BatchEngine) -> None:
        self.runner = runner
        self.batch = batch
        self._lock = threading.Lock()
        self._job: Any = None

    def submit(self, seq: Sequence) -> Sequence:
        """Queue ``seq`` and make sure a batch job is queued or running. Any thread."""
        self.batch.submit(seq)
        self._wake()
        return seq

    def _wake(self) -> None:
        with self._lock:
            if self._job is None:
                job = self.runner.submit(self._run, self.KIND, interrupt=False)
                self._job = job
                job.future.add_done_callback(lambda _f, job=job: self._ended(job))

    def _ended(self, job: Any) -> None:
        """A batch job that never ran (cancelled while queued: the runner shutting down)
        leaves its sequences waiting for nothing: they fail now."""
        with self._lock:
            if self._job is not job:
                return  # it ran (and cleared itself)
            self._job = None
        self.batch.abandon("the model is shutting down")

    def _others_waiting(self) -> bool:
        return any(j.kind != self.KIND for j in self.runner.pending())

    def _run(self, job: Any) -> int:
        steps = 0
        try:
            while not job.cancelled and self.batch.has_work() and not self._others_waiting():
                self.batch.step()
                steps += 1
            if job.cancelled:
                self.batch.cancel_all()
                self.batch.step()  # the running ones leave and free their KV now
        finally:
            with self._lock:
                self._job = None
                again = self.batch.has_work() and not self.batch.closed
            if again:  # behind the jobs that were waiting
                try:
                    self._wake()
                except DeskLMError:  # the runner is closing: nobody will step them
                    self.batch.cancel_all()
        return steps
