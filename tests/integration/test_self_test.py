"""`desklm --self-test` as a user would run it: a subprocess, offscreen, the real window."""

import json

from tests.conftest import run_cli


def test_self_test_chats_resets_and_saves_a_screenshot(tmp_path, model_path):
    shot = tmp_path / "shot.png"
    r = run_cli(
        "--self-test",
        "--screenshot",
        str(shot),
        "--max-tokens",
        "48",
        env={"QT_QPA_PLATFORM": "offscreen"},
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["reset_ok"] is True
    assert summary["model"] == "Gemma 3 270m" and summary["chat_format"] == "dialogue"
    assert summary["completion_tokens"] > 0 and summary["tokens_per_s"] > 0
    assert summary["gauges"]["vram"].startswith("No NVIDIA GPU")
    # the window was on screen before the model finished loading
    assert summary["window_visible_s"] < summary["loaded_at_s"]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "Traceback" not in r.stderr


def test_self_test_fails_with_a_reason_on_a_bad_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"\x00" * 100)
    r = run_cli("--self-test", "--model", str(bad), env={"QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 1
    assert "desklm: error: self-test failed:" in r.stderr and "not a GGUF model file" in r.stderr
    assert "Traceback" not in r.stderr
