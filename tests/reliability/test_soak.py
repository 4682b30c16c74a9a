"""300 turns on a small context: trimming all the time, no exception, flat memory, all saved.

Slow (a few minutes), so outside the default run: ``python -m pytest -m soak``.
"""

from __future__ import annotations

import gc

import psutil
import pytest

from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import ConversationStore
from tests.conftest import small_settings

TURNS = 300
WARMUP = 30


@pytest.mark.soak
def test_300_turns_small_context(model_path, tmp_path):
    store = ConversationStore(tmp_path)
    s = ChatSession(model_path, small_settings(n_ctx=512, max_tokens=16), store=store)
    s.load()
    proc = psutil.Process()
    rss_after_warmup = 0
    trims = 0
    topics = ["rivers", "mountains", "the sea", "bread", "trains", "music", "stars"]
    for i in range(TURNS):
        before_start = s.conversation.context_start
        r = s.send(f"Turn {i}: tell me one thing about {topics[i % len(topics)]}. " * 3)
        dropped = s.conversation.context_start - before_start
        assert len(r.stats.trimmed) == dropped  # every trim is reported, exactly
        trims += bool(r.stats.trimmed)
        assert r.stats.prompt_tokens + 1 <= 512
        if i == WARMUP:
            gc.collect()
            rss_after_warmup = proc.memory_info().rss
    gc.collect()
    rss_end = proc.memory_info().rss
    growth = (rss_end - rss_after_warmup) / rss_after_warmup
    print(
        f"\nsoak: {TURNS} turns, {trims} trimmed, RSS after warm-up "
        f"{rss_after_warmup / 2**20:.1f} MB, at the end {rss_end / 2**20:.1f} MB "
        f"({growth:+.1%})"
    )
    assert trims > TURNS // 2
    assert growth < 0.10
    rec = store.load(s.conv_id)
    assert len(rec["messages"]) == 2 * TURNS  # the saved conversation is complete
    assert rec["messages"][-2]["content"].startswith(f"Turn {TURNS - 1}:")
    s.engine.unload()
