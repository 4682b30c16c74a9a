"""What DeskLM runs on: versions, llama.cpp's build, where its files live (for About and bug
reports). Every reading is best effort: a missing piece says so instead of failing."""

from __future__ import annotations

import platform
import sys
from typing import Any


def _c_string(fn: Any) -> str:
    """The text a llama.cpp/ggml ``const char *(void)`` function returns, or "" if it cannot."""
    import ctypes

    try:
        fn.argtypes = []
        fn.restype = ctypes.c_char_p
        raw = fn()
    except Exception:  # an older library without the function
        return ""
    return raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else ""


def llama_info() -> dict[str, Any]:
    """What llama.cpp this is: llama-cpp-python's version (``version``), the shared library's
    own version (``llama_cpp``), the commit it was built from and ggml's version (``commit``,
    ``ggml``, "" where the library does not say), its system info line (the CPU features and
    backends compiled in) and GPU offload support."""
    out: dict[str, Any] = {
        "version": "not installed",
        "llama_cpp": "",
        "commit": "",
        "ggml": "",
        "system_info": "",
        "gpu_offload": False,
    }
    try:
        import llama_cpp
    except Exception as e:  # an ImportError, or a shared library that fails to load
        out["version"] = f"unavailable ({type(e).__name__}: {e})"
        return out
    out["version"] = str(getattr(llama_cpp, "__version__", "?"))
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    if lib is not None:
        out["llama_cpp"] = _c_string(getattr(lib, "llama_version", None))
    try:  # ggml's version and commit: the commit is llama.cpp's, ggml being built inside it
        from llama_cpp import _ggml

        out["ggml"] = _c_string(getattr(_ggml.libggml, "ggml_version", None))
        out["commit"] = _c_string(getattr(_ggml.libggml, "ggml_commit", None))
    except Exception:
        pass
    try:
        raw = llama_cpp.llama_print_system_info()
        out["system_info"] = (
            (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
            .strip()
            .rstrip(" |")
        )
    except Exception as e:
        out["system_info"] = f"n/a ({type(e).__name__})"
    try:
        out["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        out["gpu_offload"] = False
    return out


def backend_name(system_info: str, gpu_offload: bool) -> str:
    """A short name for the compute backend from llama.cpp's system info."""
    info = system_info.upper()
    for key, name in (
        ("CUDA", "CUDA"),
        ("METAL", "Metal"),
        ("VULKAN", "Vulkan"),
        ("ROCM", "ROCm"),
        ("HIP", "ROCm/HIP"),
        ("SYCL", "SYCL"),
        ("OPENCL", "OpenCL"),
    ):
        if key in info:
            return f"{name} (GPU offload {'on' if gpu_offload else 'unavailable'})"
    return "CPU" + (" (GPU offload available)" if gpu_offload else "")


def paths() -> dict[str, str]:
    from desklm.engine.store.files import app_dirs

    d = app_dirs()
    return {"data": str(d.data), "config": str(d.config), "logs": str(d.log), "cache": str(d.cache)}


def versions() -> dict[str, str]:
    from desklm import __version__

    out = {
        "desklm": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }
    out["executable"] = sys.executable
    return out


def llama_build(info: dict[str, Any]) -> str:
    """One line naming the llama.cpp build, e.g. "llama.cpp 0.5.0-dev (commit 0c1e570,
    ggml 0.25.3) via llama-cpp-python 0.3.36"."""
    details = [
        f"commit {info['commit']}" if info.get("commit") else "",
        f"ggml {info['ggml']}" if info.get("ggml") else "",
    ]
    inner = ", ".join(d for d in details if d)
    head = f"llama.cpp {info.get('llama_cpp') or '(version unknown)'}"
    return f"{head}{f' ({inner})' if inner else ''} via llama-cpp-python {info['version']}"


def version_text() -> str:
    """What ``desklm --version`` prints: DeskLM's version, then llama.cpp's version, build and
    backend, then what it runs on."""
    v = versions()
    llama = llama_info()
    lines = [
        f"desklm {v['desklm']}",
        llama_build(llama),
        f"backend: {backend_name(llama['system_info'], llama['gpu_offload'])}",
    ]
    if llama["system_info"]:
        lines.append(f"build: {llama['system_info']}")
    lines.append(f"Python {v['python']} on {v['platform']}")
    return "\n".join(lines) + "\n"
