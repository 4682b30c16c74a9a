"""Per-conversation KV snapshots: leave a chat, come back, and evaluate only what is new.

When the user leaves a chat (switches, starts a new one, quits), the model's KV state for it is
copied out of llama.cpp (``llama_state_seq_get_data`` for sequence 0, the cache alone: no logits)
together with the token ids it holds. Recent snapshots stay in RAM up to a byte budget; older
ones are written (atomically) to ``<cache dir>/kv-snapshots``, bounded by a disk budget, least
recently used first out. A snapshot is used only when all of these hold:

* it was taken on the same model file (path, size, modification time) with the same KV layout
  (context length, KV cache type, flash attention) and the same llama.cpp version
  (:func:`fingerprint`);
* the tokens it holds are a prefix of the prompt the next turn needs (an edited or trimmed
  history does not match, so it is evaluated in full).

Restoring costs milliseconds where re-evaluating costs seconds (minutes for a 7B model on a CPU).
Not thread safe except :meth:`SnapshotCache.usage`: the inference thread owns the cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import struct
import sys
import threading
import time
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desklm.engine.store.files import app_dirs, atomic_write_bytes

if TYPE_CHECKING:
    from desklm.engine.backends.local.engine import ChatEngine

log = logging.getLogger("desklm.engine")

MAGIC = b"DESKLM-KV1\n"
SUFFIX = ".kvs"
MB = 2**20
# Load settings that change what a KV snapshot holds or how it is laid out. n_batch / n_ubatch
# only change how the prompt is cut into batches, threads and GPU layers where it runs: a
# snapshot restores the same cache under any of them.
# The sequences the context holds count too (engine.n_slots: the slots made at load, which
# the ``parallel`` setting asks for only while the API is on).
LAYOUT_SETTINGS = ("n_ctx", "kv_cache_type", "flash_attn")


@dataclass
class Snapshot:
    """One conversation's KV cache: ``tokens`` at positions 0..n-1, and llama.cpp's bytes."""

    conv_id: str
    fingerprint: str
    tokens: list[int]
    data: bytes
    used: float = field(default_factory=time.time)

    @property
    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.tokens)

    def matches(self, prompt: list[int]) -> bool:
        """True when this snapshot can serve ``prompt``: its tokens are a proper prefix."""
        n = len(self.tokens)
        return 0 < n < len(prompt) and prompt[:n] == self.tokens


def fingerprint(engine: ChatEngine) -> str:
    """What a snapshot must have been taken under: model file identity (as it was when the model
    was loaded), the KV layout settings, and the llama.cpp build."""
    li, s = engine.load_info, engine.settings
    if li is None or s is None:
        return ""
    cached = getattr(engine, "_kv_fingerprint", None)
    if cached is not None and cached[0] is li:
        return str(cached[1])
    import llama_cpp

    try:
        st = Path(li.path).stat()
        ident: list[Any] = [str(Path(li.path).resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        ident = [str(li.path), li.file_size, None]
    parts = [*ident, *(s[k] for k in LAYOUT_SETTINGS), engine.n_slots, llama_cpp.__version__]
    fp = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
    engine._kv_fingerprint = (li, fp)  # type: ignore[attr-defined]
    return fp


# --- moving state in and out of llama.cpp -------------------------------------------------------
def capture(engine: ChatEngine, conv_id: str, keep: int) -> Snapshot | None:
    """Copy the first ``keep`` cached tokens' KV state out of the model (the cache beyond them
    is dropped first). None when there is nothing to keep."""
    import llama_cpp

    llm = engine.llm
    if llm is None:
        return None
    n = min(int(keep), int(llm.n_tokens))
    if n <= 0:
        return None
    ctx = llm._ctx.ctx
    mem = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(mem, 0, n, -1)
    llm.n_tokens = n
    size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
    if size <= 0:
        return None
    buf = (ctypes.c_uint8 * size)()
    got = int(llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0))
    if got <= 0 or got > size:
        log.warning("could not copy the KV state out of llama.cpp (%d of %d bytes)", got, size)
        return None
    tokens = [int(t) for t in llm._input_ids[:n]]
    return Snapshot(conv_id, fingerprint(engine), tokens, ctypes.string_at(buf, got))


def restore(engine: ChatEngine, snap: Snapshot) -> int:
    """Load a snapshot into the model (whatever the cache held is cleared first). Returns the
    tokens restored; 0 (and an empty cache) when llama.cpp refuses the data."""
    import llama_cpp

    llm = engine.llm
    if llm is None or not snap.tokens:
        return 0
    engine.reset()
    ctx = llm._ctx.ctx
    src = (ctypes.c_uint8 * len(snap.data)).from_buffer_copy(snap.data)
    ok = int(llama_cpp.llama_state_seq_set_data(ctx, src, len(snap.data), 0))
    n = len(snap.tokens)
    if ok == 0 or engine.kv_cache_pos_max() != n - 1:
        log.warning("llama.cpp refused a KV snapshot of %s; evaluating in full", snap.conv_id)
        engine.reset()
        return 0
    llm.input_ids[:n] = snap.tokens
    llm.n_tokens = n
    llm._requires_eval = True  # the logits are not restored: replay before sampling
    return n


# --- the cache ----------------------------------------------------------------------------------
def default_root() -> Path:
    return app_dirs().cache / "kv-snapshots"


class SnapshotCache:
    """Snapshots by conversation id: RAM (LRU, ``ram_bytes``) over disk (LRU, ``disk_bytes``).

    A budget of 0 turns that tier off. Disk files are written atomically and carry a checksum;
    one that does not read back whole is deleted and ignored.
    """

    def __init__(
        self, root: Path | None = None, ram_bytes: int = 512 * MB, disk_bytes: int = 2048 * MB
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.ram_bytes = max(0, int(ram_bytes))
        self.disk_bytes = max(0, int(disk_bytes))
        self._ram: OrderedDict[str, Snapshot] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    # -- budgets and use --
    def set_budgets(self, ram_bytes: int, disk_bytes: int) -> None:
        self.ram_bytes, self.disk_bytes = max(0, int(ram_bytes)), max(0, int(disk_bytes))
        self._enforce()

    def usage(self) -> dict[str, int]:
        """RAM and disk in use, and the budgets, in bytes (safe from any thread)."""
        with self._lock:
            ram = sum(s.nbytes for s in self._ram.values())
            n_ram = len(self._ram)
        files = self._files()
        return {
            "ram_bytes": ram,
            "ram_snapshots": n_ram,
            "ram_budget": self.ram_bytes,
            "disk_bytes": sum(sz for _, sz, _ in files),
            "disk_snapshots": len(files),
            "disk_budget": self.disk_bytes,
        }

    # -- store and fetch --
    def put(self, snap: Snapshot) -> None:
        """Keep ``snap`` as its conversation's snapshot (replacing an older one in RAM; an older
        one on disk stays until this one is written over it, so a crash still leaves that)."""
        snap.used = time.time()
        with self._lock:
            self._ram.pop(snap.conv_id, None)
            self._ram[snap.conv_id] = snap
        self._enforce()

    def get(self, conv_id: str, fp: str) -> Snapshot | None:
        """The conversation's snapshot if one was taken under ``fp``; a stale one is deleted."""
        with self._lock:
            snap = self._ram.get(conv_id)
            if snap is not None:
                self._ram.move_to_end(conv_id)
        if snap is None:
            snap = self._read(conv_id)
        if snap is None:
            return None
        if snap.fingerprint != fp:
            log.info("KV snapshot of %s was taken under another model or layout: dropped", conv_id)
            self.drop(conv_id)
            return None
        snap.used = time.time()
        with contextlib.suppress(OSError):
            os.utime(self._path(conv_id))
        return snap

    def drop(self, conv_id: str) -> None:
        with self._lock:
            self._ram.pop(conv_id, None)
        self._unlink(conv_id)

    def flush(self) -> None:
        """Write every RAM snapshot to disk (on quit: a restarted app resumes from them)."""
        with self._lock:
            snaps = list(self._ram.values())
        for s in snaps:
            self._write(s)
        self._enforce_disk()

    # -- internals --
    def _enforce(self) -> None:
        spill = []
        with self._lock:
            total = sum(s.nbytes for s in self._ram.values())
            while self._ram and total > self.ram_bytes:
                _, s = self._ram.popitem(last=False)
                total -= s.nbytes
                spill.append(s)
        for s in spill:
            self._write(s)
        self._enforce_disk()

    def _enforce_disk(self) -> None:
        files = sorted(self._files(), key=lambda f: f[2])  # least recently used first
        total = sum(sz for _, sz, _ in files)
        for p, sz, _ in files:
            if total <= self.disk_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= sz

    def _files(self) -> list[tuple[Path, int, float]]:
        out: list[tuple[Path, int, float]] = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return out
        for e in entries:
            if e.name.endswith(SUFFIX):
                with contextlib.suppress(OSError):
                    st = e.stat()
                    out.append((Path(e.path), st.st_size, st.st_mtime))
        return out

    def _path(self, conv_id: str) -> Path:
        safe = "".join(c for c in conv_id if c.isalnum() or c in "-_")[:64] or "x"
        return self.root / f"{safe}{SUFFIX}"

    def _unlink(self, conv_id: str) -> None:
        with contextlib.suppress(OSError):
            self._path(conv_id).unlink()

    def _write(self, s: Snapshot) -> None:
        if self.disk_bytes <= 0 or s.nbytes > self.disk_bytes:
            return
        toks = array("i", s.tokens)
        if sys.byteorder != "little":
            toks.byteswap()
        head = json.dumps(
            {
                "conv_id": s.conv_id,
                "fingerprint": s.fingerprint,
                "n_tokens": len(s.tokens),
                "data_bytes": len(s.data),
                "crc32": zlib.crc32(s.data),
                "used": s.used,
            }
        ).encode()
        blob = b"".join([MAGIC, struct.pack("<I", len(head)), head, toks.tobytes(), s.data])
        try:
            atomic_write_bytes(self._path(s.conv_id), blob)
        except OSError as e:
            log.warning("could not write a KV snapshot to %s: %s", self.root, e)

    def _read(self, conv_id: str) -> Snapshot | None:
        p = self._path(conv_id)
        try:
            blob = p.read_bytes()
        except OSError:
            return None
        try:
            if not blob.startswith(MAGIC):
                raise ValueError("not a snapshot")
            at = len(MAGIC)
            (hlen,) = struct.unpack_from("<I", blob, at)
            at += 4
            head = json.loads(blob[at : at + hlen])
            at += hlen
            n, size = int(head["n_tokens"]), int(head["data_bytes"])
            toks = array("i")
            toks.frombytes(blob[at : at + 4 * n])
            if sys.byteorder != "little":
                toks.byteswap()
            at += 4 * n
            data = blob[at : at + size]
            if (
                len(toks) != n
                or len(data) != size
                or zlib.crc32(data) != head["crc32"]
                or head["conv_id"] != conv_id
            ):
                raise ValueError("truncated or damaged")
        except (ValueError, KeyError, TypeError, struct.error) as e:
            log.warning("KV snapshot %s is unusable (%s): deleted", p.name, e)
            with contextlib.suppress(OSError):
                p.unlink()
            return None
        return Snapshot(
            conv_id,
            str(head["fingerprint"]),
            toks.tolist(),
            data,
            used=float(head.get("used", 0.0)),
        )
