"""The Models dialog against the local Hugging Face stand-in: list, fit, download, load."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from tests.conftest import REPO
from tests.ui.conftest import LOAD_TIMEOUT_MS


def open_dialog(window, qtbot):
    dlg = window.show_models()
    qtbot.addWidget(dlg)
    # the local list is read off the UI thread: it fills a moment after the dialog opens
    qtbot.waitUntil(lambda: dlg.local_list.count() > 0, timeout=10_000)
    return dlg


def test_local_models_are_listed_and_load(window, qtbot, online):
    dlg = open_dialog(window, qtbot)
    texts = [dlg.local_list.item(i).text() for i in range(dlg.local_list.count())]
    assert texts and texts[0].startswith("Gemma 3 270M (embedded)")
    dlg.local_list.setCurrentRow(0)
    with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        dlg.load_button.click()
    dlg.done(0)


def test_list_fit_download_and_load(window, qtbot, server, tmp_path):
    dlg = open_dialog(window, qtbot)
    assert dlg.repo.count() >= 4  # the curated suggestions
    assert server.hub.requests == []  # opening the dialog sends nothing
    dlg.repo.setCurrentText(REPO)
    dlg.list_button.click()
    qtbot.waitUntil(lambda: dlg.table.rowCount() == 2, timeout=30000)
    assert dlg.table.item(0, 0).text() == "gemma.gguf"
    assert dlg.table.item(0, 1).text() == "241.4 MB"
    qtbot.waitUntil(lambda: dlg.table.item(0, 2).text().startswith("fits at"), timeout=30000)
    dlg.table.selectRow(0)
    dlg.download_button.click()
    qtbot.waitUntil(lambda: dlg.load_box is not None, timeout=120000)
    assert dlg.progress.value() == 1000 and "verified" in dlg.progress_label.text()
    qtbot.waitUntil(
        lambda: any(
            "hugging face cache" in dlg.local_list.item(i).text()
            for i in range(dlg.local_list.count())
        ),
        timeout=10_000,
    )
    with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS) as b:
        dlg.load_box.button(QMessageBox.StandardButton.Yes).click()
    assert "models--someone--Tiny-GGUF" in str(b.args[0].path)
    dlg.done(0)


def test_cancel_and_failures_show_their_reason(window, qtbot, server):
    dlg = open_dialog(window, qtbot)
    dlg.repo.setCurrentText("nobody/nothing")
    dlg.list_button.click()
    qtbot.waitUntil(lambda: "not found" in dlg.progress_label.text(), timeout=30000)
    dlg.repo.setCurrentText(REPO)
    dlg.list_button.click()
    qtbot.waitUntil(lambda: dlg.table.rowCount() == 2, timeout=30000)
    server.hub.corrupt = True
    dlg.table.selectRow(1)  # tiny.gguf
    dlg.download_button.click()
    qtbot.waitUntil(lambda: "checksum mismatch" in dlg.progress_label.text(), timeout=60000)
    server.hub.corrupt = False
    server.hub.chunk_delay = 0.05  # a slow link: the 250 MB file takes ~13 s
    dlg.table.selectRow(0)
    dlg.download_button.click()
    qtbot.waitUntil(lambda: dlg.progress.value() > 0, timeout=60000)
    assert "ETA" in dlg.progress_label.text() and "/s" in dlg.progress_label.text()
    dlg.cancel_button.click()
    qtbot.waitUntil(lambda: dlg.last_error == "download cancelled", timeout=60000)
    assert dlg.progress.value() < 1000
    assert dlg.download_button.isEnabled() and not dlg.cancel_button.isEnabled()
    dlg.done(0)


def test_saved_servers_are_offered_beside_local_files_and_connect(
    window, qtbot, llama_server, model_path
):
    from desklm.engine.store.connections import Connection, save_connection

    save_connection(Connection("test box", llama_server.url, str(model_path)), None, window.config)
    dlg = open_dialog(window, qtbot)
    qtbot.waitUntil(lambda: dlg.server_button.isEnabled(), timeout=10_000)
    assert dlg.server_list.item(0).text().startswith("test box")
    with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS) as b:
        dlg.server_button.click()
    assert window.controller.remote and "127.0.0.1" in b.args[0].name
    assert window.gauges.remote  # the gauges follow: VRAM is on the server now


def test_no_saved_servers_says_so(window, qtbot):
    dlg = open_dialog(window, qtbot)
    qtbot.waitUntil(lambda: dlg.server_list.item(0).text() != "…", timeout=10_000)
    assert dlg.server_list.item(0).text() == "No saved servers yet"
    assert not dlg.server_button.isEnabled()
    dlg.done(0)
