"""Search over saved chats: matches, snippets, ids, branches, staying current, and speed."""

import os
import time

import pytest

from desklm.bench.search import bench_search, bench_table
from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import ConversationStore
from desklm.engine.store.search import SearchIndex, fts_query


def chat(conv_id, title, *texts, extra=None):
    msgs = []
    for i, t in enumerate(texts):
        msgs.append(
            {
                "id": f"{conv_id}-m{i}",
                "role": "user" if i % 2 == 0 else "assistant",
                "content": t,
                "created": 1.0,
            }
        )
    if extra:
        msgs[-1].update(extra)
    return {
        "id": conv_id,
        "title": title,
        "created": 1.0,
        "model": "m.gguf",
        "settings": {},
        "messages": msgs,
    }


@pytest.fixture
def store(tmp_path):
    st = ConversationStore(tmp_path / "conversations")
    st.save(
        chat(
            "c1",
            "Sorting in Python",
            "How do I sort a list in Python?",
            "Use sorted(my_list) or my_list.sort(); both take a key= function.",
        )
    )
    st.save(
        chat(
            "c2",
            "Paris trip",
            "Where can I get a good Café au lait near the Louvre?",
            "Try the small cafés on Rue de Rivoli.",
            extra={
                "alternatives": [
                    {
                        "id": "old-reply",
                        "role": "assistant",
                        "content": "An older reply about croissants.",
                    }
                ],
                "alt_index": 1,
            },
        )
    )
    return st


@pytest.fixture
def index(store, tmp_path):
    ix = SearchIndex(store, path=tmp_path / "index.sqlite3")
    yield ix
    ix.close()


def test_matches_snippets_and_ids(index):
    r = index.search("sort list")
    assert r.hits and not r.partial
    hit = next(h for h in r.hits if h.message_id == "c1-m0")
    assert hit.conversation_id == "c1" and hit.role == "user" and hit.active
    assert hit.title == "Sorting in Python"
    assert [hit.snippet[a:b] for a, b in hit.spans] == ["sort", "list"]
    assert hit.marked("[", "]") == "How do I [sort] a [list] in Python?"
    # the prefix of a word finds it while typing; the title is a hit of its own
    hits = index.search("Pyth").hits
    assert {h.message_id for h in hits} >= {"c1-m0", None}
    assert next(h for h in hits if h.message_id is None).role == "title"


def test_case_and_accents_do_not_matter(index):
    assert {h.message_id for h in index.search("CAFE").hits} >= {"c2-m0", "c2-m1"}
    assert [h.message_id for h in index.search("rivoli").hits] == ["c2-m1"]
    assert index.search("café").hits and index.search("cafés").hits


def test_older_versions_are_found_and_marked_inactive(index, store, model_path):
    [hit] = index.search("croissants").hits
    assert hit.message_id == "old-reply" and hit.active is False
    s = ChatSession(model_path, store=store)  # no model needed to switch branches
    s.open_conversation("c2")
    i = s.reveal_message(hit.message_id)
    assert s.conversation.messages[i].content == "An older reply about croissants."


def test_query_syntax_is_never_fts_syntax(index):
    for q in [
        '"',
        'sort" OR "x',
        "NEAR(sort list)",
        "-sort",
        "text:sort",
        "*",
        "(",
        "",
        "   ",
        "sort AND",
        "'; DROP TABLE fts; --",
    ]:
        index.search(q)  # never raises
    assert fts_query("  ") is None
    assert fts_query('a"b') == '"a"* "b"*'


def test_results_follow_save_rename_and_delete(index, store):
    assert not index.search("xylophone").hits
    rec = store.load("c1")
    rec["messages"].append(
        {"id": "new", "role": "user", "content": "A xylophone question", "created": 2.0}
    )
    store.save(rec)
    assert [h.message_id for h in index.search("xylophone").hits] == ["new"]
    store.rename("c1", "Music lessons")
    assert [h.title for h in index.search("xylophone").hits] == ["Music lessons"]
    assert index.search("lessons").hits[0].message_id is None
    store.delete("c1")
    assert not index.search("xylophone").hits
    assert not index.search("lessons").hits


def test_an_unchanged_folder_is_not_rescanned_and_a_later_save_is_seen(index, store):
    index.sync()
    past = time.time() - 60
    os.utime(store.root, (past, past))  # the folder looks old and unchanged
    index.sync()
    assert index._dir_stamp is not None
    rec = store.load("c2")
    rec["title"] = "Lyon trip"
    store.save(rec)  # os.replace moves the folder's time
    assert index.search("lyon").hits


def test_the_index_file_is_opened_by_the_first_sync_not_by_its_maker(store, tmp_path):
    p = tmp_path / "later" / "index.sqlite3"
    ix = SearchIndex(store, path=p)  # what the window does on its UI thread
    assert not p.parent.exists()  # no file work yet
    ix.start_background_sync().join(60)
    assert p.exists() and not ix.problems
    assert ix.search("python").hits
    ix.close()
    ix.close()  # twice is harmless (the window closes it on quit)


def test_a_damaged_index_is_rebuilt(store, tmp_path):
    p = tmp_path / "broken.sqlite3"
    p.write_bytes(b"this is not a database" * 100)
    ix = SearchIndex(store, path=p)
    assert ix.search("python").hits
    ix.close()


def test_a_damaged_conversation_file_is_skipped(index, store):
    (store.root / "bad.json").write_text("{not json", "utf-8")
    assert index.search("python").hits
    assert (store.root / "bad.json").exists()  # the search never moves files


def test_two_thousand_chats(tmp_path):
    r = bench_search(2000, root=tmp_path)
    print("\n" + bench_table(r))
    assert r["found_after_save"]
    assert r["max_ms"] < 1000 and r["after_save_ms"] < 1000
