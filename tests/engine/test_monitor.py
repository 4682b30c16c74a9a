"""ResourceSampler. This machine has no NVIDIA driver: the NA path runs for real. The GPU path
runs against a thin stand-in for the pynvml module (the only part this machine lacks)."""

import logging
import os
from types import SimpleNamespace

from desklm.engine.fmt import fmt_bytes, fmt_rate, fmt_secs
from desklm.engine.monitor import NA, ResourceSampler, is_na


def test_real_readings_and_the_no_gpu_path(caplog):
    caplog.set_level(logging.INFO, logger="desklm.monitor")
    s = ResourceSampler()
    snaps = [s.sample() for _ in range(3)]
    snap = snaps[-1]
    assert snap.rss > 10_000_000 and 0 < snap.rss_anon <= snap.rss
    assert 0 < snap.ram_used < snap.ram_total
    assert 0 <= snap.cpu_percent <= 100
    assert snap.gpus == [] and snap.gpu_status == "No NVIDIA GPU"
    hints = [r for r in caplog.records if "no NVIDIA GPU readings" in r.getMessage()]
    assert len(hints) == 1  # logged once, not every tick
    assert snap.to_dict()["gpus"] == []
    free_ram, free_vram = snap.free()
    assert free_ram == snap.ram_total - snap.ram_used > 0 and free_vram is NA


def test_na_formats_as_na_and_is_falsy():
    assert str(NA) == "n/a" and f"{NA:.1f}" == "n/a" and not NA and is_na(NA)
    assert fmt_bytes(NA) == "n/a" and fmt_bytes(3 * 1024**3) == "3.00 GB"
    assert (fmt_bytes(512), fmt_bytes(2048), fmt_bytes(250.3 * 2**20)) == (
        "512 B",
        "2 KB",
        "250.3 MB",
    )
    assert (fmt_secs(0.25), fmt_secs(2.414), fmt_secs(185), fmt_secs(None)) == (
        "250 ms",
        "2.41 s",
        "3 min 5 s",
        "n/a",
    )
    assert (fmt_rate(12.34), fmt_rate(NA)) == ("12.3", "n/a")


class FakeNVML:
    """Stand-in for the pynvml module: same function names, canned device answers."""

    class NVMLError(Exception):
        pass

    def __init__(self, pid, used_by_us=512 * 2**20, util_fails=False):
        self.pid, self.used_by_us, self.util_fails = pid, used_by_us, util_fails
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA Test GPU"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=3 * 2**30, total=8 * 2**30, free=5 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h):
        if self.util_fails:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(gpu=42, memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [
            SimpleNamespace(pid=self.pid, usedGpuMemory=self.used_by_us),
            SimpleNamespace(pid=1, usedGpuMemory=10**9),
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []


def test_gpu_readings_through_nvml():
    nv = FakeNVML(os.getpid())
    s = ResourceSampler(nvml=nv)
    g = s.sample().gpus[0]
    assert g.name == "NVIDIA Test GPU"
    assert (g.vram_used, g.vram_total, g.vram_process, g.util_percent) == (
        3 * 2**30,
        8 * 2**30,
        512 * 2**20,
        42.0,
    )
    assert s.sample().free()[1] == 5 * 2**30  # 8 GiB total - 3 GiB used
    assert nv.inits == 1  # initialised lazily, once


def test_missing_driver_functions_become_na_not_errors():
    s = ResourceSampler(nvml=FakeNVML(os.getpid(), used_by_us=None, util_fails=True))
    snap = s.sample()
    g = snap.gpus[0]
    assert g.util_percent is NA and g.vram_process is NA  # WDDM reports no per-process VRAM
    assert g.vram_used == 3 * 2**30
    assert snap.to_dict()["gpus"][0]["util_percent"] is None


def test_an_nvml_that_fails_to_initialise_is_no_gpu():
    class Broken(FakeNVML):
        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    snap = ResourceSampler(nvml=Broken(os.getpid())).sample()
    assert snap.gpus == [] and snap.gpu_status == "No NVIDIA GPU"
