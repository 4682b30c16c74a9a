"""The Chats sidebar, saving, export, and app settings that survive a restart."""

from __future__ import annotations

import json

from PySide6.QtWidgets import QMessageBox

from desklm.engine.store.files import AppConfig, ConversationStore
from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait, synced_with


def shown(qtbot, w, action, *args):
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS) as b:
        action(*args)
    return b.args[0]


def test_new_switch_rename_delete(window, qtbot, data_dir):
    send_and_wait(qtbot, window, "Chat A says apples")
    first = window.controller.session.conv_id
    shown(qtbot, window, window.chats.new_button.click)
    assert window.chat.toPlainText().strip() == ""
    send_and_wait(qtbot, window, "Chat B says bananas")
    qtbot.waitUntil(lambda: window.chats.list.count() == 2, timeout=5000)
    assert [i["title"] for i in window.chats.items] == ["Chat B says bananas", "Chat A says apples"]
    # switch back to A: its transcript, and an empty KV cache (no reuse across chats); the
    # next turn reuses only what A's own snapshot restored (engine.kvcache)
    rec = shown(qtbot, window, window.chats._activated, window.chats.list.item(1))
    assert rec["id"] == first
    assert "Chat A says apples" in window.chat.toPlainText()
    assert "bananas" not in window.chat.toPlainText()
    assert window.controller.runtime.local.kv_cache_pos_max() == -1
    r = send_and_wait(qtbot, window, "Back in A")
    assert r.stats.prompt_tokens_reused == r.stats.restored_tokens > 0
    # rename
    window.controller.rename_conversation(first, "Fruit talk")
    qtbot.waitUntil(
        lambda: any(i["title"] == "Fruit talk" for i in window.chats.items), timeout=10000
    )
    # delete B, confirming in the dialog
    window.chats.list.setCurrentRow(
        [i["id"] for i in window.chats.items].index(
            next(i["id"] for i in window.chats.items if i["id"] != first)
        )
    )
    window.chats.delete_button.click()
    box = window.chats.confirm
    assert box is not None and box.isVisible() and "cannot be undone" in box.text()
    box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: [i["id"] for i in window.chats.items] == [first], timeout=10000)
    files = list((data_dir / "data" / "conversations").glob("*.json"))
    assert [f.stem for f in files] == [first]
    assert len(json.loads(files[0].read_text("utf-8"))["messages"]) == 4


def test_cancelling_a_delete_keeps_the_chat(window, qtbot):
    send_and_wait(qtbot, window, "Keep me")
    qtbot.waitUntil(lambda: window.chats.list.count() == 1, timeout=5000)
    window.chats.list.setCurrentRow(0)
    window.chats.delete_button.click()
    window.chats.confirm.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.wait(200)
    assert len(ConversationStore().list_all()) == 1


def test_export_and_a_damaged_file_notice(make_window, qtbot, tmp_path, data_dir):
    conv = data_dir / "data" / "conversations"
    conv.mkdir(parents=True)
    (conv / "broken.json").write_text("{not json", "utf-8")
    w = make_window()
    qtbot.waitUntil(lambda: "damaged" in w.notices.text(), timeout=5000)
    assert (conv / "broken.json.corrupt").exists()
    send_and_wait(qtbot, w, "Export me")
    out = tmp_path / "out.md"
    with qtbot.waitSignal(w.commandFinished, timeout=10000):
        w.controller.export(str(out))
    assert "## You\n\nExport me" in out.read_text("utf-8")


