"""Bad model files, bad settings, failed contexts: a one-line reason, and nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.chat.session import ChatSession
from desklm.engine.models.gguf_info import read_gguf
from desklm.errors import DeskLMError
from tests.conftest import run_cli, small_settings
from tests.reliability.conftest import PAYLOAD_MARKER, REASONS


@pytest.mark.parametrize("case", list(REASONS))
def test_bad_file_in_the_engine_keeps_the_previous_model(case, bad_files, model_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings())
    try:
        with pytest.raises(DeskLMError) as e:
            eng.load(bad_files[case], small_settings())
        msg = str(e.value)
        assert REASONS[case] in msg and "\n" not in msg
        assert eng.loaded and eng.load_info.path == model_path  # still chatting
        s = ChatSession(model_path, small_settings(max_tokens=4), engine=eng)
        assert s.send("still fine?").stats.completion_tokens > 0
    finally:
        eng.unload()


@pytest.mark.parametrize("case", list(REASONS))
def test_bad_file_in_the_cli_is_one_line_and_exit_2(case, bad_files):
    r = run_cli("chat", "--model", str(bad_files[case]), stdin="hi\n")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-500:]
    assert len(lines) == 1 and lines[0].startswith("desklm: error: ")
    assert REASONS[case] in lines[0]


def test_header_checks_alone_do_not_catch_the_abort_so_the_probe_must(bad_files):
    # the point of the child-process probe: this file passes every header check...
    assert read_gguf(bad_files["llama.cpp abort"]).block_count == 0
    # ...and kills a process that loads it directly
    path = str(bad_files["llama.cpp abort"])
    code = f"import llama_cpp; llama_cpp.Llama({path!r}, verbose=False)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode < 0  # died on a signal


def test_an_unreadable_file(model_path):
    # root reads every file, so a child process drops to 'nobody' before it reads
    import tempfile

    d = Path(tempfile.mkdtemp())
    try:
        d.chmod(0o755)
        f = d / "private.gguf"
        f.write_bytes(model_path.read_bytes()[: 1 << 20])
        f.chmod(0o600)
        code = (
            "import os, mmap, gguf.constants  # imports first: /root is closed to nobody\n"
            "from desklm.engine.models.gguf_info import read_gguf\n"
            "from desklm.errors import DeskLMError\n"
            "if os.geteuid() == 0:\n    os.setgid(65534); os.setuid(65534)\n"
            f"try:\n    read_gguf({str(f)!r})\nexcept DeskLMError as e:\n    print(e)"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == f"{f}: permission denied", r.stderr[-500:]
    finally:
        import shutil

        shutil.rmtree(d)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ctx", "0"], "n_ctx = 0 is out of range; allowed: 512 to"),
        (["--ctx", "-4096"], "n_ctx = -4096 is out of range"),
        (["--ctx", "40000"], "allowed: 512 to 32768"),  # beyond the training context
        (["--threads", "0"], "n_threads = 0 is out of range"),
        (["--threads", str((os.cpu_count() or 1) + 1)], "n_threads"),
        (["--gpu-layers", "500"], "n_gpu_layers = 500 is out of range; allowed: 0 to 19"),
        (["--temperature", "-1"], "temperature = -1"),
        (["--max-tokens", "0"], "max_tokens = 0 is out of range"),
    ],
)
def test_bad_settings_name_the_setting_and_its_range(args, needle):
    r = run_cli("chat", *args, stdin="hi\n")
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_bad_set_commands_keep_the_session_going():
    r = run_cli(
        "chat",
        "--json",
        "--max-tokens",
        "4",
        stdin="/set n_ctx 0\n/set colour red\n/set n_gpu_layers 99\n/set temperature x\nhello\n",
    )
    import json

    out = [json.loads(x) for x in r.stdout.splitlines()]
    errors = [o["error"] for o in out if "error" in o]
    assert r.returncode == 0 and len(errors) == 4
    assert "n_ctx = 0 is out of range" in errors[0]
    assert "unknown setting 'colour'" in errors[1] and "known settings" in errors[1]
    assert "allowed: 0 to 19" in errors[2]
    assert "not a valid float" in errors[3]
    assert out[-1]["completion_tokens"] > 0


def test_a_context_that_fails_to_create_is_reported_with_a_suggestion(model_path):
    eng = ChatEngine()
    eng.load(model_path, small_settings())
    try:
        s = small_settings(kv_cache_type="q8_0", flash_attn=False)
        with pytest.raises(DeskLMError) as e:
            eng._load(read_gguf(model_path), s, [])  # past our own pre-check: llama.cpp's word
        msg = str(e.value)
        assert "could not load" in msg and "flash" in msg.lower()
        assert "turn flash attention on, or use kv_cache_type f16" in msg
        # through the normal path the pre-check says so before llama.cpp is asked
        with pytest.raises(DeskLMError, match="needs flash attention"):
            eng.load(model_path, s)
    finally:
        eng.unload()


def test_a_hostile_chat_template_is_inert(hostile_template_model, tmp_path):
    marker = Path("/tmp") / PAYLOAD_MARKER
    marker.unlink(missing_ok=True)
    eng = ChatEngine()
    info = eng.load(hostile_template_model, small_settings())
    try:
        assert read_gguf(hostile_template_model).chat_template  # the payload is in the file
        assert info.chat_format == "gemma"  # rejected, the built-in format used instead
        assert any("chat template failed" in n for n in info.notes)
        s = ChatSession(hostile_template_model, small_settings(max_tokens=4), engine=eng)
        assert s.send("hello").stats.completion_tokens > 0
        assert not marker.exists()  # the shell command never ran
    finally:
        eng.unload()


def test_unicode_nul_empty_and_huge_messages(engine, model_path):
    s = ChatSession(model_path, small_settings(max_tokens=6), engine=engine)
    s.reset()
    for text in [
        "مرحبا بالعالم — שלום",
        "emoji 👩‍👩‍👧‍👦🚀 and e\u0301 a\u0308 combining",
        "nul\x00in the middle",
        "\u202eright-to-left override",
        "zero\u200bwidth",
    ]:
        r = s.send(text)
        assert r.stats.completion_tokens >= 0
    assert s.conversation.messages[4].content == "nulin the middle"  # NUL removed, rest kept
    with pytest.raises(DeskLMError, match="empty message"):
        s.send("   \n ")
    with pytest.raises(DeskLMError, match="message too long"):
        s.send("x" * 100_000)
    assert len(s.conversation.messages) == 10  # the refused ones added nothing
