"""ChatEngine: one loaded model over ``llama_cpp.Llama``; load, stream, stop, reset, threads.

Not thread safe by design: exactly one thread (the runtime's inference thread, see
:mod:`desklm.engine.runner`) calls into an engine. The one exception is :meth:`ChatEngine.stop`,
which only sets a ``threading.Event`` and may be called from any thread. The event is checked
between tokens, and during prompt evaluation through ``llama_set_abort_callback`` (installed only
while generate() reads a prompt: ggml calls it after every graph node) so that a long
prefill is cut short too.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import llama_cpp
import llama_cpp.llama_cpp as _llama_lowlevel

from desklm.engine.backends.base import FinishReason, LoadCancelled, LoadInfo, TurnStats
from desklm.engine.backends.local.batch import BatchEngine, SamplingParams, batch_for
from desklm.engine.backends.local.batch import Sequence as BatchSequence
from desklm.engine.models.gguf_info import GGUFInfo, read_gguf
from desklm.engine.prompt.chat_format import (
    BASE_MODEL_NOTE,
    ChatTemplate,
    Part,
    choose_template,
    fallback_template,
    model_kind,
)
from desklm.engine.prompt.stream import ReasoningClock, find_stop, partial_stop_len
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")
llama_log = logging.getLogger("desklm.llama")

KV_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}


# --- llama.cpp's own log ----------------------------------------------------------------------
class _LlamaLogCapture:
    """Routes llama.cpp's log into the ``desklm.llama`` logger and keeps the recent lines.

    Replaces llama-cpp-python's default callback, which prints to ``sys.stderr`` (``None`` in a
    windowed build). The recent error and warning lines give a failed load its real reason.
    """

    # ggml_log_level as of the bundled llama.cpp (llama-cpp-python's own table is out of date)
    DEBUG, INFO, WARN, ERROR, CONT = 1, 2, 3, 4, 5
    LEVELS: ClassVar[dict[int, int]] = {
        0: logging.DEBUG,
        DEBUG: logging.DEBUG,
        INFO: logging.DEBUG,
        WARN: logging.WARNING,
        ERROR: logging.ERROR,
    }

    def __init__(self) -> None:
        self.lines: deque[tuple[int, str]] = deque(maxlen=200)
        self._partial = ""
        self._level = 1
        self._lock = threading.Lock()
        self._cb = llama_cpp.llama_log_callback(self._callback)
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))

    def _callback(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        try:
            s = text.decode("utf-8", errors="replace") if text else ""
            with self._lock:
                if level != self.CONT:
                    self._level = level
                self._partial += s
                while "\n" in self._partial:
                    line, self._partial = self._partial.split("\n", 1)
                    if line.strip():
                        self.lines.append((self._level, line.strip()))
                        llama_log.log(self.LEVELS.get(self._level, logging.DEBUG), "%s", line)
        except Exception:  # never raise into C
            pass

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def problems_since(self, lines_before: list[tuple[int, str]]) -> list[str]:
        with self._lock:
            now = list(self.lines)
        fresh = now[len(lines_before) :] if now[: len(lines_before)] == lines_before else now
        return [t for lvl, t in fresh if lvl in (self.WARN, self.ERROR)]

    def snapshot(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self.lines)


LLAMA_LOG = _LlamaLogCapture()


# llama.cpp follows the specific cause with generic lines; these never explain anything
_GENERIC = (
    "failed to load model",
    "failed to initialize",
    "failed to create",
    "failed to init",
    "unable to load model",
)


def _reason_from_log(lines: list[str], fallback: str) -> str:
    """The most telling llama.cpp line: an allocation failure first, else the first specific
    error (llama.cpp prints the cause, then generic 'failed to load model' lines)."""
    for needle in ("failed to allocate", "out of memory", "unable to allocate", "cannot allocate"):
        for line in lines:
            if needle in line.lower():
                return f"out of memory: {line}"
    for line in lines:
        low = line.lower()
        if any(g in low for g in _GENERIC):
            continue
        if any(
            w in low
            for w in (
                "error",
                "failed",
                "invalid",
                "unknown",
                "not supported",
                "corrupt",
                "wrong",
                "requires",
            )
        ):
            text = line.split("error loading model: ", 1)[-1]
            return " ".join(text.split())
    return lines[-1] if lines else fallback


def _release_freed_memory() -> None:
    """Give a freed model's buffers back to the OS. glibc keeps freed heap for reuse: measured
    here, each reload grew RSS ~8 MB for good; with malloc_trim it returns to the baseline."""
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to do
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _suggest(reason: str) -> str:
    low = reason.lower()
    if "flash_attn" in low or "flash attention" in low:
        return "; turn flash attention on, or use kv_cache_type f16"
    if "out of memory" in low or "allocate" in low:
        return "; lower the context length or GPU layers, or use a smaller KV cache type"
    if "context" in low:
        return "; try a smaller context length"
    return ""


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _limit_note() -> str:
    """Which limit the process is under, when it is tighter than the machine's free RAM."""
    try:
        import psutil

        from desklm.engine.memlimit import memory_limits, tightest

        lim = tightest(memory_limits())
        if lim is not None and lim.available < psutil.virtual_memory().available:
            return f" (this process is limited by its {lim.source} to {_mib(lim.limit)})"
    except Exception:  # a note, never a second failure
        pass
    return ""


