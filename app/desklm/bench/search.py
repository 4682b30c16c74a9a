"""Search time per keystroke over generated saved chats (``desklm bench --search``)."""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desklm.engine.store.files import ConversationStore
from desklm.engine.store.search import SearchIndex

_COMMON = (
    "the of and to a in is it you that for was on are with as i his they be at one "
    "have this from or had by not but what some we can out other were all there when "
    "up use your how said an each she which do their time if will way about many then "
    "them would like so these her long make thing see him two has look more day could "
    "go come did my no most who over know than call first people may down side been now "
    "find any new work part take get place made where after back little only"
).split()
_TOPICS = (
    "python list sort function error memory model token context reply question answer "
    "file data table thread queue server client cache index search message window "
    "café résumé naïve garden kitchen travel recipe budget invoice meeting schedule "
    "weather music guitar piano history physics chemistry biology planet ocean river "
    "mountain forest village market price delivery"
).split()


def _vocabulary(rng: Any, n: int = 6000) -> tuple[list[str], list[float]]:
    """Content words with Zipf weights (the k-th most common has weight 1/k), the topic words
    spread over the common-to-rare ranks, like the words of real chats."""
    syll = [
        "ka",
        "lo",
        "mi",
        "ter",
        "van",
        "so",
        "rel",
        "dun",
        "pa",
        "gri",
        "shen",
        "ob",
        "ul",
        "ne",
        "fa",
        "zor",
        "tia",
        "bre",
        "ment",
        "ing",
        "ax",
        "qui",
        "lem",
        "dor",
    ]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        w = "".join(rng.choice(syll) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    for k, t in enumerate(_TOPICS):  # ranks 20, 45, 70, ...: frequent to rare
        words.insert(min(len(words), 20 + 25 * k), t)
    return words, [1.0 / (k + 1) for k in range(len(words))]


BENCH_QUERIES = (
    "python sort list",
    "memory error in thread",
    "recipe kitchen",
    "cafe resume",
    "zzqx",
)


def make_chats(root: Path, n: int = 2000, seed: int = 1) -> int:
    """Write ``n`` realistic saved chats (schema 2, some with versions) into ``root``; returns
    the number of messages. Text: half common English words, half content words drawn with
    Zipf frequencies. Plain writes (no fsync): this is generated test data."""
    import itertools

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    words, weights = _vocabulary(rng)
    cum = list(itertools.accumulate(weights))
    total = 0
    now = time.time()

    def text(lo: int, hi: int) -> str:
        k = rng.randint(lo, hi)
        content = rng.choices(words, cum_weights=cum, k=k)
        return " ".join(
            c if rng.random() < 0.5 else rng.choice(_COMMON) for c in content
        ).capitalize()

    for c in range(n):
        msgs = []
        for t in range(rng.randint(2, 10)):
            msgs.append({"id": f"u{c}x{t}", "role": "user", "content": text(5, 40), "created": now})
            msgs.append(
                {
                    "id": f"a{c}x{t}",
                    "role": "assistant",
                    "content": text(20, 200),
                    "created": now,
                    "stats": {"completion_tokens": 50},
                }
            )
        if rng.random() < 0.2:  # a regenerated last reply
            msgs[-1]["alternatives"] = [
                {"id": f"r{c}", "role": "assistant", "content": text(20, 120), "created": now}
            ]
            msgs[-1]["alt_index"] = 1
        total += len(msgs)
        rec = {
            "schema": 2,
            "id": f"bench{c:05d}",
            "title": text(2, 7),
            "created": now,
            "updated": now - c,
            "model": "bench.gguf",
            "settings": {},
            "context_start": 0,
            "messages": msgs,
        }
        (root / f"bench{c:05d}.json").write_text(json.dumps(rec), "utf-8")
    return total


def bench_search(
    n_chats: int = 2000, root: Path | None = None, say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Search time per keystroke on ``n_chats`` generated saved chats: each bench query is
    typed one character at a time and searched after every keystroke, as the search box
    does. Also times the first build and catching up after one chat is saved."""

    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="desklm-search-bench-")
        root = Path(tmp.name)
    try:
        conv = root / "conversations"
        t0 = time.perf_counter()
        n_msgs = make_chats(conv, n_chats)
        if say:
            say(f"wrote {n_chats} chats ({n_msgs} messages) in {time.perf_counter() - t0:.1f} s")
        index = SearchIndex(ConversationStore(conv), path=root / "index.sqlite3")
        t0 = time.perf_counter()
        index.sync()
        build_s = time.perf_counter() - t0
        times: list[float] = []
        for q in BENCH_QUERIES:
            for k in range(1, len(q) + 1):
                times.append(index.search(q[:k]).elapsed_s)
        # one chat saved (through the store, as the app does): the next keystroke catches up
        store = ConversationStore(conv)
        rec = store.load("bench00007")
        rec["messages"].append(
            {"id": "new1", "role": "user", "content": "xylophone lesson", "created": time.time()}
        )
        store.save(rec)
        r = index.search("xylophone")
        after_save_s = r.elapsed_s
        found = any(h.message_id == "new1" for h in r.hits)
        index.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    times.sort()
    return {
        "chats": n_chats,
        "messages": n_msgs,
        "build_s": round(build_s, 3),
        "keystrokes": len(times),
        "median_ms": round(1000 * statistics.median(times), 2),
        "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 2),
        "max_ms": round(1000 * times[-1], 2),
        "after_save_ms": round(1000 * after_save_s, 2),
        "found_after_save": found,
    }


def bench_table(r: dict[str, Any]) -> str:
    return (
        f"search on {r['chats']:,} saved chats ({r['messages']:,} messages): first build "
        f"{r['build_s']:.2f} s; per keystroke ({r['keystrokes']} keystrokes) median "
        f"{r['median_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, max {r['max_ms']:.1f} ms; "
        f"after a save {r['after_save_ms']:.1f} ms (target < 200 ms)"
    )
