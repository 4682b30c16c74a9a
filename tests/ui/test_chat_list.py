"""The Chats list on its own (offscreen): order by creation, a new chat shown at once,
compact rows."""

from __future__ import annotations

import time

from desklm.ui.panels.conversations import ROLE_SUB, ConversationList


def rows(w):
    return [w.list.item(i).text() for i in range(w.list.count())]


def items(n, now=None):
    now = now or time.time()
    return [
        {
            "id": f"c{i}",
            "title": f"Chat number {i} " + "long " * (i % 3 * 10),
            "created": now - 3600 * (n - i),
            "updated": now - 60 * i,
            "messages": 2 * i,
        }
        for i in range(n)
    ]


def test_order_is_by_creation_and_rename_does_not_move(qtbot):
    w = ConversationList()
    qtbot.addWidget(w)
    data = items(5)
    w.set_items(sorted(data, key=lambda d: d["updated"], reverse=True))  # as the store lists
    assert [it["id"] for it in w.items] == ["c4", "c3", "c2", "c1", "c0"]
    renamed = [dict(d) for d in data]
    renamed[1].update(title="Renamed", updated=time.time())  # the store's rename bumps updated
    w.set_items(sorted(renamed, key=lambda d: d["updated"], reverse=True))
    assert [it["id"] for it in w.items] == ["c4", "c3", "c2", "c1", "c0"]
    assert rows(w)[3] == "Renamed"


def test_a_new_chat_shows_at_once_and_is_replaced_when_saved(qtbot):
    w = ConversationList()
    qtbot.addWidget(w)
    w.set_items(items(3))
    w.add_pending({"id": "new1", "title": "", "created": time.time()})
    assert w.items[0]["id"] == "new1" and w.list.count() == 4
    assert w.selected_id() == "new1" and "new" in w.list.item(0).data(ROLE_SUB)
    saved = [
        *items(3),
        {"id": "new1", "title": "Hello there", "created": time.time(), "messages": 2},
    ]
    w.set_items(saved)
    assert w.list.count() == 4 and rows(w)[0] == "Hello there" and not w.pending
    # a new chat left before its first message disappears when another chat opens
    w.add_pending({"id": "new2"})
    assert w.list.count() == 5
    w.set_current("c0")
    assert w.list.count() == 4 and "new2" not in [it["id"] for it in w.items]


def test_eight_chats_fit_the_default_height(qtbot):
    w = ConversationList()
    qtbot.addWidget(w)
    w.set_items(items(20))
    w.resize(w.sizeHint())
    w.show()
    qtbot.waitExposed(w)
    visible = sum(
        1
        for i in range(w.list.count())
        if w.list.visualItemRect(w.list.item(i)).bottom() <= w.list.viewport().height()
    )
    assert visible >= 7, visible
    assert w.list.horizontalScrollBar().maximum() == 0  # long titles are elided, not scrolled
