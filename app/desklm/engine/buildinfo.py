"""What DeskLM runs on: versions, llama.cpp's build, where its files live (for About and bug
reports). Every reading is best effort: a missing piece says so instead of failing."""

from __future__ import annotations

import platform
import sys
from typing import Any


def llama_info() -> dict[str, Any]:
    """llama-cpp-python's version, llama.cpp's system info line and GPU offload support."""
    out: dict[str, Any] = {"version": "not installed", "system_info": "", "gpu_offload": False}
    try:
        import llama_cpp
    except Exception as e:  # an ImportError, or a shared library that fails to load
        out["version"] = f"unavailable ({type(e).__name__}: {e})"
        return out
    out["version"] = str(getattr(llama_cpp, "__version__", "?"))
    try:
        raw = llama_cpp.llama_print_system_info()
        out["system_info"] = (raw.decode("utf-8", "replace") if isinstance(raw, bytes)
                              else str(raw)).strip()
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
    for key, name in (("CUDA", "CUDA"), ("METAL", "Metal"), ("VULKAN", "Vulkan"),
                      ("ROCM", "ROCm"), ("HIP", "ROCm/HIP"), ("SYCL", "SYCL"),
                      ("OPENCL", "OpenCL")):
        if key in info:
            return f"{name} (GPU offload {'on' if gpu_offload else 'unavailable'})"
    return "CPU" + (" (GPU offload available)" if gpu_offload else "")


def paths() -> dict[str, str]:
    from desklm.engine.store.files import app_dirs

    d = app_dirs()
    return {"data": str(d.data), "config": str(d.config), "logs": str(d.log),
            "cache": str(d.cache)}


def versions() -> dict[str, str]:
    from desklm import __version__

    out = {"desklm": __version__, "python": platform.python_version(),
           "platform": f"{platform.system()} {platform.release()} ({platform.machine()})"}
    out["executable"] = sys.executable
    return out
