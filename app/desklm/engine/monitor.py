"""ResourceSampler: what the model costs the machine, read cheaply enough for 2 Hz.

psutil gives process RSS (and its anonymous, non-file-backed part), system RAM and process CPU.
NVML (``nvidia-ml-py``, imported as ``pynvml``) gives per-GPU VRAM, this process's VRAM and
utilisation. NVML is initialised lazily, once; a reading that cannot be had (no driver, no GPU,
a function the driver lacks, per-process VRAM under Windows WDDM) is :data:`NA`, formatted
"n/a", with one logged hint why. ``sample()`` never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

log = logging.getLogger("desklm.monitor")


class _NAType:
    """A reading the machine cannot give. Falsy, formats as "n/a", compares equal only to NA."""

    _instance: _NAType | None = None

    def __new__(cls) -> _NAType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NA"

    def __str__(self) -> str:
        return "n/a"

    def __format__(self, spec: str) -> str:
        return "n/a"


NA: Any = _NAType()


def is_na(v: object) -> bool:
    return v is NA


@dataclass
class GpuReading:
    index: int
    name: str
    vram_used: Any  # bytes or NA
    vram_total: Any
    vram_process: Any  # this process's VRAM, bytes or NA
    util_percent: Any


@dataclass
class Snapshot:
    time: float
    rss: Any  # bytes
    rss_anon: Any  # bytes not backed by a file (the model's mmap pages are file-backed)
    ram_used: Any
    ram_total: Any
    cpu_percent: Any  # process CPU, % of the whole machine (0-100)
    gpus: list[GpuReading] = field(default_factory=list)
    gpu_status: str = ""  # "" when NVML works, else why there are no GPU readings
    ram_limit: Any = NA  # bytes this process may still use under its tightest limit
    ram_limit_source: str = ""  # which limit: a cgroup's memory.max, RLIMIT_AS

    def free(self) -> tuple[Any, Any]:
        """(free RAM, free VRAM summed over the NVIDIA GPUs), NA where unknown: what the
        memory-fit estimate compares with. Free RAM is the machine's, or less where a cgroup
        or RLIMIT_AS limits this process; then it is a ``LimitedBytes`` naming the limit."""
        from desklm.engine.memlimit import LimitedBytes

        ram = (
            NA if is_na(self.ram_total) or is_na(self.ram_used) else self.ram_total - self.ram_used
        )  # ram_used is total - available
        if not is_na(self.ram_limit) and (is_na(ram) or self.ram_limit < ram):
            ram = LimitedBytes(self.ram_limit, self.ram_limit_source)
        vram = [
            g.vram_total - g.vram_used
            for g in self.gpus
            if not is_na(g.vram_total) and not is_na(g.vram_used)
        ]
        return ram, (sum(vram) if vram else NA)

    def to_dict(self) -> dict[str, Any]:
        def v(x: Any) -> Any:
            return None if x is NA else x

        return {
            "rss": v(self.rss),
            "rss_anon": v(self.rss_anon),
            "ram_used": v(self.ram_used),
            "ram_total": v(self.ram_total),
            "cpu_percent": v(self.cpu_percent),
            "gpu_status": self.gpu_status,
            "gpus": [{k: v(x) for k, x in g.__dict__.items()} for g in self.gpus],
        }


class ResourceSampler:
    """Samples one process (default: this one). ``nvml`` may be given (tests); else ``pynvml``."""

    def __init__(
        self,
        pid: int | None = None,
        nvml: ModuleType | Any | None = None,
        cgroup_root: Path | None = None,
        proc_cgroup: Path | None = None,
    ) -> None:
        from desklm.engine.memlimit import CGROUP_ROOT, PROC_CGROUP

        self.cgroup_root = cgroup_root or CGROUP_ROOT
        self.proc_cgroup = proc_cgroup or (
            PROC_CGROUP if pid is None or pid == os.getpid() else Path(f"/proc/{pid}/cgroup")
        )
        self.pid = pid or os.getpid()
        self._proc = psutil.Process(self.pid)
        self._ncpu = psutil.cpu_count() or 1
        self._nvml_mod = nvml
        self._nvml: Any = None
        self._nvml_tried = False
        self.gpu_status = ""
        self._hinted: set[str] = set()
        with contextlib.suppress(psutil.Error):
            self._proc.cpu_percent(None)  # prime: the first call always returns 0

    def _hint(self, key: str, msg: str) -> None:
        if key not in self._hinted:
            self._hinted.add(key)
            log.info("%s", msg)

    def _init_nvml(self) -> Any:
        if self._nvml_tried:
            return self._nvml
        self._nvml_tried = True
        try:
            mod: Any = self._nvml_mod
            if mod is None:
                import pynvml  # nvidia-ml-py

                mod = pynvml
            mod.nvmlInit()
            if mod.nvmlDeviceGetCount() == 0:
                self.gpu_status = "No NVIDIA GPU"
                return None
            self._nvml = mod
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError ...
            self.gpu_status = "No NVIDIA GPU"
            self._hint("init", f"no NVIDIA GPU readings: {type(e).__name__}: {e}")
        return self._nvml

    def _call(self, key: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            self._hint(key, f"NVML {key} unavailable: {e}")
            return NA

    def _gpus(self) -> list[GpuReading]:
        nv = self._init_nvml()
        if nv is None:
            return []
        out = []
        count = self._call("count", nv.nvmlDeviceGetCount)
        for i in range(count if isinstance(count, int) else 0):
            h = self._call("handle", nv.nvmlDeviceGetHandleByIndex, i)
            if h is NA:
                continue
            name = self._call("name", nv.nvmlDeviceGetName, h)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            mem = self._call("memory", nv.nvmlDeviceGetMemoryInfo, h)
            util = self._call("utilization", nv.nvmlDeviceGetUtilizationRates, h)
            out.append(
                GpuReading(
                    index=i,
                    name=str(name) if name is not NA else f"GPU {i}",
                    vram_used=NA if mem is NA else int(mem.used),
                    vram_total=NA if mem is NA else int(mem.total),
                    vram_process=self._process_vram(nv, h),
                    util_percent=NA if util is NA else float(util.gpu),
                )
            )
        return out

    def _process_vram(self, nv: Any, handle: Any) -> Any:
        total, known = 0, False
        for key in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            fn = getattr(nv, key, None)
            procs = NA if fn is None else self._call(key, fn, handle)
            if procs is NA:
                continue
            known = True
            for p in procs:
                if p.pid == self.pid:
                    used = getattr(p, "usedGpuMemory", None)
                    if used is None:  # Windows WDDM: the driver does not say
                        self._hint("wddm", "per-process VRAM is not reported by this driver")
                        return NA
                    total += int(used)
        return total if known else NA

    def sample(self) -> Snapshot:
        now = time.time()
        rss = anon = cpu = ram_used = ram_total = NA
        try:
            with self._proc.oneshot():
                mi = self._proc.memory_info()
                rss = mi.rss
                if hasattr(mi, "shared"):  # Linux: shared = file-backed + shmem pages
                    anon = max(0, mi.rss - mi.shared)
                elif hasattr(mi, "private"):  # Windows: private bytes
                    anon = mi.private
                cpu = min(100.0, self._proc.cpu_percent(None) / self._ncpu)
        except psutil.Error as e:
            self._hint("proc", f"process readings unavailable: {e}")
        try:
            vm = psutil.virtual_memory()
            ram_total, ram_used = vm.total, vm.total - vm.available
        except Exception as e:
            self._hint("ram", f"system RAM unavailable: {e}")
        gpus = self._gpus()
        snap = Snapshot(now, rss, anon, ram_used, ram_total, cpu, gpus, self.gpu_status)
        try:
            from desklm.engine.memlimit import cgroup_limits, rlimit_as, tightest

            limits = cgroup_limits(self.cgroup_root, self.proc_cgroup)
            if self.pid == os.getpid():  # RLIMIT_AS is read for this process only
                r = rlimit_as()
                limits += [r] if r is not None else []
            lim = tightest(limits)
            if lim is not None:
                snap.ram_limit, snap.ram_limit_source = lim.available, lim.source
        except Exception as e:  # never raises: a limit we cannot read is one we cannot see
            self._hint("limits", f"memory limits unavailable: {e}")
        return snap

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
