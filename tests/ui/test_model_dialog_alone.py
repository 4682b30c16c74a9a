"""The Models dialog on its own: Load closes it, listing fails fast without a network and can
be cancelled."""

from __future__ import annotations

import time

from desklm.ui.dialogs.model_dialog import ModelDialog


def make(qtbot):
    dlg = ModelDialog()
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitUntil(lambda: dlg.local_list.count() > 0, timeout=10_000)  # read off the UI thread
    return dlg


def test_load_emits_and_closes(qtbot, model_path):
    dlg = make(qtbot)
    dlg.local_list.setCurrentRow(0)
    with qtbot.waitSignal(dlg.loadRequested, timeout=2000):
        dlg.load_button.click()
    assert not dlg.isVisible()


def test_the_local_walk_is_off_the_ui_thread(qtbot, monkeypatch):
    import threading

    from desklm.ui.dialogs import model_dialog

    where = []
    real = model_dialog.local_models
    monkeypatch.setattr(
        model_dialog, "local_models", lambda: where.append(threading.current_thread()) or real()
    )
    dlg = ModelDialog()
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: dlg.local_list.count() > 0, timeout=10_000)
    assert where and where[0] is not threading.main_thread()


def test_offline_listing_fails_at_once(qtbot):
    dlg = make(qtbot)  # the test session has HF_HUB_OFFLINE=1
    dlg.repo.setCurrentText("Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    t0 = time.monotonic()
    dlg.list_button.click()
    qtbot.waitUntil(lambda: dlg.last_error != "", timeout=5000)
    assert time.monotonic() - t0 < 2
    assert "HF_HUB_OFFLINE" in dlg.progress_label.text() and dlg.list_button.isEnabled()
    dlg.done(0)


def test_unreachable_listing_fails_fast_and_cancel_stays_enabled(qtbot, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    dlg = make(qtbot)
    dlg.repo.setCurrentText("Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    t0 = time.monotonic()
    dlg.list_button.click()
    assert dlg.cancel_button.isEnabled() and not dlg.list_button.isEnabled()
    qtbot.waitUntil(lambda: dlg.last_error != "", timeout=15000)
    assert time.monotonic() - t0 < 7
    assert "cannot reach Hugging Face" in dlg.progress_label.text()
    assert dlg.list_button.isEnabled() and not dlg.cancel_button.isEnabled()
    dlg.done(0)


def test_cancel_while_listing(qtbot, server):
    server.hub.chunk_delay = 0.0
    dlg = make(qtbot)
    dlg.repo.setCurrentText("someone/Tiny-GGUF")
    dlg.list_button.click()
    dlg.cancel_button.click()  # at once, before the answer
    assert dlg.list_button.isEnabled() and dlg.last_error == "listing cancelled"
    qtbot.wait(1500)
    assert dlg.table.rowCount() == 0  # the late answer is ignored
    dlg.list_button.click()
    qtbot.waitUntil(lambda: dlg.table.rowCount() == 2, timeout=30000)
    dlg.done(0)
