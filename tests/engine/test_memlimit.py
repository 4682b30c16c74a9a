"""Memory limits are the real ones: cgroup v2 and v1 files (a real tree of files in the
kernel's format), and RLIMIT_AS set for real in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desklm.engine.memlimit import (
    LimitedBytes,
    cgroup_limits,
    memory_limits,
    tightest,
)
from desklm.engine.models import fit
from desklm.engine.models.gguf_info import read_gguf
from desklm.engine.monitor import ResourceSampler

MB = 2**20


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def proc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proc-self-cgroup"
    p.write_text(text)
    return p


def v2(
    tmp_path: Path,
    leaf_max: str = "1073741824",
    parent_max: str = "max",
    current: str = "536870912",
    inactive: int = 100 * MB,
) -> Path:
    """A cgroup v2 mount as systemd lays it out: a slice and a scope under it."""
    return tree(
        tmp_path / "cg",
        {
            "cgroup.controllers": "cpu io memory pids\n",
            "memory.current": "999999999\n",  # the root has no memory.max: never a limit
            "user.slice/memory.max": parent_max + "\n",
            "user.slice/memory.current": "600000000\n",
            "user.slice/app.scope/memory.max": leaf_max + "\n",
            "user.slice/app.scope/memory.current": current + "\n",
            "user.slice/app.scope/memory.stat": f"anon 300000000\nfile 200000000\n"
            f"active_file 50000000\ninactive_file {inactive}\n",
        },
    )


def test_cgroup_v2_limit_minus_what_is_used_not_counting_dropable_cache(tmp_path):
    root = v2(tmp_path)
    (lim,) = cgroup_limits(root, proc(tmp_path, "0::/user.slice/app.scope\n"))
    assert lim.limit == 1 << 30
    assert lim.available == (1 << 30) - (512 * MB - 100 * MB)
    assert lim.source == "cgroup memory.max of /user.slice/app.scope"


def test_cgroup_v2_a_parent_with_less_room_is_the_limit(tmp_path):
    root = v2(tmp_path, parent_max=str(650_000_000))
    lims = cgroup_limits(root, proc(tmp_path, "0::/user.slice/app.scope\n"))
    best = tightest(lims)
    assert best is not None and best.available == 50_000_000
    assert best.source == "cgroup memory.max of /user.slice"


def test_cgroup_v2_inside_a_namespace_the_mount_is_our_cgroup(tmp_path):
    root = tree(
        tmp_path / "cg",
        {
            "cgroup.controllers": "memory\n",
            "memory.max": str(256 * MB),
            "memory.current": str(56 * MB),
        },
    )
    # /proc/self/cgroup says "/" (cgroupns) or a path that is not under this mount
    for line in ("0::/\n", "0::/docker/0123abcd\n"):
        (lim,) = cgroup_limits(root, proc(tmp_path, line))
        assert lim.available == 200 * MB


def test_cgroup_v1_memory_hierarchy(tmp_path):
    root = tree(
        tmp_path / "cg",
        {
            "memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
            "memory/memory.usage_in_bytes": "5000000000\n",
            "memory/docker/abc/memory.limit_in_bytes": str(2 << 30) + "\n",
            "memory/docker/abc/memory.usage_in_bytes": str(1 << 30) + "\n",
            "memory/docker/abc/memory.stat": f"cache 1\ntotal_inactive_file {256 * MB}\n",
            "unified/cgroup.controllers": "\n",  # hybrid: v2 mounted, memory not on it
        },
    )
    p = proc(tmp_path, "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/x\n0::/x\n")
    (lim,) = cgroup_limits(root, p)
    assert lim.limit == 2 << 30 and lim.available == (1 << 30) + 256 * MB
    assert lim.source == "cgroup memory.limit_in_bytes of /docker/abc"


@pytest.mark.parametrize("content", ["max", "", "junk\n", "-5", "1e9", "99999999999999999999999"])
def test_junk_or_unlimited_files_are_no_limit_and_never_raise(tmp_path, content):
    root = tree(
        tmp_path / "cg",
        {"cgroup.controllers": "memory\n", "memory.max": content, "memory.current": "100"},
    )
    assert cgroup_limits(root, proc(tmp_path, "0::/\n")) == []
    assert cgroup_limits(tmp_path / "nothing", tmp_path / "no-proc-file") == []
    assert cgroup_limits(root, proc(tmp_path, "garbage without colons\n\x00\n")) == []


def test_the_sampler_and_the_fit_estimate_use_the_tightest_limit(tmp_path, model_path):
    root = v2(tmp_path, leaf_max=str(300 * MB), current=str(200 * MB), inactive=0)
    sampler = ResourceSampler(
        cgroup_root=root, proc_cgroup=proc(tmp_path, "0::/user.slice/app.scope\n")
    )
    snap = sampler.sample()
    ram, _vram = snap.free()
    assert ram == 100 * MB and isinstance(ram, LimitedBytes)
    assert snap.ram_limit_source == "cgroup memory.max of /user.slice/app.scope"
    est = fit.estimate(read_gguf(model_path), 4096, free=snap.free())
    assert est.verdict == fit.NO_FIT
    assert any("100 MB free under this process's cgroup memory.max" in r for r in est.reasons)
    # with no limit it is the machine's free RAM, a plain number
    plain = ResourceSampler(cgroup_root=tmp_path / "none").sample()
    assert not isinstance(plain.free()[0], LimitedBytes) or plain.ram_limit_source


CHILD = """
import json, os, resource, sys
import psutil
from desklm.engine.memlimit import memory_limits, tightest
from desklm.engine.models.fit import estimate, free_memory
from desklm.engine.models.gguf_info import read_gguf
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError
vms = psutil.Process().memory_info().vms
resource.setrlimit(resource.RLIMIT_AS, (vms + int(sys.argv[2]) * 2**20, resource.RLIM_INFINITY))
out = {"limits": [[m.source, m.available] for m in memory_limits()]}
free = free_memory()
out["free_ram"] = int(free[0]); out["source"] = getattr(free[0], "source", "")
eng = ChatEngine()
eng.check_fit = sys.argv[3] == "check"
try:
    eng.load(sys.argv[1], Settings({"n_ctx": 2048, "n_batch": 512}))
    out["loaded"] = True
except DeskLMError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def child(model_path: Path, extra_mb: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_path), str(extra_mb), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0 and r.stdout, r.stderr[-1500:]
    return json.loads(r.stdout)


def test_rlimit_as_is_read_and_the_load_refused_with_the_limit_named(model_path):
    out = child(model_path, 700, "check")
    (_src, avail), *_ = [lim for lim in out["limits"] if lim[0].startswith("RLIMIT_AS")]
    assert 600 * MB < avail <= 700 * MB
    assert out["source"] == "RLIMIT_AS (ulimit -v)" and abs(out["free_ram"] - avail) < 32 * MB
    msg = out["error"]
    assert "will not fit" in msg and "under this process's RLIMIT_AS (ulimit -v)" in msg


def test_an_allocation_that_fails_anyway_names_the_batch_and_vocabulary(model_path):
    out = child(model_path, 1000, "no-check")  # past the estimate: llama.cpp's own failure
    msg = out["error"]
    assert "out of memory" in msg and "262,144" in msg and "vocabulary" in msg, msg
    assert "lower the batch size" in msg and "context length" not in msg
    assert "RLIMIT_AS" in msg and "\n" not in msg


def test_a_roomy_rlimit_as_still_loads(model_path):
    assert child(model_path, 4000, "check").get("loaded") is True


def test_no_limits_here_is_an_empty_list_not_an_error():
    assert isinstance(memory_limits(), list)
