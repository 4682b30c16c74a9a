"""The real CLI as a subprocess, on the real model."""

import json

import pytest

from desklm import __version__
from tests.conftest import run_cli

KEYS = {
    "reply",
    "prompt_tokens",
    "prompt_tokens_reused",
    "completion_tokens",
    "ttft_s",
    "prompt_tokens_per_s",
    "gen_tokens_per_s",
    "finish_reason",
    "context_used",
    "n_ctx",
    "trimmed",
}


def test_version_names_desklm_and_the_llama_cpp_build():
    import ctypes

    import llama_cpp
    from llama_cpp import _ggml

    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"desklm {__version__}"
    # llama.cpp's own version and commit, read here straight from the shared libraries
    commit_fn = _ggml.libggml.ggml_commit
    commit_fn.restype = ctypes.c_char_p
    llama = llama_cpp.llama_version().decode()
    commit = commit_fn().decode()
    assert lines[1].startswith(f"llama.cpp {llama} (commit {commit}, ggml ")
    assert lines[1].endswith(f" via llama-cpp-python {llama_cpp.__version__}")
    assert lines[2] == "backend: CPU"  # this machine's build has no GPU backend
    sysinfo = llama_cpp.llama_print_system_info().decode().strip().rstrip(" |")
    assert f"build: {sysinfo}" in lines


def test_json_chat_piped(model_path):
    r = run_cli(
        "chat",
        "--json",
        "--max-tokens",
        "12",
        "--ctx",
        "1024",
        "--seed",
        "3",
        stdin="Hello!\n/stats\nHow are you?\n/reset\n/bogus\nAgain?\n",
    )
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    turns = [o for o in objs if "reply" in o]
    cmds = [o for o in objs if "command" in o]
    assert len(turns) == 3 and [c["command"] for c in cmds] == ["stats", "reset"]
    for t in turns:
        assert t.keys() >= KEYS
        assert t["n_ctx"] == 1024 and t["trimmed"] == []
        assert 0 < t["completion_tokens"] <= 12
    assert turns[1]["prompt_tokens_reused"] >= turns[0]["prompt_tokens"]
    assert turns[2]["prompt_tokens_reused"] == 0  # after /reset
    errors = [o for o in objs if "error" in o]
    assert len(errors) == 1 and "unknown command '/bogus'" in errors[0]["error"]
    assert "Traceback" not in r.stderr


def test_text_chat_streams_and_prints_stats(model_path):
    r = run_cli("chat", "--max-tokens", "8", stdin="Hi\n")
    assert r.returncode == 0
    assert "tok/s" in r.stdout and "first token" in r.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    for args, needle in [
        (["chat", "--model", str(tmp_path / "none.gguf")], "no such file"),
        (["chat", "--ctx", "0"], "n_ctx = 0 is out of range"),
        (["chat", "--threads", "abc"], "not a valid int"),
        (["chat", "--model", str(tmp_path)], "is a directory"),
        (["chat", "--ctx", "65536"], "512 to 32768"),
    ]:
        r = run_cli(*args, stdin="hi\n")
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("desklm: error: "), r.stderr
        assert needle in lines[0]
        assert "Traceback" not in r.stderr


