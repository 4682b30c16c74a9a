"""kill -9 in the middle of saving never corrupts the store or loses a completed turn."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

from desklm.engine.store.files import ConversationStore

WRITER = r"""
import sys
from pathlib import Path
from desklm.engine.store.files import ConversationStore, StoreError
st = ConversationStore(Path(sys.argv[1]))
try:
    rec = st.load("soak")
except StoreError:
    rec = {"id": "soak", "title": "kill -9", "created": 0, "messages": []}
n = len(rec["messages"]) // 2
big = "x" * 200_000  # a long reply: each save takes a while, so kills land mid-write
while True:
    n += 1
    rec["messages"].append({"role": "user", "content": f"question {n}"})
    rec["messages"].append({"role": "assistant", "content": f"answer {n} " + big})
    st.save(rec)
    print(n, flush=True)  # this turn is complete and saved
"""


def test_kill_9_while_saving_never_loses_a_completed_turn(tmp_path):
    rng = random.Random(1234)
    completed = 0
    kills = 0
    for _ in range(25):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        first = p.stdout.readline()  # wait until it is really writing
        assert first.strip()
        time.sleep(rng.uniform(0.0, 0.15))
        p.kill()  # SIGKILL: no cleanup, no flush, no atexit
        out, _ = p.communicate()
        kills += 1
        acked = [int(x) for x in (first + out).split()]
        completed = max(completed, *acked)
        rec = ConversationStore(tmp_path).load("soak")  # parses, or this raises
        turns = len(rec["messages"]) // 2
        assert turns >= completed, (turns, completed)
        assert rec["messages"][-1]["content"].startswith(f"answer {turns} ")
    assert kills == 25 and completed > 25
    leftovers = [f.name for f in tmp_path.iterdir() if f.name != "soak.json"]
    # killed writers may leave their temp file behind; never a damaged conversation
    assert all(n.startswith(".soak.json.") and n.endswith(".tmp") for n in leftovers)
    from desklm.engine.store.files import SCHEMA_VERSION

    assert json.loads((tmp_path / "soak.json").read_text("utf-8"))["schema"] == SCHEMA_VERSION
