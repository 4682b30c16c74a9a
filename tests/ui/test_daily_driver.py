"""Issue 21, item by item: the window as a daily driver (real window offscreen, real model)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication

from desklm.ui import theme
from desklm.ui.controller import State
from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait, synced_with


def settle(qtbot, ms: int = 50) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


def newest_visible(w) -> bool:
    """The newest message's bubble is (at least partly) inside the transcript's viewport, and
    the view is scrolled to the bottom."""
    sb = w.chat.verticalScrollBar()
    last = w.chat.items[-1]
    r = w.chat.item_rect(last)
    return sb.value() == sb.maximum() and r.bottom() > 0 and r.top() < w.chat.viewport().height()


def test_1_the_transcript_follows_the_conversation_unless_scrolled_up(make_window, qtbot):
    w = make_window(max_tokens=6)
    w.resize(1600, 1000)
    w.show()
    for i in range(6):
        send_and_wait(qtbot, w, f"Question {i}: say a word.")
        settle(qtbot)
        assert newest_visible(w), f"after question {i}"
    # the user scrolls up while a reply streams: the view stays where they put it, and
    # offers the way down
    sb = w.chat.verticalScrollBar()
    w.controller.apply_settings({"max_tokens": 40})
    up = lambda: sb.triggerAction(sb.SliderAction.SliderToMinimum)  # noqa: E731
    w.firstToken.connect(up)
    send_and_wait(qtbot, w, "Tell me about the sea.")
    w.firstToken.disconnect(up)
    settle(qtbot)
    assert sb.value() == 0 and sb.maximum() > 0 and w.chat.jump_button.isVisible()
    w.chat.jump_button.click()
    settle(qtbot)
    assert newest_visible(w) and not w.chat.jump_button.isVisible()


def test_2_a_live_setting_keeps_a_pending_reload_change(window, qtbot):
    sp = window.settings_panel
    ctx = sp.editors["n_ctx"]
    ctx.set_value(4096)
    sp._edited("n_ctx", 4096)  # what dragging the slider does
    assert sp.reload_marked("n_ctx") and sp.pending == {"n_ctx": 4096}
    threads = sp.editors["n_threads"]
    fewer = threads.values[threads.values.index(threads.value()) - 1]
    with qtbot.waitSignal(
        window.settingsSynced,
        timeout=REPLY_TIMEOUT_MS,
        check_params_cb=synced_with(n_threads=fewer),
    ):
        threads.slider.triggerAction(threads.slider.SliderAction.SliderSingleStepSub)
    assert sp.pending == {"n_ctx": 4096} and sp.reload_marked("n_ctx")
    assert ctx.value() == 4096 and "reload needed" in sp.groups["reload"].title()
    # the settings arrive inside the live change's job; Apply is offered once it has ended
    qtbot.waitUntil(sp.apply_button.isEnabled, timeout=10_000)
    assert sp.pending == {"n_ctx": 4096}


def wheel(widget, delta: int = -120) -> None:
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    ev = QWheelEvent(
        pos,
        widget.mapToGlobal(pos),
        QPoint(0, 0),
        QPoint(0, delta),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, ev)


def test_3_the_wheel_scrolls_the_panel_not_the_setting_under_it(window, qtbot):
    sp = window.settings_panel
    before = {n: sp.value(n) for n in ("kv_snapshot_ram_mb", "temperature", "kv_cache_type")}
    window.input.setFocus()
    for name in before:
        ed = sp.editors[name]
        target = ed.slider if hasattr(ed, "slider") else ed
        wheel(target)
    settle(qtbot)
    assert {n: sp.value(n) for n in before} == before
    assert sp.pending == {}
    # once the user picks a setting (it has the focus) the wheel changes it, on purpose
    spin = sp.editors["kv_snapshot_ram_mb"]
    spin.setFocus()
    settle(qtbot)
    if spin.hasFocus():  # offscreen focus follows setFocus once the window is active
        wheel(spin)
        assert sp.value("kv_snapshot_ram_mb") != before["kv_snapshot_ram_mb"]


def test_4_regenerate_and_edit_stream_and_update_the_gauges(make_window, qtbot):
    w = make_window(max_tokens=10)
    with qtbot.waitSignal(w.failed, timeout=REPLY_TIMEOUT_MS) as nothing:
        w.submit("/edit Name a colour.")  # typed before any message: one line says why
    assert "nothing to edit" in nothing.args[0]
    qtbot.waitUntil(lambda: w.controller.state is State.IDLE, timeout=REPLY_TIMEOUT_MS)
    send_and_wait(qtbot, w, "Name a fruit.")
    g = w.gauges
    firsts: list[int] = []
    w.firstToken.connect(lambda: firsts.append(1))
    for run, versions in (("regen", "2/2"), ("edit", "2/2"), ("typed /edit", "3/3")):
        firsts.clear()
        with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS) as done:
            if run == "regen":
                w.chat.hover(w.chat.items[-1])
                w.chat.action_bar.buttons["Regenerate"].click()
            elif run == "edit":
                w.edit_message(w.chat.items[-2].msg_id, "Name a vegetable.")
                w.input.submit()
            else:  # typed: the same streamed turn as the action
                w.input.setPlainText("/edit Name a colour.")
                w.input.submit()
        s = done.args[0].stats
        assert firsts, f"{run} streamed nothing"  # it streams like any reply
        assert g.tps.value_text == f"{s.gen_tokens_per_s:.1f}" and g.tps.detail == "last reply"
        assert g.ctx.value_text == f"{s.context_used:,} / {s.n_ctx:,}" and s.context_used > 0
        qtbot.waitUntil(lambda: w.controller.state is State.IDLE, timeout=REPLY_TIMEOUT_MS)
        qtbot.waitUntil(lambda v=versions: v in w.chat.toPlainText(), timeout=REPLY_TIMEOUT_MS)
    # the edited message is shown once, in place (not echoed as a command, not twice)
    text = w.chat.toPlainText()
    assert text.count("Name a colour.") == 1 and "/edit" not in text


def test_6_a_small_window_keeps_the_chat_readable(make_window, qtbot):
    w = make_window(wait_loaded=False)
    w.show()
    for width, height in ((1600, 1000), (1024, 640), (800, 500), (640, 400)):
        w.resize(width, height)
        settle(qtbot, 100)
        chat = w.chat.width()
        assert chat >= min(480, width - 60), (width, chat)
        if width < 1000:
            assert w.panels.narrow and not any(d.isVisible() for d in w.panels.all())
    # a panel opened in a narrow window is a drawer: the chat keeps its room
    w.resize(800, 500)
    settle(qtbot, 100)
    w.panels.settings.show()
    settle(qtbot, 100)
    assert w.panels.settings.isVisible() and w.chat.width() >= 440
    w.resize(1280, 800)
    settle(qtbot, 100)
    assert not w.panels.narrow and w.panels.chats.isVisible() and w.panels.gauges.isVisible()
    # the layout saved from a narrow window is the wide one
    w.resize(800, 500)
    settle(qtbot, 100)
    assert w.panels.state_to_save() == w.panels.wide_state


def test_7_the_welcome_steps_aside_for_a_chat_with_messages(make_window, qtbot):
    w = make_window()
    send_and_wait(qtbot, w, "Hello")
    first = w.controller.session.conv_id
    assert w.welcome is not None
    w.welcome.show()  # as at the next launch (not dismissed)
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.new_conversation()
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.open_conversation(first)
    assert w.welcome.isHidden()


def test_8_one_notice_per_fact_and_help_is_a_table(window, qtbot):
    from PySide6.QtGui import QTextTable

    assert window.load_info.base_model  # the embedded model: its notice is shown once
    for _ in range(2):
        with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            window.controller.apply_settings({"n_batch": 256 if _ else 128})
    texts = window.notices.texts()
    assert sum("instruct model" in t for t in texts) == 1, texts
    row = window.notices.rows[0]
    row.close_button.click()
    assert row.key not in window.notices.notice_keys()
    with qtbot.waitSignal(window.commandFinished, timeout=10_000):
        window.submit("/help")

    def tables(frame):
        for f in frame.childFrames():
            if isinstance(f, QTextTable):
                yield f
            yield from tables(f)

    found = list(tables(window.chat.document().rootFrame()))
    assert len(found) == 1 and found[0].columns() == 2 and found[0].rows() >= 8
    cell = found[0].cellAt(0, 0)
    assert cell.firstCursorPosition().block().text().startswith("/")


def test_10_gauge_text_never_under_a_sparkline_and_the_column_fits(make_window, qtbot):
    w = make_window(max_tokens=6)
    w.resize(1280, 800)
    w.show()
    for i in range(3):
        send_and_wait(qtbot, w, f"Hi {i}")
    settle(qtbot, 600)
    for card in w.gauges.cards().values():
        r = card.regions()
        for k in ("title", "value", "sub"):
            assert not r["spark"].intersects(r[k]), (card.title, k)
    scroll = w.panels.gauges.widget()
    assert not scroll.verticalScrollBar().isVisible()  # 1280x800: every card, no scrollbar


def test_10_dark_slider_tracks_are_visible(window, qtbot):
    window.set_theme("dark", save=False)
    try:
        slider = window.settings_panel.editors["temperature"].slider
        window.settings_panel.editors["temperature"].set_value(0.2)
        img = slider.grab().toImage()
        bg = QColor(theme.DARK.window)
        y = img.height() // 2
        track = [img.pixelColor(x, y) for x in range(img.width() // 2, img.width() - 12)]
        contrast = max(abs(c.lightness() - bg.lightness()) for c in track)
        assert contrast >= 25, contrast
    finally:
        window.set_theme("light", save=False)


def test_10_the_api_tab_fits_its_column(make_window, qtbot):
    w = make_window(wait_loaded=False)
    w.resize(1600, 1000)
    w.show()
    w.panels.server.show()
    w.panels.server.raise_()
    settle(qtbot, 100)
    p = w.server_panel
    assert p.toggle.width() >= p.toggle.sizeHint().width()  # "Start", not "S"
    head = p.table.horizontalHeader()
    fm = head.fontMetrics()
    for col in range(p.table.columnCount()):
        text = p.table.horizontalHeaderItem(col).text()
        assert head.sectionSize(col) >= fm.horizontalAdvance(text), text
    assert p.table.columnCount() == 3


def test_12_small_things(make_window, qtbot):
    w = make_window()
    # the model line follows /set chat_format
    w.controller.apply_settings({"chat_format": "gemma"})
    qtbot.waitUntil(lambda: "gemma format" in w.statusline.model_label.text(), timeout=10_000)
    assert "dialogue" not in w.statusline.model_label.text()
    # Delete asks first; "No" keeps the preset
    sp = w.settings_panel
    with qtbot.waitSignal(w.controller.presetsListed, timeout=10_000):
        w.controller.save_preset("Mine")
    sp.preset_combo.setCurrentIndex(sp.preset_combo.findData("Mine"))
    asked = []
    sp.confirm_delete = lambda name: asked.append(name) or False
    deleted = []
    sp.presetDeleteRequested.connect(deleted.append)
    sp.preset_delete.click()
    assert asked == ["Mine"] and deleted == []
    # a new chat says that it keeps the system prompt you set
    with qtbot.waitSignal(w.commandFinished, timeout=10_000):
        w.submit("/system Answer like a pirate.")
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.submit("/reset")
    assert any("pirate" in t for t in w.notices.texts())
    # Apply & reload leaves the settings panel where it was scrolled
    scroll = w.panels.settings.widget()
    sb = scroll.verticalScrollBar()
    sp.editors["n_ctx"].set_value(1024)
    sp._edited("n_ctx", 1024)
    sb.setValue(sb.maximum() // 2)
    at = sb.value()
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        sp.apply_button.click()
    settle(qtbot, 100)
    assert sb.value() == at


def test_the_hover_bar_follows_its_message_through_a_theme_switch_and_a_resize(make_window, qtbot):
    from PySide6.QtGui import QCursor

    w = make_window(max_tokens=6)
    w.resize(1280, 800)
    w.show()
    send_and_wait(qtbot, w, "Name a fruit.")
    settle(qtbot, 100)
    chat, last = w.chat, w.chat.items[-1]
    QCursor.setPos(chat.viewport().mapToGlobal(chat.item_rect(last).center()))
    chat.hover(last)

    def on_its_message() -> bool:
        bar = chat.action_bar
        return bar.isVisible() and chat.item_rect(last).contains(bar.geometry().topLeft())

    assert on_its_message()
    try:
        for change in ("theme", "resize"):
            if change == "theme":  # the transcript is rendered again in the new colours
                theme.set_mode("dark" if theme.current().name != "dark" else "light")
            else:
                w.resize(1000, 700)
            # back without a mouse move (it came back only at the next one)
            qtbot.waitUntil(on_its_message, timeout=5_000)
        QCursor.setPos(w.mapToGlobal(QPoint(-50, -50)))  # the mouse left: a resize hides it
        w.resize(1100, 700)
        qtbot.waitUntil(lambda: not chat.action_bar.isVisible(), timeout=5_000)
    finally:
        theme.set_mode("system")
