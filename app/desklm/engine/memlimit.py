"""The memory this process may really use: cgroup limits (v2 and v1) and RLIMIT_AS.

Free RAM on the machine is not what a process in a container, a systemd slice or under
``ulimit -v`` may use; past its limit the kernel kills it (cgroups) or allocations fail
(RLIMIT_AS). :func:`memory_limits` reads every limit that applies, :func:`tightest` picks the
one with the least room left. Nothing here raises: a file that is missing or unreadable is a
limit we cannot see, not an error.

cgroup v2: ``memory.max`` and ``memory.current`` of the process's cgroup (from
``/proc/self/cgroup``, line ``0::<path>``) and of every parent up to the mount; v1: the same
with ``memory.limit_in_bytes`` and ``memory.usage_in_bytes`` under the ``memory`` hierarchy.
Page cache the kernel can drop (``inactive_file`` in ``memory.stat``) is not counted as used,
as container runtimes do. ``root`` (default ``/sys/fs/cgroup``) is a parameter so tests can
point it at a tree of real files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 1 << 60  # v1 writes "no limit" as 9223372036854771712 (LONG_MAX, page aligned)


@dataclass(frozen=True)
class MemoryLimit:
    """One limit: how much more this process may use under it, and what it is."""

    available: int
    limit: int
    source: str  # e.g. "cgroup memory.max of /user.slice/app.scope", "RLIMIT_AS (ulimit -v)"


class LimitedBytes(int):
    """A byte count that remembers which limit it came from (``source``); plain int math."""

    source: str

    def __new__(cls, value: int, source: str) -> LimitedBytes:
        obj = super().__new__(cls, value)
        obj.source = source
        return obj

    def __getnewargs__(self) -> tuple[int, str]:  # type: ignore[override]  # copy, pickle
        return int(self), self.source


def _read_int(path: Path) -> int | None:
    """An integer file; None for "max", junk, or a file that is not there."""
    try:
        text = path.read_text("ascii", errors="replace").strip()
    except (OSError, ValueError):
        return None
    if not text.isdigit() or len(text) > 20:
        return None
    return int(text)


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    try:
        lines = path.read_text("ascii", errors="replace").splitlines()
    except (OSError, ValueError):
        return 0
    values = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    for k in keys:
        if k in values:
            return values[k]
    return 0


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text("utf-8", errors="replace").splitlines()
    except (OSError, ValueError):
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _levels(mount: Path, path: str) -> list[tuple[Path, str]]:
    """The cgroup's folder and each parent up to the mount, with its name. Inside a cgroup
    namespace (or a container that mounts only its own cgroup) the path from /proc does not
    exist under the mount; then the mount itself is the process's cgroup."""
    rel = [p for p in path.strip().split("/") if p and p != ".."]
    out = []
    while rel:
        d = mount.joinpath(*rel)
        if d.is_dir():
            out.append((d, "/" + "/".join(rel)))
        rel.pop()
    out.append((mount, "/"))
    return out


def cgroup_limits(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> list[MemoryLimit]:
    """Every cgroup memory limit over this process (v2 and v1), with the room left under each."""
    v2_path, v1_path = _own_cgroups(proc_cgroup)
    found: list[MemoryLimit] = []
    v2_mount = root if (root / "cgroup.controllers").exists() else root / "unified"
    if v2_path is not None and (v2_mount / "cgroup.controllers").exists():
        for d, name in _levels(v2_mount, v2_path):
            limit, used = _read_int(d / "memory.max"), _read_int(d / "memory.current")
            if limit is None or used is None or limit >= UNLIMITED:
                continue
            used -= _stat_value(d / "memory.stat", ("inactive_file",))
            found.append(
                MemoryLimit(max(0, limit - max(0, used)), limit, f"cgroup memory.max of {name}")
            )
    v1_mount = root / "memory"
    if v1_path is not None and v1_mount.is_dir():
        for d, name in _levels(v1_mount, v1_path):
            limit = _read_int(d / "memory.limit_in_bytes")
            used = _read_int(d / "memory.usage_in_bytes")
            if limit is None or used is None or limit >= UNLIMITED:
                continue
            used -= _stat_value(d / "memory.stat", ("total_inactive_file", "inactive_file"))
            found.append(
                MemoryLimit(
                    max(0, limit - max(0, used)), limit, f"cgroup memory.limit_in_bytes of {name}"
                )
            )
    return found


def _vm_size() -> int | None:
    """This process's virtual size in bytes (what RLIMIT_AS counts)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().vms)
    except Exception:
        pass
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return None


def rlimit_as() -> MemoryLimit | None:
    """The address-space limit (``ulimit -v``), with the room left under it; None if none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0 or soft >= UNLIMITED:
        return None
    used = _vm_size()
    if used is None:
        return None
    return MemoryLimit(max(0, soft - used), soft, "RLIMIT_AS (ulimit -v)")


def memory_limits(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> list[MemoryLimit]:
    out = cgroup_limits(root, proc_cgroup)
    r = rlimit_as()
    if r is not None:
        out.append(r)
    return out


def tightest(limits: list[MemoryLimit]) -> MemoryLimit | None:
    return min(limits, key=lambda m: m.available) if limits else None
