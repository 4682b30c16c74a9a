"""``desklm history``: saved conversations (list, show, export, search)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from desklm.cli.common import err
from desklm.errors import DeskLMError


def cmd_history(args: argparse.Namespace) -> int:
    from desklm.engine.store.files import ConversationStore, StoreError, to_markdown

    store = ConversationStore()
    if args.history_command == "search":
        return _history_search(store, " ".join(args.query), args.limit, args.json)
    try:
        if args.history_command in (None, "list"):
            items = store.list_all()
            for problem in store.problems:
                err(problem)
            if args.json:
                print(json.dumps(items, ensure_ascii=False))
            elif not items:
                print("no saved conversations")
            else:
                import datetime as dt

                for it in items:
                    when = dt.datetime.fromtimestamp(it["updated"]).strftime("%Y-%m-%d %H:%M")
                    print(f"{it['id']}  {when}  {it['messages']:3d} msgs  {it['title']}")
            return 0
        rec = store.load(args.id)
    except StoreError as e:
        raise DeskLMError(str(e)) from None
    if args.history_command == "show":
        print(to_markdown(rec), end="")
        return 0
    if args.output:
        from desklm.engine.store.files import export_record

        out = export_record(rec, Path(args.output), args.format)
        print(f"written to {out}", file=sys.stderr)
    else:
        from desklm.engine.store.files import export_text

        sys.stdout.write(export_text(rec, args.format))
    return 0


def _history_search(store: Any, query: str, limit: int, as_json: bool) -> int:
    from desklm.engine.store.search import SearchIndex

    if limit < 1:
        raise DeskLMError("--limit must be at least 1")
    index = SearchIndex(store)
    try:
        r = index.search(query, limit=limit)
    finally:
        index.close()
    if as_json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
        return 0
    tty = sys.stdout.isatty()
    for h in r.hits:
        where = (
            "title"
            if h.message_id is None
            else f"{h.role} {h.message_id}{'' if h.active else ' (older version)'}"
        )
        snippet = h.marked("\x1b[1m", "\x1b[0m") if tty else h.marked("«", "»")
        print(f"{h.conversation_id}  {h.title}  [{where}]\n    {snippet}")
    if not r.hits:
        print("no matches", file=sys.stderr)
    return 0
