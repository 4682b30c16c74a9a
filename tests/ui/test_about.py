"""About: versions, the loaded model, llama.cpp's build, paths and licences."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QGuiApplication

from desklm import __version__
from desklm.engine.backends.local.engine import LoadInfo
from desklm.engine.store.files import app_dirs
from desklm.ui.dialogs.about import AboutDialog, about_text


def info(path: Path) -> LoadInfo:
    return LoadInfo(
        path=path,
        name="Gemma 3 270m",
        architecture="gemma3",
        n_ctx=2048,
        n_ctx_train=32768,
        n_layers=18,
        load_s=0.4,
        chat_format="gemma",
        gpu_offload_supported=False,
        file_size=253_113_024,
    )


def test_about_text_has_everything(model_path):
    import llama_cpp

    text = about_text(info(model_path))
    assert f"Version: {__version__}" in text
    assert "Name: Gemma 3 270m" in text and str(model_path) in text and "GGUF · gemma3" in text
    assert f"llama-cpp-python: {llama_cpp.__version__}" in text
    assert f"  Version: {llama_cpp.llama_version().decode()}\n" in text  # llama.cpp's own
    commit = [line for line in text.splitlines() if line.startswith("  Commit: ")]
    assert len(commit) == 1 and "not reported" not in commit[0]
    assert "Backend: " in text and "GPU offload: " in text
    sysinfo = llama_cpp.llama_print_system_info().decode().strip()
    assert sysinfo.split("|")[0].strip() in text  # llama.cpp's own build line
    for p in (app_dirs().data, app_dirs().config, app_dirs().log, app_dirs().cache):
        assert str(p) in text
    for lic in ("MIT", "LGPL", "Gemma Terms of Use"):
        assert lic in text
    assert "none loaded" in about_text(None)


def test_dialog_shows_and_copies(qtbot, model_path):
    d = AboutDialog(info(model_path))
    qtbot.addWidget(d)
    assert "Gemma 3 270m" in d.browser.toPlainText() and "Licences" in d.browser.toPlainText()
    d.copy_button.click()
    assert QGuiApplication.clipboard().text() == d.text
