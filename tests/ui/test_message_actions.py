"""A message's actions in the real window: the hover bar over a message (Copy, Edit,
Regenerate, Delete), the "‹ 2/2 ›" version links; regenerate, switch versions, edit and resend
(branching), copy, delete; on the embedded model, saved to disk."""

from __future__ import annotations

import json

from PySide6.QtCore import QUrl
from PySide6.QtGui import QGuiApplication

from tests.ui.conftest import REPLY_TIMEOUT_MS, send_and_wait


def click(w, anchor: str) -> None:
    """What a click on the link does: QTextBrowser's anchorClicked with its href."""
    w.chat.anchorClicked.emit(QUrl(anchor))


def act(w, item, name: str) -> None:
    """Hover ``item`` and press ``name`` on its bar, as the mouse would."""
    names = w.chat.hover(item)
    assert name in names, names
    assert w.chat.action_bar.isVisible() and name in w.chat.action_bar.shown()
    w.chat.action_bar.buttons[name].click()


def anchors(w) -> list[str]:
    """Every link in the transcript as drawn."""
    doc, out = w.chat.document(), []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            f = it.fragment()
            if f.isValid() and f.charFormat().isAnchor():
                out.append(f.charFormat().anchorHref())
            it += 1
        block = block.next()
    return out


def user_conv(w) -> str:
    """The id of the newest saved chat other than the one shown."""
    items = w.controller.session.store.list_all()
    return next(i["id"] for i in items if i["id"] != w.controller.session.conv_id)


def stored(w) -> dict:
    path = w.controller.session.store.path(w.controller.session.conv_id)
    return json.loads(path.read_text("utf-8"))


def at_rest(qtbot, w) -> None:
    from desklm.ui.controller import State

    qtbot.waitUntil(lambda: w.controller.state is State.IDLE, timeout=REPLY_TIMEOUT_MS)


def test_regenerate_keeps_both_replies_and_switches_between_them(make_window, qtbot):
    w = make_window(max_tokens=12, temperature=0.9)
    send_and_wait(qtbot, w, "Name a colour.")
    user = w.chat.items[-2]
    reply = w.chat.items[-1]
    assert user.msg_id and reply.msg_id  # the stored ids reached the transcript with it
    # no row of links under every message: the actions are on the hover bar
    assert "regen:" not in anchors(w) and not any(a.startswith("edit:") for a in anchors(w))
    assert w.chat.actions_for(user) == ["Copy", "Edit", "Delete"]
    assert w.chat.actions_for(reply) == ["Copy", "Regenerate", "Delete"]
    first = reply.text
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        act(w, reply, "Regenerate")
    at_rest(qtbot, w)
    text = w.chat.toPlainText()
    assert "2/2" in text  # the new reply, with the switcher
    last = w.chat.items[-1]
    assert (last.version, last.versions) == (2, 2)
    rec = stored(w)
    assert len(rec["messages"][-1]["alternatives"]) == 1  # the first reply is kept on disk
    assert rec["messages"][-1]["alternatives"][0]["content"] == first
    # ‹ goes back to the first version
    assert f"version:{last.msg_id}:0" in anchors(w)
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        click(w, f"version:{last.msg_id}:0")
    at_rest(qtbot, w)
    assert w.chat.items[-1].text == first and "1/2" in w.chat.toPlainText()
    assert stored(w)["messages"][-1]["content"] == first


def test_edit_resends_and_keeps_the_old_branch(make_window, qtbot):
    w = make_window(max_tokens=8)
    send_and_wait(qtbot, w, "What is the capital of France?")
    user = w.chat.items[-2]
    act(w, user, "Edit")
    assert w.input.toPlainText() == "What is the capital of France?"
    assert "Editing a sent message" in w.status.text()
    w.input.setPlainText("What is the capital of Italy?")
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        w.input.submit()
    at_rest(qtbot, w)
    rec = stored(w)
    assert rec["messages"][0]["content"] == "What is the capital of Italy?"
    old = rec["messages"][0]["alternatives"][0]
    assert old["content"] == "What is the capital of France?"
    assert old["continuation"][0]["role"] == "assistant"  # its reply went with it
    assert "2/2" in w.chat.toPlainText()


def test_esc_cancels_an_edit(make_window, qtbot):
    w = make_window(max_tokens=8)
    send_and_wait(qtbot, w, "Hello")
    act(w, w.chat.items[-2], "Edit")
    assert w.menus.stop.isEnabled()
    w.menus.stop.trigger()
    assert w.input.toPlainText() == "" and not w._editing
    send_and_wait(qtbot, w, "A new message, not an edit")
    assert [m["content"] for m in stored(w)["messages"] if m["role"] == "user"] == [
        "Hello",
        "A new message, not an edit",
    ]


def test_copy_and_delete(make_window, qtbot):
    w = make_window(max_tokens=8)
    send_and_wait(qtbot, w, "Keep me")
    send_and_wait(qtbot, w, "Delete me")
    user = w.chat.items[-2]
    with qtbot.waitSignal(w.chat.copied, timeout=2000):
        act(w, user, "Copy")
    assert QGuiApplication.clipboard().text() == "Delete me"
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        act(w, user, "Delete")
    at_rest(qtbot, w)
    text = w.chat.toPlainText()
    assert "Delete me" not in text and "Keep me" in text
    assert [m["content"] for m in stored(w)["messages"] if m["role"] == "user"] == ["Keep me"]
    assert len(stored(w)["messages"]) == 2  # its reply went with it


