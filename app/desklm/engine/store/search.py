"""Search over every saved chat: titles and message text, in every branch.

The index is an SQLite FTS5 table (the stdlib ``sqlite3``) in the cache dir, one file per
conversations folder, so it survives restarts and only changed chats are read again:

* :meth:`SearchIndex.sync` brings it up to date with the folder: it compares each file's size
  and modification time with what was indexed, reads only new or changed files and drops the
  deleted ones. When the folder's own modification time has not moved since the last sync (every
  save, rename and delete is an ``os.replace`` or unlink, which moves it), nothing is scanned.
  Every :meth:`SearchIndex.search` calls it first, so results follow saves made by any DeskLM
  process; the window should call :meth:`SearchIndex.start_background_sync` once at start so the
  first search does not wait for the first build.
* Matching is per word, case- and accent-insensitive (``unicode61 remove_diacritics 2``: "cafe"
  finds "Café"), every word of the query must occur in the message, and each query word also
  matches as a prefix, so results appear while the user is typing ("pyth" finds "Python").
* Every version of every message is searched (older replies kept by regenerate, the branch left
  behind by an edit): nothing you wrote becomes unfindable. A hit says whether its message is on
  the active path (``active``); ``ChatSession.reveal_message(message_id)`` switches the chat to
  the branch that holds it.
* Results are ordered by relevance (FTS5's bm25); a query so broad that it matches more than
  2,000 messages (a single letter, "the") lists the most recently saved matches first instead,
  which is what such a query is good for and keeps every keystroke fast.
* A hit carries the conversation id, the message id (``None`` for a title hit), the role, the
  chat's title and a snippet of a few words around the match with the matched words' spans.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desklm.engine.chat.branches import walk_dicts
from desklm.engine.store.files import ConversationStore, app_dirs
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.search")

INDEX_VERSION = 1
BATCH = 200  # files indexed per transaction; searches run between batches
MAX_FILE = 64 * 2**20  # a conversation file bigger than this is not indexed
SNIPPET_WORDS = 12
RANK_LIMIT = 2000  # matches above which results are newest first, not by relevance
_OPEN, _CLOSE = "\x02", "\x03"  # match markers inside snippets (removed from indexed text)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class SearchHit:
    conversation_id: str
    message_id: str | None  # None: the match is in the chat's title
    role: str  # "title", "user" or "assistant"
    title: str
    snippet: str  # a few words around the match, plain text
    spans: list[tuple[int, int]]  # [start, end) of each matched word in ``snippet``
    active: bool  # the message is on the chat's active path (not in an older version)
    updated: float = 0.0

    def marked(self, open_mark: str = "«", close_mark: str = "»") -> str:
        """The snippet with each match wrapped in the given marks."""
        out, pos = [], 0
        for a, b in self.spans:
            out += [self.snippet[pos:a], open_mark, self.snippet[a:b], close_mark]
            pos = b
        out.append(self.snippet[pos:])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "role": self.role,
            "title": self.title,
            "snippet": self.snippet,
            "spans": [list(s) for s in self.spans],
            "active": self.active,
            "updated": self.updated,
        }


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit] = field(default_factory=list)
    elapsed_s: float = 0.0
    partial: bool = False  # the index was still being built: more chats may match later

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "elapsed_s": round(self.elapsed_s, 6),
            "partial": self.partial,
            "hits": [h.to_dict() for h in self.hits],
        }


def fts_query(text: str) -> str | None:
    """The user's text as an FTS5 query: every word required, each also as a prefix. Words
    only: quotes, operators and column filters in the text are never FTS syntax."""
    words = _WORD.findall(text.casefold())
    if not words:
        return None
    return " ".join(f'"{w}"*' for w in words[:32])


def _clean(text: str) -> str:
    return text.replace(_OPEN, " ").replace(_CLOSE, " ").replace("\x00", "")


def _split_snippet(raw: str) -> tuple[str, list[tuple[int, int]]]:
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos, start = 0, -1
    for ch in raw:
        if ch == _OPEN:
            start = pos
        elif ch == _CLOSE:
            if start >= 0:
                spans.append((start, pos))
            start = -1
        else:
            out.append(ch)
            pos += 1
    return " ".join("".join(out).split("\n")).replace("\r", " "), spans


def fts5_available() -> bool:
    try:
        con = sqlite3.connect(":memory:")
        try:
            con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        finally:
            con.close()
        return True
    except sqlite3.Error:
        return False


def index_path_for(root: Path) -> Path:
    """The index file for a conversations folder (one per folder, in the cache dir)."""
    key = hashlib.sha256(str(Path(root).expanduser().absolute()).encode()).hexdigest()[:16]
    return app_dirs().cache / "search" / f"index-{key}.sqlite3"


class SearchIndex:
    """A full-text index of a :class:`ConversationStore`'s folder. Thread safe: one writer at a
    time syncs; searches run between its batches (``partial`` says the build is not done)."""

    def __init__(self, store: ConversationStore | None = None, path: Path | None = None) -> None:
        if not fts5_available():
            raise DeskLMError("search needs SQLite with FTS5, which this Python's sqlite3 lacks")
        self.root = (store or ConversationStore()).root
        self.path = path if path is not None else index_path_for(self.root)
        self._lock = threading.RLock()  # the connection
        self._sync_lock = threading.Lock()  # one sync at a time
        self._dir_stamp: int | None = None
        self._building = False
        self._thread: threading.Thread | None = None
        self.problems: list[str] = []
        self._opened: sqlite3.Connection | None = None

    # -- the database --
    @property
    def _con(self) -> sqlite3.Connection:
        """The connection, opened (and created, or rebuilt if damaged) on first use: by the
        thread that first syncs or searches, never by whoever builds the index (the window
        builds it on the UI thread, which does no file work)."""
        with self._lock:
            if self._opened is None:
                self._opened = self._open()
            return self._opened

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            try:
                con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version != INDEX_VERSION:
                    self._create(con)
                con.execute("SELECT count(*) FROM files").fetchone()
                return con
            except sqlite3.Error as e:  # a damaged or foreign file: start over
                log.warning("search index %s unusable (%s); rebuilding", self.path, e)
                with contextlib.suppress(Exception):
                    con.close()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        os.unlink(str(self.path) + suffix)
                if attempt == 2:
                    raise DeskLMError(
                        f"could not create the search index {self.path}: {e}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _create(con: sqlite3.Connection) -> None:
        con.executescript(
            """
            PRAGMA journal_mode = WAL;
            DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS fts;
            CREATE TABLE files(conv_id TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER,
                               title TEXT, updated REAL);
            CREATE TABLE meta(rowid INTEGER PRIMARY KEY, conv_id TEXT NOT NULL,
                              msg_id TEXT, role TEXT, active INTEGER);
            CREATE INDEX meta_conv ON meta(conv_id);
            CREATE VIRTUAL TABLE fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2',
                                              prefix = '1 2 3');
            """
        )
        con.execute(f"PRAGMA user_version = {INDEX_VERSION}")

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None

    # -- keeping up with the folder --
    def _remove(self, conv_id: str) -> None:
        c = self._con
        c.execute(
            "DELETE FROM fts WHERE rowid IN (SELECT rowid FROM meta WHERE conv_id = ?)", (conv_id,)
        )
        c.execute("DELETE FROM meta WHERE conv_id = ?", (conv_id,))
        c.execute("DELETE FROM files WHERE conv_id = ?", (conv_id,))

    def _add(self, conv_id: str, stamp: tuple[int, int], data: dict[str, Any] | None) -> None:
        c = self._con
        self._remove(conv_id)
        if data is None:  # unreadable: remembered so it is not read again until it changes
            c.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?)", (conv_id, stamp[0], stamp[1], "", 0.0)
            )
            return
        title = data.get("title") if isinstance(data.get("title"), str) else ""
        updated = data.get("updated")
        updated = (
            float(updated)
            if isinstance(updated, int | float) and not isinstance(updated, bool)
            else 0.0
        )
        c.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
            (conv_id, stamp[0], stamp[1], title or "New chat", updated),
        )
        rows: list[tuple[str | None, str, int, str]] = []
        if title:
            rows.append((None, "title", 1, title))
        for m, active in walk_dicts(data.get("messages")):
            content, role = m.get("content"), m.get("role")
            if isinstance(content, str) and content.strip() and role in ("user", "assistant"):
                mid = m.get("id")
                rows.append((mid if isinstance(mid, str) else None, role, int(active), content))
        for row_mid, row_role, flag, text in rows:
            cur = c.execute(
                "INSERT INTO meta(conv_id, msg_id, role, active) VALUES (?,?,?,?)",
                (conv_id, row_mid, row_role, flag),
            )
            c.execute("INSERT INTO fts(rowid, text) VALUES (?, ?)", (cur.lastrowid, _clean(text)))

    @staticmethod
    def _read(p: Path, size: int) -> dict[str, Any] | None:
        if size > MAX_FILE:
            return None
        try:
            data = json.loads(p.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def _scan(self) -> tuple[dict[str, tuple[int, int]] | None, int | None]:
        """({conversation id: (mtime_ns, size)} of the folder's files, or None when nothing
        changed since the last sync; the folder's stamp to remember once synced)."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return {}, None
        except OSError as e:
            raise DeskLMError(f"could not read {self.root}: {e.strerror or e}") from None
        recent = time.time() - st.st_mtime < 2.0  # coarse clocks: do not trust a fresh stamp
        if not recent and self._dir_stamp == st.st_mtime_ns:
            return None, self._dir_stamp
        found: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        with contextlib.suppress(OSError):
                            fst = entry.stat()
                            found[entry.name[:-5]] = (fst.st_mtime_ns, fst.st_size)
        except OSError as err:
            raise DeskLMError(f"could not read {self.root}: {err.strerror or err}") from None
        return found, None if recent else st.st_mtime_ns

    def sync(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Bring the index up to date with the folder; returns how many chats were (re)indexed
        or dropped. ``progress(done, total)`` is called after each batch."""
        with self._sync_lock:
            return self._sync(progress)

    def _sync(self, progress: Callable[[int, int], None] | None) -> int:
        found, stamp = self._scan()
        if found is None:
            return 0
        with self._lock:
            known = {
                r[0]: (r[1], r[2])
                for r in self._con.execute("SELECT conv_id, mtime_ns, size FROM files")
            }
        changed = [cid for cid, stamp in found.items() if known.get(cid) != stamp]
        gone = [cid for cid in known if cid not in found]
        total = len(changed) + len(gone)
        if not total:
            self._dir_stamp = stamp
            return 0
        self._building = True
        try:
            with self._lock:
                self._con.execute("BEGIN")
                for cid in gone:
                    self._remove(cid)
                self._con.execute("COMMIT")
            for i in range(0, len(changed), BATCH):
                batch = changed[i : i + BATCH]
                loaded = [
                    (cid, found[cid], self._read(self.root / f"{cid}.json", found[cid][1]))
                    for cid in batch
                ]  # read outside the lock: searches go on
                with self._lock:
                    self._con.execute("BEGIN")
                    try:
                        for cid, file_stamp, data in loaded:
                            self._add(cid, file_stamp, data)
                        self._con.execute("COMMIT")
                    except BaseException:
                        self._con.execute("ROLLBACK")
                        raise
                if progress is not None:
                    progress(len(gone) + i + len(batch), total)
            self._dir_stamp = stamp
        finally:
            self._building = False
        return total

    def start_background_sync(self) -> threading.Thread:
        """Build (or catch up) the index on a thread of its own; returns the thread."""

        def run() -> None:
            try:
                self.sync()
            except (DeskLMError, sqlite3.Error) as e:
                self.problems.append(f"search index: {e}")
                log.warning("search index sync failed: %s", e)

        self._thread = threading.Thread(target=run, name="desklm-search-index", daemon=True)
        self._thread.start()
        return self._thread

    # -- searching --
    def search(self, query: str, limit: int = 50, sync: bool = True) -> SearchResult:
        """The best ``limit`` matches for ``query`` (see the module doc for the rules)."""
        t0 = time.perf_counter()
        result = SearchResult(query)
        partial: bool = self._building
        if sync:
            if self._sync_lock.acquire(blocking=False):
                try:
                    self._sync(None)
                finally:
                    self._sync_lock.release()
            else:
                partial = True  # another thread is syncing: search what is indexed so far
        q = fts_query(query)
        if q is None:
            result.elapsed_s = time.perf_counter() - t0
            return result
        try:
            with self._lock:
                # ranking every match of a broad query (one letter, "the") costs ~50 ms per
                # 20,000 messages: past RANK_LIMIT matches, newest saved first instead
                broad = (
                    len(
                        self._con.execute(
                            "SELECT rowid FROM fts WHERE fts MATCH ? LIMIT ?", (q, RANK_LIMIT + 1)
                        ).fetchall()
                    )
                    > RANK_LIMIT
                )
                order = "rowid DESC" if broad else "rank"
                # one query: FTS5 sorts and makes snippets for the top rows only
                top = self._con.execute(
                    f"SELECT rowid, snippet(fts, 0, ?, ?, '…', {SNIPPET_WORDS}) FROM fts "
                    f"WHERE fts MATCH ? ORDER BY {order} LIMIT ?",
                    (_OPEN, _CLOSE, q, max(1, min(int(limit), 1000))),
                ).fetchall()
                ids = [r[0] for r in top]
                snippets = dict(top)
                meta = {}
                if ids:
                    marks = ",".join("?" * len(ids))
                    meta = {
                        r[0]: r[1:]
                        for r in self._con.execute(
                            "SELECT m.rowid, m.conv_id, m.msg_id, m.role, m.active, f.title, "
                            f"f.updated FROM meta m JOIN files f USING (conv_id) "
                            f"WHERE m.rowid IN ({marks})",
                            ids,
                        )
                    }
        except sqlite3.Error as e:
            raise DeskLMError(f"search failed: {e}") from None
        for rid in ids:
            if rid not in meta:
                continue
            conv_id, msg_id, role, active, title, updated = meta[rid]
            text, spans = _split_snippet(snippets.get(rid, ""))
            result.hits.append(
                SearchHit(
                    conv_id,
                    msg_id,
                    role,
                    title or "New chat",
                    text,
                    spans,
                    bool(active),
                    float(updated or 0.0),
                )
            )
        result.partial = partial
        result.elapsed_s = time.perf_counter() - t0
        return result

    def stats(self) -> dict[str, int]:
        with self._lock:
            chats = self._con.execute("SELECT count(*) FROM files").fetchone()[0]
            rows = self._con.execute("SELECT count(*) FROM meta").fetchone()[0]
        return {"chats": int(chats), "texts": int(rows)}