def test_chat_is_saved_and_history_lists_shows_and_exports_it(tmp_path):
    r = run_cli("chat", "--json", "--max-tokens", "6", stdin="Remember the word pineapple\n")
    assert r.returncode == 0, r.stderr
    conv_id = json.loads(r.stdout.splitlines()[0])["conversation_id"]
    listed = json.loads(run_cli("history", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [conv_id] and listed[0]["messages"] == 2
    assert listed[0]["title"] == "Remember the word pineapple"
    shown = run_cli("history", "show", conv_id)
    assert shown.returncode == 0 and "## You\n\nRemember the word pineapple" in shown.stdout
    out = tmp_path / "c.json"
    ex = run_cli("history", "export", conv_id, "--format", "json", "-o", str(out))
    assert ex.returncode == 0 and json.loads(out.read_text("utf-8"))["id"] == conv_id
    missing = run_cli("history", "show", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("desklm: error: no conversation")


def test_no_save_leaves_no_file(data_dir):
    r = run_cli("chat", "--no-save", "--max-tokens", "4", stdin="Hi\n")
    assert r.returncode == 0
    assert not list(data_dir.glob("**/*.json"))


@pytest.mark.parametrize("where", ["before", "after"])
def test_data_dir_flag_moves_the_store_before_or_after_the_command(tmp_path, where):
    d = tmp_path / "elsewhere"
    args = ["--data-dir", str(d), "chat"] if where == "before" else ["chat", "--data-dir", str(d)]
    r = run_cli(*args, "--max-tokens", "4", stdin="Hi\n")
    assert r.returncode == 0, r.stderr
    assert len(list((d / "data" / "conversations").glob("*.json"))) == 1


def test_history_and_models_with_no_action_list(tmp_path):
    d = tmp_path / "d"
    run_cli("--data-dir", str(d), "chat", "--max-tokens", "4", stdin="Listed chat\n")
    r = run_cli("history", "--data-dir", str(d))
    assert r.returncode == 0 and "Listed chat" in r.stdout, r.stderr
    assert r.stdout == run_cli("history", "list", "--data-dir", str(d)).stdout
    m = run_cli("models")
    assert m.returncode == 0 and "embedded" in m.stdout, m.stderr


def test_pull_without_a_network_says_the_hub_cannot_be_reached(monkeypatch):
    r = run_cli(
        "models",
        "pull",
        "someone/Some-GGUF",
        env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://desklm-no-such-host.invalid"},
    )
    assert r.returncode == 2
    assert r.stderr.startswith("desklm: error: cannot reach Hugging Face (desklm-no-such-host")
    assert r.stderr.count("\n") == 1


def test_terminal_turns_run_on_the_one_inference_thread(model_path, data_dir):
    """desklm chat submits its load and turns to the engine's Runner ("inference" thread),
    as the window and the API server do; the log records the thread of each line."""
    r = run_cli("--debug", "chat", "--max-tokens", "4", "--ctx", "1024", stdin="Hi\n")
    assert r.returncode == 0, r.stderr
    log = (data_dir / "logs" / "desklm.log").read_text("utf-8")
    loaded = [ln for ln in log.splitlines() if " loaded " in ln and "desklm.engine" in ln]
    assert loaded and all("[inference]" in ln for ln in loaded), loaded


def test_piped_text_output_labels_who_speaks(model_path):
    r = run_cli(
        "chat",
        "--no-save",
        "--max-tokens",
        "12",
        "--ctx",
        "1024",
        "--temperature",
        "0",
        stdin="What is the capital of France?\n",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "you: What is the capital of France?"
    assert lines[1].startswith("Gemma 3 270m: ") and len(lines[1]) > len("Gemma 3 270m: ")
    assert lines[2].startswith("[") and "tokens" in lines[2]


@pytest.mark.parametrize(
    ("argv", "ctx", "model", "as_json"),
    [
        (["--ctx", "1024", "chat"], "1024", None, False),  # before the command: kept
        (["chat", "--ctx", "1024"], "1024", None, False),
        (["--model", "M.gguf", "chat"], None, "M.gguf", False),
        (["history", "--json"], None, None, True),  # no action: list, and --json means it
        (["history", "--json", "list"], None, None, True),
        (["history", "list", "--json"], None, None, True),
        (["models", "--json"], None, None, True),
    ],
)
def test_flags_before_the_command_are_not_reset_by_the_command(argv, ctx, model, as_json):
    from desklm.cli import build_parser

    a = build_parser().parse_args(argv)
    assert (a.setting_n_ctx, a.model, getattr(a, "json", False)) == (ctx, model, as_json)