def test_app_settings_and_the_chat_survive_a_restart(qtbot, model_path, data_dir):
    from desklm.cli import build_parser
    from desklm.ui.app import build_window

    args = build_parser().parse_args(
        ["--model", str(model_path), "--ctx", "1024", "--max-tokens", "8"]
    )
    w = build_window(args)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.start()
    assert w.welcome is not None and w.welcome.isVisible()  # first run: the welcome shows
    with qtbot.waitSignal(
        w.settingsSynced, timeout=10000, check_params_cb=synced_with(temperature=0.3)
    ):
        w.settings_panel.editors["temperature"].slider.setValue(6)  # 0.30
    send_and_wait(qtbot, w, "Persist me")
    w.welcome.dismiss()
    w.resize(780, 560)  # within the offscreen screen (800x600): restoring clamps to it
    w.shutdown()
    saved = AppConfig().load()
    assert saved["settings"]["temperature"] == 0.3 and saved["settings"]["n_ctx"] == 1024
    # the embedded model is the default, stored as "" (any other file is stored by path)
    assert saved["last_model"] == "" and saved["geometry"] and saved["welcome_dismissed"]
    # start again with no command-line settings: the saved ones come back
    args2 = build_parser().parse_args([])
    w2 = build_window(args2)
    qtbot.addWidget(w2)
    with qtbot.waitSignal(w2.modelLoaded, timeout=LOAD_TIMEOUT_MS) as b:
        w2.start()
    try:
        assert b.args[0].path == model_path and b.args[0].n_ctx == 1024
        assert w2.settings_panel.value("temperature") == 0.3
        # the saved size comes back (the width within the 800-pixel offscreen screen)
        assert w2.height() == 560 and 780 <= w2.width() <= 800
        assert w2.welcome is None  # dismissed once, it does not come back
        qtbot.waitUntil(lambda: w2.chats.list.count() == 1, timeout=5000)
        assert w2.chats.items[0]["title"] == "Persist me"
    finally:
        w2.shutdown()


def test_a_damaged_settings_file_falls_back_to_defaults(qtbot, data_dir, model_path):
    from desklm.ui.app import build_window

    cfg = data_dir / "config" / "settings.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("{{{", "utf-8")
    from desklm.cli import build_parser

    args = build_parser().parse_args(["--model", str(model_path)])
    w = build_window(args)
    qtbot.addWidget(w)
    try:
        assert "damaged" in w.notices.text()
        assert w.settings_panel.value("temperature") == 0.7
    finally:
        w.shutdown()


def test_a_remembered_model_file_is_opened_at_start(qtbot, data_dir, tmp_path):
    from desklm.ui.app import build_window

    other = tmp_path / "my-model.gguf"
    other.write_bytes(b"GGUF")
    AppConfig().save({"last_model": str(other)})
    from desklm.cli import build_parser

    args = build_parser().parse_args([])
    w = build_window(args)
    qtbot.addWidget(w)
    try:
        assert w.initial_model == str(other)
    finally:
        w.shutdown()


def test_a_new_chat_is_in_the_list_at_once(make_window, qtbot):
    w = make_window()
    send_and_wait(qtbot, w, "First chat")
    qtbot.waitUntil(lambda: w.chats.list.count() == 1, timeout=5000)
    with qtbot.waitSignal(w.conversationShown, timeout=10000):
        w.new_conversation()
    # listed before anything is saved, selected, titled "New chat"
    assert w.chats.list.count() == 2
    assert w.chats.selected_id() == w.chats.current_id
    assert w.chats.items[0]["title"] == "New chat"
    w.submit("Second chat starts here")
    assert w.chats.items[0]["title"] == "Second chat starts here"  # before the reply
    qtbot.waitUntil(lambda: not w.chats.pending, timeout=REPLY_TIMEOUT_MS)
    assert [it["title"] for it in w.chats.items] == ["Second chat starts here", "First chat"]


def test_the_settings_panel_shows_the_chat_cache_in_use(make_window, qtbot):
    from desklm.engine import fmt_bytes

    w = make_window()
    label = w.settings_panel.kv_label

    def cached() -> int:
        u = w.controller.session.kv_usage()
        return u["ram_snapshots"] + u["disk_snapshots"]

    send_and_wait(qtbot, w, "Remember this chat")
    before = cached()  # the cache folder is shared by the tests of this run
    with qtbot.waitSignal(w.conversationShown, timeout=10000):
        w.new_conversation()  # leaving the chat keeps its KV state in the cache
    n = before + 1
    qtbot.waitUntil(
        lambda: label.text().startswith(f"Chat cache: {n} chat{'s' if n != 1 else ''}\n"),
        timeout=10000,
    )
    usage = w.controller.session.kv_usage()
    assert (
        f"RAM: {fmt_bytes(usage['ram_bytes'])} of {fmt_bytes(usage['ram_budget'])}" in label.text()
    )
    assert usage["ram_bytes"] > 0  # the chat just left is in RAM
