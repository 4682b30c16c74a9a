"""What DeskLM says it runs on: llama.cpp's version and build, read from the real libraries."""

from __future__ import annotations

import ctypes

import llama_cpp

from desklm import __version__
from desklm.engine import buildinfo


def test_llama_info_reads_the_loaded_library():
    info = buildinfo.llama_info()
    assert info["version"] == llama_cpp.__version__
    assert info["llama_cpp"] == llama_cpp.llama_version().decode()
    from llama_cpp import _ggml

    fn = _ggml.libggml.ggml_version
    fn.restype = ctypes.c_char_p
    assert info["ggml"] == fn().decode() and info["commit"]
    assert info["system_info"].startswith("CPU :") and not info["system_info"].endswith("|")


def test_a_library_that_does_not_say_its_version_is_named_so():
    line = buildinfo.llama_build({"version": "0.3.36", "llama_cpp": "", "commit": "", "ggml": ""})
    assert line == "llama.cpp (version unknown) via llama-cpp-python 0.3.36"
    line = buildinfo.llama_build(
        {"version": "0.3.36", "llama_cpp": "0.5.0", "commit": "abc", "ggml": ""}
    )
    assert line == "llama.cpp 0.5.0 (commit abc) via llama-cpp-python 0.3.36"


def test_version_text_starts_with_desklm_and_names_the_backend():
    lines = buildinfo.version_text().splitlines()
    assert lines[0] == f"desklm {__version__}"
    assert lines[1].startswith("llama.cpp ") and lines[2].startswith("backend: ")
    assert lines[-1].startswith("Python ")