def allocation_reason(
    problems: list[str], exc: BaseException, info: GGUFInfo, s: Settings
) -> str | None:
    """Name what an allocation that failed during a load was for, and what to lower.

    Measured on this llama.cpp: a batch's logits (n_batch x vocabulary x 4 bytes) are both
    llama-cpp-python's own score array (a numpy MemoryError) and most of llama.cpp's compute
    buffer; with a 262,144-token vocabulary that is 512 MiB at n_batch 512, more than the
    model and its KV cache. The KV cache grows with the context length instead.
    """
    import re

    n_vocab = int(info.arrays.get("tokenizer.ggml.tokens", 0) or 0)
    n_ubatch = min(512, int(s["n_batch"]))
    text = " ".join([*problems, str(exc)])
    low = text.lower()
    m = re.search(
        r"unable to allocate .* for an array with shape \((\d+), (\d+)\)", text, re.IGNORECASE
    )
    if isinstance(exc, MemoryError) or m:
        if m and n_vocab and int(m.group(2)) == n_vocab:
            rows = int(m.group(1))
            smaller = max(8, rows // 8)
            return (
                f"out of memory: the logits buffer for a batch of {rows} tokens x a "
                f"vocabulary of {n_vocab:,} tokens ({_mib(rows * n_vocab * 4)}) could not be "
                "allocated"
                f"{_limit_note()}; lower the batch size (n_batch {smaller} needs "
                f"{_mib(smaller * n_vocab * 4)})"
            )
        return f"out of memory while loading ({exc}){_limit_note()}"
    if not any(
        w in low
        for w in (
            "failed to allocate",
            "insufficient memory",
            "out of memory",
            "unable to allocate",
        )
    ):
        return None
    size = re.search(r"buffer of size (\d+)", text)
    nbytes = int(size.group(1)) if size else 0
    what = f" of {_mib(nbytes)}" if nbytes else ""
    if "kv cache" in low:
        return (
            f"out of memory: the KV cache{what} for a context of {s['n_ctx']} tokens could "
            f"not be allocated{_limit_note()}; lower the context length, or use "
            "kv_cache_type q8_0 with flash attention"
        )
    if "compute" in low or "output buffer" in low:
        logits = n_ubatch * n_vocab * 4
        if nbytes and logits >= nbytes / 2:
            return (
                f"out of memory: llama.cpp's compute buffer{what} could not be allocated; "
                f"{_mib(logits)} of it are the logits of a {n_ubatch}-token batch x a "
                f"{n_vocab:,}-token vocabulary{_limit_note()}; lower the batch size "
                f"(n_batch)"
            )
        return (
            f"out of memory: llama.cpp's compute buffer{what} could not be allocated"
            f"{_limit_note()}; lower the batch size (n_batch) or the context length"
        )
    return None


def check_load_settings(settings: Settings, info: GGUFInfo, clamp: bool = False) -> list[str]:
    """Apply the model's limits to ``settings``; raise with a reason for impossible values.

    With ``clamp`` (settings saved earlier, e.g. for a model with a longer context), values
    above the model's limits are lowered to them with a note instead of refused.
    Returns notes (e.g. GPU layers > 0 without GPU support) that are warnings, not errors.
    """
    if info.context_length:
        settings.limits["n_ctx"] = info.context_length
    if info.block_count:
        settings.limits["n_gpu_layers"] = info.block_count + 1  # +1: the output layer
    notes = settings.clamp_to_limits() if clamp else []
    for name in ("n_ctx", "n_gpu_layers"):
        settings.check(name, settings[name])
    if settings["kv_cache_type"] != "f16" and not settings["flash_attn"]:
        raise DeskLMError(
            f"kv_cache_type {settings['kv_cache_type']} needs flash attention: turn flash_attn "
            "on, or use kv_cache_type f16"
        )
    if settings["n_gpu_layers"] != 0 and not llama_cpp.llama_supports_gpu_offload():
        notes.append(
            "GPU layers requested, but this llama.cpp build has no GPU support: running on CPU"
        )
    return notes


_PARAMS_LOCK = threading.RLock()  # re-entrant: both patches wrap one load


class _model_params_with_progress:
    """Give ``Llama()`` model params that carry our progress callback, for one load.

    ``Llama.__init__`` takes no progress callback, but builds its params from
    ``llama_cpp.llama_cpp.llama_model_default_params()`` at call time; this wraps that function
    for the duration of one load (under a lock). The callback reports real load progress and,
    by returning False, lets a load be cancelled (quitting during a load returns promptly).
    """

    def __init__(self, callback: Any) -> None:
        self.callback = callback

    def __enter__(self) -> None:
        _PARAMS_LOCK.acquire()
        self.orig = _llama_lowlevel.llama_model_default_params
        orig, cb = self.orig, self.callback

        def params() -> Any:
            p = orig()
            p.progress_callback = cb
            p.progress_callback_user_data = None
            return p

        _llama_lowlevel.llama_model_default_params = params

    def __exit__(self, *exc: object) -> None:
        _llama_lowlevel.llama_model_default_params = self.orig
        _PARAMS_LOCK.release()


class _context_params_for_slots:
    """Give ``Llama()`` a context of ``n_seq`` sequences, split (not unified), for one load.

    ``Llama.__init__`` has no ``n_seq_max`` argument but builds its context params from
    ``llama_context_default_params()`` at call time (as :class:`_model_params_with_progress`).
    Split: llama.cpp gives each sequence ``n_ctx / n_seq_max`` cells of its own.
    """

    def __init__(self, n_seq: int) -> None:
        self.n_seq = n_seq

    def __enter__(self) -> None:
        _PARAMS_LOCK.acquire()
        self.orig = _llama_lowlevel.llama_context_default_params
        orig, n_seq = self.orig, self.n_seq

        def params() -> Any:
            p = orig()
            p.n_seq_max = n_seq
            p.kv_unified = False
            return p

        _llama_lowlevel.llama_context_default_params = params

    def __exit__(self, *exc: object) -> None:
        _llama_lowlevel.llama_context_default_params = self.orig
        _PARAMS_LOCK.release()


# --- the engine -------------------------------------------------------------------------------
class ChatEngine:
    def __init__(self) -> None:
        self.llm: llama_cpp.Llama | None = None
        self.info: GGUFInfo | None = None
        self.load_info: LoadInfo | None = None
        self.settings: Settings | None = None  # the load settings in effect
        self.template: ChatTemplate | None = None
        self._stop = threading.Event()
        self._abort_cb = llama_cpp.ggml_abort_callback(self._abort_check)
        self._stop_token_ids: set[int] = set()
        self._blank_stop_ids: set[int] = set()
        self._progress_fn: Callable[[float], None] | None = None
        self._progress_cb = llama_cpp.llama_progress_callback(self._on_progress)
        self.live_tokens = 0  # completion tokens of the running reply, readable from any thread
        self.kv_snapshots = True  # see kvcache: per-chat snapshots of this context
        self.ignore_eos = False  # benchmarks only: generate exactly max_tokens
        self.check_fit = True  # refuse loads the memory estimate says cannot fit
        self.probe = True  # load unknown files in a child process first (local.probe)
        self.last_probe_s = 0.0
        self.last_fit: Any = None
        # Set by the runner: True once the running job was cancelled. Checked with the stop
        # Event, so a cancel that lands before load()/generate() clear the Event is not lost.
        self.cancel_hook: Callable[[], bool] | None = None
        self.base_model = False
        self._space_prefix = False
        self._vocab_has: Callable[[str], bool] = lambda t: False
        self._special_text = ("", "")
        self._file_stamp: tuple[int, int, int, int] | None = None  # the model file at load
        # API slots decoded together: sequences 1..n_slots of the same context (0 with
        # parallel 1: API requests then run one at a time). ``batch`` is their BatchEngine,
        # made on first use by engine.backends.local.batch.batch_for (closed on unload).
        self.n_slots = 0
        self.batch: BatchEngine | None = None
        self._n_ctx_seq = 0
        # Reserve the ``parallel`` setting's slots at load. The runtime turns this off for the
        # window and ``desklm chat`` while no API is listening: each slot is a context of
        # n_ctx tokens of KV cache, memory nobody uses until a client connects.
        self.api_slots = True

    # -- lifecycle --
    @property
    def loaded(self) -> bool:
        return self.llm is not None

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self.cancel_hook is not None and self.cancel_hook())

    def _abort_check(self, _data: ctypes.c_void_p) -> bool:
        return self._stopping()  # called only while _arm_abort(True) has it installed

    def _arm_abort(self, on: bool) -> None:
        """Install the abort callback (``on``: a prompt is being read, Stop must cut it) or
        remove it. ggml calls it after every graph node, a Python call under the GIL each
        time; installed for good it cost ~5% of generation speed and ~8% of prompt speed on
        the embedded model (measured with and without it)."""
        llm = self.llm
        if llm is None:
            return
        cb = self._abort_cb if on else llama_cpp.ggml_abort_callback()  # NULL: none
        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, cb, None)

    def _on_progress(self, progress: float, _data: ctypes.c_void_p) -> bool:
        try:
            if self._progress_fn is not None:
                self._progress_fn(float(progress))
        except Exception:  # never raise into C
            log.exception("progress callback failed")
        return not self._stopping()

    def load(
        self,
        path: str | Path,
        settings: Settings,
        progress: Callable[[float], None] | None = None,
        clamp: bool = False,
    ) -> LoadInfo:
        """Load a model; on failure the previously loaded model (if any) is kept.

        ``progress(fraction)`` is called during the load. :meth:`stop` cancels a load in
        progress (raises :class:`LoadCancelled`; the previous model is not restored then).
        ``clamp``: lower settings above the model's limits (with a note) instead of refusing;
        for saved settings. ``self.settings`` then holds the values used.
        """
        info = read_gguf(path)  # raises with the reason before llama.cpp sees a bad file
        settings = settings.copy()
        notes = check_load_settings(settings, info, clamp=clamp)
        previous = (self.info.path, self.settings) if self.info and self.settings else None
        self.unload()
        self._stop.clear()
        self._progress_fn = progress
        try:
            self._load(info, settings, notes)
        except DeskLMError:
            if self._stopping():
                raise LoadCancelled("loading cancelled") from None
            if previous is not None:
                try:
                    self._load(read_gguf(previous[0]), previous[1], [])
                except DeskLMError:
                    log.exception("could not restore the previous model")
            raise
        finally:
            self._progress_fn = None
        assert self.load_info is not None
        return self.load_info

    def slots_asked(self, s: Settings | None = None) -> int:
        """The API slots a load makes: the ``parallel`` setting while :attr:`api_slots` is
        on, else 1 (the window's chat alone, no slots' KV cache)."""
        s = s if s is not None else self.settings
        return int(s["parallel"]) if self.api_slots and s is not None else 1

    @property
    def slots_missing(self) -> bool:
        """Loaded without the API slots the setting asks for (loaded while no API listened):
        a reload makes them."""
        from desklm.engine.models.fit import n_sequences

        return self.loaded and n_sequences(self.slots_asked()) - 1 > self.n_slots

    def _check_fit(self, info: GGUFInfo, s: Settings, notes: list[str]) -> None:
        """Refuse a load the memory estimate says cannot fit, with the numbers; lower the
        parallel slots (with a note saying why) where that makes it fit."""
        from desklm.engine.models.fit import NO_FIT, fit_parallel

        parallel, est, why = fit_parallel(
            info,
            s["n_ctx"],
            self.slots_asked(s),
            s["n_gpu_layers"],
            s["kv_cache_type"],
            n_ubatch=min(512, s["n_batch"]),
            flash_attn=s["flash_attn"],
            gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        )
        if why:
            s.set("parallel", parallel)
            notes.append(why)
            log.warning("%s", why)
        self.last_fit = est
        if est.verdict == NO_FIT:
            raise DeskLMError(
                f"{info.path.name} will not fit: "
                + "; ".join(est.reasons)
                + "; lower the context length or GPU layers (or press Auto)"
            )

    def _load(self, info: GGUFInfo, s: Settings, notes: list[str]) -> None:
        if self.check_fit:
            self._check_fit(info, s, notes)
        from desklm.engine.models.catalog import is_embedded

        if self.probe and not is_embedded(info.path):  # sha256-verified instead
            from desklm.engine.backends.local.probe import probe

            self.last_probe_s = probe(info.path)
        before = LLAMA_LOG.snapshot()
        t0 = time.perf_counter()
        kv = KV_TYPES[s["kv_cache_type"]]
        from desklm.engine.models.fit import n_sequences

        n_seq = n_sequences(self.slots_asked(s))
        slots = _context_params_for_slots(n_seq) if n_seq > 1 else contextlib.nullcontext()
        try:
            with _model_params_with_progress(self._progress_cb), slots:
                llm = llama_cpp.Llama(
                    model_path=str(info.path),
                    n_ctx=s["n_ctx"] * n_seq,
                    n_threads=s["n_threads"],
                    n_threads_batch=s["n_threads_batch"],
                    n_gpu_layers=s["n_gpu_layers"],
                    n_batch=s["n_batch"],
                    n_ubatch=min(512, s["n_batch"]),
                    flash_attn=s["flash_attn"],
                    use_mmap=s["use_mmap"],
                    use_mlock=s["use_mlock"],
                    type_k=kv,
                    type_v=kv,
                    swa_full=True,  # a sliding-window cache could not roll back: no prefix reuse
                    verbose=False,
                )
        except Exception as e:  # llama-cpp-python raises ValueError/RuntimeError with no cause
            problems = LLAMA_LOG.problems_since(before)
            mem = allocation_reason(problems, e, info, s)
            reason = _reason_from_log(problems, str(e))
            raise DeskLMError(
                f"{info.path.name}: could not load: " + (mem or f"{reason}{_suggest(reason)}")
            ) from e
        load_s = time.perf_counter() - t0
        self.llm, self.info, self.settings = llm, info, s
        self._n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(llm._ctx.ctx))
        self.n_slots = n_seq - 1
        self._file_stamp = _file_stamp(info.path)
        model = llm._model.model

        def single_token(text: str) -> int | None:
            toks = llm.tokenize(text.encode(), add_bos=False, special=True)
            return toks[0] if len(toks) == 1 else None

        def token_text(tid: int) -> str:
            if tid < 0:
                return ""
            return llm._model.token_get_text(tid)

        self._vocab_has = lambda t: single_token(t) is not None
        self._special_text = (token_text(llm.token_bos()), token_text(llm.token_eos()))
        kind = model_kind(info.metadata, info.chat_template)
        self.base_model = kind.base
        # SentencePiece vocabularies put a space before each tokenized text unless told not to
        self._space_prefix = info.metadata.get("tokenizer.ggml.model") == "llama" and bool(
            info.metadata.get("tokenizer.ggml.add_space_prefix", True)
        )
        self.template = self._pick_template(info, s["chat_format"], notes)
        self.load_info = LoadInfo(
            path=info.path,
            name=info.name,
            architecture=info.architecture,
            n_ctx=self._n_ctx_seq,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(model),
            n_layers=llama_cpp.llama_model_n_layer(model),
            load_s=load_s,
            chat_format=self.template.name,
            gpu_offload_supported=bool(llama_cpp.llama_supports_gpu_offload()),
            file_size=info.file_size,
            notes=notes,
            base_model=kind.base,
            format_note=self._format_note(),
        )
        log.info(
            "loaded %s in %.2fs (n_ctx=%d, format=%s, API slots=%d)",
            info.path,
            load_s,
            self.load_info.n_ctx,
            self.template.name,
            self.n_slots,
        )

    def _pick_template(self, info: GGUFInfo, chat_format: str, notes: list[str]) -> ChatTemplate:
        """The template for ``chat_format``; a GGUF template that fails on a plain
        conversation (broken, or hostile: the sandbox stops it) falls back to the family its
        text names, else to the architecture's built-in format."""
        bos, eos = self._special_text
        try:
            template = choose_template(
                info.architecture,
                info.chat_template,
                bos_token=bos,
                eos_token=eos,
                vocab_has=self._vocab_has,
                chat_format=chat_format,
                base=self.base_model,
            )
            if template.name == "gguf":  # only roles a user's chat has: no invented system
                template.render(
                    [
                        {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "a"},
                        {"role": "user", "content": "u"},
                    ]
                )
        except DeskLMError as e:
            if chat_format not in ("auto", "gguf") or not info.chat_template:
                raise  # not the file's template failing: the user's choice cannot be used
            template = fallback_template(info.architecture, info.chat_template, self._vocab_has)
            notes.append(
                f"the model's own chat template failed ({e}); using the "
                f"{template.name} format instead"
            )
            log.warning("chat template rejected: %s", e)
        self._stop_token_ids = {
            t for t in (self._single_token(x) for x in template.stop) if t is not None
        }
        # whitespace stops (the dialogue's blank line) end a reply, never open one
        self._blank_stop_ids = {
            t
            for t in (self._single_token(x) for x in template.stop if not x.strip())
            if t is not None
        }
        return template

    def _single_token(self, text: str) -> int | None:
        toks = self._need().tokenize(text.encode(), add_bos=False, special=True)
        return toks[0] if len(toks) == 1 else None

    def _format_note(self) -> str:
        name = self.template.name if self.template else ""
        if self.base_model:
            if name == "dialogue":
                return BASE_MODEL_NOTE + "; shown a plain dialogue to continue"
            return BASE_MODEL_NOTE
        if name == "dialogue":
            return "plain dialogue format (the model's own chat format is not used)"
        return ""

    def set_chat_format(self, chat_format: str) -> str:
        """Switch the chat format live (the next turn renders with it); returns its name.
        Raises with the reason (the previous format stays) when it cannot be used."""
        if self.info is None or self.load_info is None:
            raise DeskLMError("no model is loaded")
        notes: list[str] = []
        self.template = self._pick_template(self.info, chat_format, notes)
        self.load_info.chat_format = self.template.name
        self.load_info.format_note = self._format_note()
        self.load_info.notes.extend(notes)
        if self.settings is not None:
            self.settings.set("chat_format", chat_format)
        return self.template.name

    def unload(self) -> None:
        batch, self.batch = self.batch, None
        self.n_slots = 0
        if batch is not None:  # its sequences fail with "the model was unloaded"
            batch.close()
        llm, self.llm = self.llm, None
        self.load_info = None
        self.template = None
        if llm is not None:
            llm.close()
            del llm
            _release_freed_memory()

    def _need(self) -> llama_cpp.Llama:
        if self.llm is None:
            raise DeskLMError("no model is loaded")
        return self.llm

    # -- state --
    @property
    def n_ctx(self) -> int:
        """The context of one conversation (of each sequence, with parallel slots)."""
        self._need()
        return self._n_ctx_seq

    @property
    def context_used(self) -> int:
        return self.llm.n_tokens if self.llm is not None else 0

    def kv_cache_pos_max(self) -> int:
        """Highest position held in the KV cache for sequence 0 (-1 when empty)."""
        llm = self._need()
        mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
        return int(llama_cpp.llama_memory_seq_pos_max(mem, 0))

    def tokenize(self, text: str | Sequence[Part], special: bool = False) -> list[int]:
        """Tokens for a prompt, with the model's BOS where its vocabulary wants one.

        ``text`` is a rendered prompt's parts (:meth:`ChatTemplate.render_parts`): the
        template's markup is tokenized with control tokens parsed, message text as plain text,
        so a message cannot forge a turn marker. Each part is tokenized on its own, so a
        conversation's history gives the same tokens every turn (the KV prefix is reused). A
        plain string is one part, plain text unless ``special``.
        """
        llm = self._need()
        parts = [Part(text, special)] if isinstance(text, str) else list(text)
        if self._space_prefix and len(parts) > 1 and self._plain_is_safe(parts):
            # a vocabulary that puts a space before every tokenized text would get one at each
            # part: tokenize the prompt whole, which is safe when no message holds marker text
            parts = [Part("".join(p.text for p in parts), True)]
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        add_bos = bool(
            llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm._model.model))
        )
        first = next((p for p in parts if p.text), None)
        if bos and first is not None and first.special and first.text.startswith(bos):
            add_bos = False  # the template already wrote it
        out: list[int] = []
        for p in parts:
            if not p.text:
                continue
            out += llm.tokenize(
                p.text.encode("utf-8", errors="replace"),
                add_bos=add_bos and not out,
                special=p.special,
            )
        if add_bos and not out and llm.token_bos() >= 0:
            out = [llm.token_bos()]
        return out

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt for a conversation (``[{"role", "content"}]`` + the generation prompt),
        message text as plain text (only the format's own markers become control tokens).
        The one place an API request's messages become tokens."""
        assert self.template is not None, "no model is loaded"
        return self.tokenize(self.template.render_parts(messages))

    def plain_tokens(self, text: str) -> list[int]:
        """``text`` as plain text (no control tokens parsed), with BOS where the model wants it:
        the prompt of a raw completion (``/v1/completions``)."""
        return self.tokenize(text)

    def _plain_is_safe(self, parts: Sequence[Part]) -> bool:
        """No data part holds text that would parse as a control token."""
        llm = self._need()
        for p in parts:
            if not p.special and p.text:
                raw = p.text.encode("utf-8", errors="replace")
                if llm.tokenize(raw, add_bos=False, special=True) != llm.tokenize(
                    raw, add_bos=False, special=False
                ):
                    return False
        return True

    def reset(self) -> None:
        """Forget everything: clear the KV memory itself, not only the token counter."""
        llm = self._need()
        if self.n_slots:  # the window's own sequence only: the slots keep theirs
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm._ctx.ctx), 0, -1, -1)
        else:
            llm._ctx.kv_cache_clear()
        llm.reset()

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        llm = self._need()
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, n_threads, n_threads_batch)
        llm.n_threads, llm.n_threads_batch = n_threads, n_threads_batch
        if self.settings is not None:
            self.settings.update({"n_threads": n_threads, "n_threads_batch": n_threads_batch})

    def threads(self) -> tuple[int, int]:
        llm = self._need()
        return (
            llama_cpp.llama_n_threads(llm._ctx.ctx),
            llama_cpp.llama_n_threads_batch(llm._ctx.ctx),
        )

    def reusable_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens`` the KV cache already holds (Llama.generate replays one token
        when the whole prompt is cached, so at most ``len(tokens) - 1``)."""
        llm = self._need()
        n = llm.n_tokens
        cached = llm._input_ids[:n]
        lcp = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            lcp += 1
        return max(0, min(lcp, len(tokens) - 1))

    def check_model_file(self) -> None:
        """Raise (a DeskLMError) if the loaded model's file changed on disk since the load.

        llama.cpp maps the file into memory; a file truncated or rewritten in place under the
        mapping kills the process with SIGBUS at the next read of a missing page. Checked
        before every turn; what cannot be caught is a change during a turn. A file read into
        RAM (use_mmap off) and a deleted file (its data live on while mapped) are safe.
        """
        if (
            self.info is None
            or self._file_stamp is None
            or self.settings is None
            or not self.settings["use_mmap"]
        ):
            return
        now = _file_stamp(self.info.path)
        if now is None or now == self._file_stamp:
            return
        name = self.info.path.name
        dev, ino, size, _mtime = self._file_stamp
        if (now[0], now[1]) != (dev, ino):
            raise DeskLMError(
                f"the model file {name} was replaced on disk after it was loaded; "
                "reload the model to use the new file"
            )
        change = f"size {size:,} -> {now[2]:,} bytes" if now[2] != size else "rewritten"
        raise DeskLMError(
            f"the model file {name} changed on disk while loaded ({change}); "
            "reading it now could crash DeskLM: reload the model"
        )

    def stop(self) -> None:
        """Ask the running reply (or prompt evaluation) to stop. Safe from any thread."""
        self._stop.set()

    def begin_turn(self) -> None:
        """A turn starts: forget a Stop pressed before it; a Stop from now on ends it (also
        while the prompt is still being planned, before :meth:`generate`)."""
        self._stop.clear()

    def stop_requested(self) -> bool:
        return self._stopping()

    # -- generation --
    def keep_token_ids(self, keep: Sequence[str]) -> frozenset[int]:
        """The ids of the control tokens ``keep`` names (those that are one token)."""
        return frozenset(t for t in (self._single_token(x) for x in keep) if t is not None)

    def batch_sequence(
        self,
        tokens: list[int] | None = None,
        *,
        prepare: Callable[[], list[int]] | None = None,
        sampling: Settings,
        stop: list[str] | None = None,
        grammar: Any = None,
        strip: bool = True,
        on_text: Callable[[str], None] | None = None,
        on_start: Callable[[], None] | None = None,
        keep: Sequence[str] = (),
        reasoning_open: bool | None = None,
        label: str = "",
    ) -> BatchSequence:
        """A request of this model's batch, with what :meth:`generate` would use: the chat
        format's stop strings unless ``stop`` is given, its stop tokens, ``ignore_eos``; the
        window's turns and the API's requests are both made here."""
        assert self.template is not None, "no model is loaded"
        return BatchSequence(
            tokens,
            prepare=prepare,
            sampling=SamplingParams.from_settings(sampling),
            stops=self.template.stop if stop is None else stop,
            grammar=grammar,
            strip=strip,
            on_text=on_text,
            on_start=on_start,
            stop_token_ids=self._stop_token_ids,
            blank_stop_ids=self._blank_stop_ids,
            ignore_eos=self.ignore_eos,
            keep_ids=self.keep_token_ids(keep),
            reasoning_open=reasoning_open,
            label=label,
        )

    def _turn_batch(self) -> BatchEngine | None:
        """The batch a turn decodes in: the slots' BatchEngine when the model has API slots
        (parallel above 1), so a reply here and the API's replies share each step; None
        with parallel 1 (``Llama.generate`` then, the one sequence alone)."""
        if self.n_slots <= 0 or self.llm is None:
            return None
        return batch_for(self)

    def _generate_in_batch(
        self,
        batch: BatchEngine,
        tokens: list[int],
        sampling: Settings,
        on_text: Callable[[str], None] | None,
        reasoning_open: bool,
        stop: list[str] | None,
        grammar: Any,
        strip: bool,
        keep: Sequence[str],
    ) -> tuple[str, TurnStats]:
        """:meth:`generate` as the batch's sequence 0 (the same text rules: ReplyText)."""
        seq = self.batch_sequence(
            tokens,
            sampling=sampling,
            stop=stop,
            grammar=grammar,
            strip=strip,
            on_text=on_text,
            keep=keep,
            reasoning_open=reasoning_open,
            label="window",
        )

        def should_stop() -> bool:
            self.live_tokens = seq.live_tokens
            return self._stopping()

        reply, stats = batch.run_home(seq, should_stop)
        self.live_tokens = stats.completion_tokens
        return reply, stats

    def generate(
        self,
        tokens: list[int],
        sampling: Settings,
        on_text: Callable[[str], None] | None = None,
        reasoning_open: bool = False,
        clear_stop: bool = True,
        *,
        stop: list[str] | None = None,
        grammar: Any = None,
        strip: bool = True,
        keep: Sequence[str] = (),
    ) -> tuple[str, TurnStats]:
        """Stream a reply to ``tokens``; returns the reply text (stripped) and its stats.

        ``on_text`` receives each new piece of text (complete UTF-8 characters, with stop strings
        and surrounding whitespace held back until they are ruled out); the pieces add up to the
        reply. ``reasoning_open``: the prompt ended inside ``<think>`` (the template opened it),
        so the reply starts with reasoning. Reasoning tokens and time are counted apart. With
        ``clear_stop=False`` a Stop pressed since :meth:`begin_turn` still counts.
        For the API server: ``stop``: stop strings instead of the chat format's (the API's
        ``stop``); ``grammar``: a ``llama_cpp.LlamaGrammar`` constraining the reply (the API's
        ``response_format``); ``strip=False`` keeps the text's surrounding whitespace (a raw
        completion continues its prompt exactly: " Paris", an indented line). ``keep``:
        control tokens whose text the reply keeps (a tool call's ``[TOOL_CALLS]``), where
        control tokens are otherwise left out of the text.
        """
        llm = self._need()
        assert self.template is not None
        self.check_model_file()
        if clear_stop:
            self._stop.clear()
        self.live_tokens = 0
        n_ctx = self.n_ctx
        if len(tokens) >= n_ctx:
            raise DeskLMError(f"prompt needs {len(tokens)} tokens but the context holds {n_ctx}")
        batch = self._turn_batch()
        if batch is not None:  # the window's chat is one of the batch's sequences
            return self._generate_in_batch(
                batch, tokens, sampling, on_text, reasoning_open, stop, grammar, strip, keep
            )
        stats = TurnStats(prompt_tokens=len(tokens), n_ctx=n_ctx)
        stats.prompt_tokens_reused = self.reusable_prefix(tokens)
        max_new = min(int(sampling["max_tokens"]), n_ctx - len(tokens))
        seed = int(sampling["seed"])
        llm.set_seed(seed if seed >= 0 else random.randrange(2**31 - 1))
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        stops = [s for s in (self.template.stop if stop is None else stop) if s]
        hold = max((len(s) for s in stops), default=1) - 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        keep_ids = self.keep_token_ids(keep)
        reply, emitted = "", 0
        finish = FinishReason.LENGTH
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
        t0 = time.perf_counter()
        reasoning = ReasoningClock(reasoning_open)
        self._arm_abort(True)
        try:
            gen = llm.generate(
                tokens,
                top_k=int(sampling["top_k"]),
                top_p=float(sampling["top_p"]),
                min_p=float(sampling["min_p"]),
                temp=float(sampling["temperature"]),
                repeat_penalty=float(sampling["repeat_penalty"]),
                reset=True,
                grammar=grammar,
            )
            for tok in gen:
                if stats.completion_tokens == 0 and stats.ttft_s is None:
                    stats.ttft_s = time.perf_counter() - t0
                    self._arm_abort(False)  # per-token checks from here: no call per node
                if self._stopping():
                    finish = FinishReason.CANCELLED
                    break
                stop_tok = tok in self._stop_token_ids and not (
                    tok in self._blank_stop_ids and not reply.strip()
                )
                if (llama_cpp.llama_vocab_is_eog(vocab, tok) or stop_tok) and not self.ignore_eos:
                    finish = FinishReason.STOP
                    break
                stats.completion_tokens += 1
                self.live_tokens = stats.completion_tokens
                reply += decoder.decode(llm.detokenize([tok], special=tok in keep_ids))
                reasoning.token(reply)
                cut = None if self.ignore_eos else find_stop(reply, stops, max(0, emitted - hold))
                if cut is not None:
                    reply = reply[:cut]
                    finish = FinishReason.STOP
                    break
                if strip and emitted == 0:  # never show leading whitespace
                    lead = len(reply) - len(reply.lstrip())
                    emitted = lead if lead < len(reply) else 0
                safe = len(reply) - partial_stop_len(reply, stops, hold)
                if strip:
                    safe = min(safe, len(reply.rstrip()))  # trailing whitespace waits
                if on_text is not None and safe > emitted:
                    on_text(reply[emitted:safe])
                emitted = max(emitted, safe)
                if stats.completion_tokens >= max_new:
                    finish = FinishReason.LENGTH
                    break
            else:
                finish = FinishReason.LENGTH
        except RuntimeError as e:  # llama_decode returned 2: aborted by our callback
            if self._stopping():
                finish = FinishReason.CANCELLED
            else:
                raise DeskLMError(f"generation failed: {e}") from e
        finally:
            self._arm_abort(False)
        reply += decoder.decode(b"", final=True)
        if strip and emitted == 0:
            emitted = len(reply) - len(reply.lstrip())
        end = len(reply.rstrip()) if strip else len(reply)
        if on_text is not None and end > emitted:
            on_text(reply[emitted:end])
        if strip:
            reply = reply.strip()
        stats.reasoning_tokens, stats.reasoning_s = reasoning.tokens, reasoning.seconds
        stats.total_s = time.perf_counter() - t0
        perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
        if perf.n_p_eval > 0 and perf.t_p_eval_ms > 0:
            stats.prompt_tokens_per_s = perf.n_p_eval / (perf.t_p_eval_ms / 1000.0)
        if perf.n_eval > 0 and perf.t_eval_ms > 0:
            stats.gen_tokens_per_s = perf.n_eval / (perf.t_eval_ms / 1000.0)
        stats.finish_reason = finish
        stats.context_used = llm.n_tokens
        return reply, stats


def _file_stamp(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of a file; None if it cannot be read (e.g. deleted)."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# --- the child process of local.probe ----------------------------------------------------------
def probe_child_main(path: str) -> int:
    """Runs in the child: load, exit 0 on success. A refusal is printed as one
    ``desklm: error:`` line naming llama.cpp's own cause (its log is captured by this
    module); an abort kills the process, and ggml's assertion text is left on stderr."""
    try:
        info = read_gguf(path)
    except DeskLMError as e:
        print(f"desklm: error: {e}", file=sys.stderr, flush=True)
        return 2
    before = LLAMA_LOG.snapshot()
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_batch=64, n_gpu_layers=0, verbose=False)
    except Exception as e:
        reason = _reason_from_log(LLAMA_LOG.problems_since(before), str(e))
        print(
            f"desklm: error: {info.path.name}: could not load: {reason}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    llm.close()
    return 0
