"""The model file changing under a loaded model: truncated, rewritten in place, replaced.

llama.cpp maps the file; a truncated mapping is SIGBUS at the next read. Each case runs in a
child process, so a regression shows as a child killed by a signal, not a dead test run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import json, os, sys
from pathlib import Path
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.chat.session import ChatSession
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError
path, case, mmap = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "mmap"
eng = ChatEngine()
eng.probe = False
settings = Settings({"n_ctx": 512, "max_tokens": 3, "seed": 1, "use_mmap": mmap})
s = ChatSession(path, settings, engine=eng)
s.load()
s.send("first")
size = path.stat().st_size
if case == "truncated":
    os.truncate(path, size // 3)
elif case == "rewritten in place":  # same size, same inode, new bytes (like cp over it)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(1 << 20))
elif case == "replaced":  # a new file renamed over the old name
    tmp = path.with_suffix(".new")
    with open(path, "rb") as a, open(tmp, "wb") as b:
        b.write(a.read())
    os.replace(tmp, path)
elif case == "deleted":
    path.unlink()
out = {"messages": len(s.conversation.messages)}
try:
    r = s.send("second")
    out["second"] = r.stats.completion_tokens
except DeskLMError as e:
    out["error"] = str(e)
out["after"] = len(s.conversation.messages)
print(json.dumps(out))
"""


def run_child(model_copy: Path, case: str, mmap: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_copy), case, "mmap" if mmap else "read"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, f"child died (rc {r.returncode}): {r.stderr[-1000:]}"
    return json.loads(r.stdout)


@pytest.fixture
def model_copy(model_path, tmp_path) -> Path:
    dst = tmp_path / "copy.gguf"
    shutil.copyfile(model_path, dst)
    return dst


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("truncated", "changed on disk while loaded (size"),
        ("rewritten in place", "changed on disk while loaded (rewritten)"),
        ("replaced", "was replaced on disk after it was loaded"),
    ],
)
def test_a_changed_model_file_stops_the_turn_with_a_reason(model_copy, case, needle):
    out = run_child(model_copy, case)
    assert needle in out["error"] and "reload" in out["error"] and "\n" not in out["error"]
    assert out["after"] == out["messages"] == 2  # the refused turn added nothing


def test_a_deleted_file_or_a_model_in_ram_goes_on(model_copy, model_path, tmp_path):
    assert run_child(model_copy, "deleted")["second"] > 0  # mapped data outlive the name
    other = tmp_path / "other.gguf"
    shutil.copyfile(model_path, other)
    assert run_child(other, "truncated", mmap=False)["second"] > 0  # read into RAM: safe