def test_an_attached_file_is_a_chip_over_the_box_and_goes_with_the_message(
    make_window, qtbot, tmp_path
):
    notes = tmp_path / "notes.md"
    notes.write_text("The launch code word is PELICAN.\n", "utf-8")
    other = tmp_path / "other.txt"
    other.write_text("Unrelated text.\n", "utf-8")
    w = make_window(max_tokens=8, n_ctx=2048)
    for f in (notes, other):
        with qtbot.waitSignal(w.controller.attachmentsChanged, timeout=REPLY_TIMEOUT_MS):
            w.attach_file(str(f))
    bar = w.attachments
    assert [c.attachment.name for c in bar.chips] == ["notes.md", "other.txt"]
    assert not bar.isHidden()
    chip = bar.chips[0]
    assert "notes.md" in chip.label.text() and "tokens" in chip.label.text()
    assert "attached notes.md" not in w.chat.toPlainText()  # a chip, not an echo
    bar.chips[1].remove.click()  # × takes it off the next message
    qtbot.waitUntil(lambda: len(w.controller.session.pending_attachments) == 1, timeout=5000)
    assert [c.attachment.name for c in bar.chips] == ["notes.md"]
    send_and_wait(qtbot, w, "What is the code word?")
    assert bar.isHidden() and not bar.chips  # it went with the message
    user = stored(w)["messages"][0]
    assert "PELICAN" in user["content"] and "Unrelated" not in user["content"]
    assert [a["name"] for a in user["attachments"]] == ["notes.md"]
    # issue 21 item 11: the sent message shows what went with it, and the chat is titled by
    # the question, not by the file
    shown = next(it for it in w.chat.items if it.kind == "user")
    assert shown.attachments == ["notes.md"]
    mine = w.chat.toPlainText().split(w.turns.model_name())[0]  # the user's bubble
    assert "📎 notes.md" in mine and "What is the code word?" in mine
    assert "PELICAN" not in mine  # the file's text is in the message, not on screen
    assert stored(w)["title"] == "What is the code word?"
    with qtbot.waitSignal(w.conversationShown, timeout=10000):  # and after a reopen
        w.controller.new_conversation()
    with qtbot.waitSignal(w.conversationShown, timeout=10000):
        w.open_conversation(stored_id := user_conv(w))
    mine = w.chat.toPlainText().split(w.turns.model_name())[0]
    assert stored_id and "📎 notes.md" in mine and "PELICAN" not in mine


def test_a_file_that_cannot_be_attached_says_why_and_makes_no_chip(make_window, qtbot, tmp_path):
    w = make_window(max_tokens=8)
    with qtbot.waitSignal(w.controller.message, timeout=REPLY_TIMEOUT_MS) as m:
        w.attach_file(str(tmp_path))  # a folder
    assert "folder" in m.args[1].lower() or "directory" in m.args[1].lower()
    assert not w.attachments.chips and w.attachments.isHidden()


def test_a_search_result_opens_its_chat_at_the_match(make_window, qtbot):
    from PySide6.QtCore import Qt

    w = make_window(max_tokens=6)
    send_and_wait(qtbot, w, "Remember the word zebrafish for later.")
    for i in range(4):
        send_and_wait(qtbot, w, f"Filler message number {i}.")
    first_chat = w.controller.session.conv_id
    with qtbot.waitSignal(w.conversationShown, timeout=10000):
        w.new_conversation()
    send_and_wait(qtbot, w, "Something else entirely.")
    with qtbot.waitSignal(w.search.searched, timeout=30000) as got:
        w.search.box.setText("zebrafish")
    assert got.args[1] >= 1
    from desklm.ui.panels.search_panel import ROLE_DATA

    # the hit in the message (the chat's title, made from it, is a hit of its own)
    row = next(
        k for k in range(w.search.results.count()) if w.search.results.item(k).data(ROLE_DATA)[1]
    )
    w.search.results.setCurrentRow(row)
    with qtbot.waitSignal(w.controller.messageRevealed, timeout=REPLY_TIMEOUT_MS):
        qtbot.keyClick(w.search.box, Qt.Key.Key_Return)
    assert w.controller.session.conv_id == first_chat
    target = next(it for it in w.chat.items if "zebrafish" in it.text)
    assert w.chat.revealed == target.msg_id
    assert "zebrafish" in w.chat.textCursor().selectedText()  # the message is selected


def test_a_search_hit_in_an_old_branch_brings_that_branch_back(make_window, qtbot):
    from PySide6.QtCore import Qt

    w = make_window(max_tokens=6)
    send_and_wait(qtbot, w, "My cat is called Marmalade.")
    act(w, w.chat.items[-2], "Edit")
    w.input.setPlainText("My dog is called Biscuit.")
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        w.input.submit()
    at_rest(qtbot, w)
    assert "Marmalade" not in w.chat.toPlainText()
    with qtbot.waitSignal(w.search.searched, timeout=30000):
        w.search.box.setText("marmalade")
    from desklm.ui.panels.search_panel import ROLE_DATA

    row = next(
        k for k in range(w.search.results.count()) if w.search.results.item(k).data(ROLE_DATA)[1]
    )
    with qtbot.waitSignal(w.controller.messageRevealed, timeout=REPLY_TIMEOUT_MS):
        w.search.results.setCurrentRow(row)
        qtbot.keyClick(w.search.box, Qt.Key.Key_Return)
    assert "Marmalade" in w.chat.toPlainText()  # the old version is the one shown now
    assert "1/2" in w.chat.toPlainText()
