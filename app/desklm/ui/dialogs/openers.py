"""The window's dialogs: models, a model file, a server, a file to attach, export, About.
Each opens non-modal and hands what the user chose to the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog


class WindowDialogs:
    def __init__(self, w: Any) -> None:  # the MainWindow (not imported: no cycle)
        self.w = w

    def show_connect(self) -> Any:
        w = self.w
        from desklm.ui.dialogs.connect_dialog import ConnectDialog

        dlg = ConnectDialog(w, config=w.config)
        dlg.connectionChosen.connect(w.controller.connect_remote)
        dlg.open()
        return dlg

    def attach_dialog(self) -> None:
        w = self.w
        path, _ = QFileDialog.getOpenFileName(
            w,
            "Attach a file",
            str(Path.home()),
            "Text and PDF (*.txt *.md *.csv *.json *.py *.pdf *.*)",
        )
        if path:
            w.attach_file(path)

    def export_dialog(self) -> None:
        w = self.w
        path, _ = QFileDialog.getSaveFileName(
            w,
            "Export conversation",
            str(Path.home() / "conversation.md"),
            "Markdown (*.md);;JSON (*.json)",
        )
        if path:
            w.controller.export(path)

    def show_models(self) -> Any:
        """The Models dialog (non-modal): local models and Hugging Face downloads."""
        w = self.w
        from desklm.ui.dialogs.model_dialog import ModelDialog

        if w.models_dialog is not None:
            w.models_dialog.shutdown()
        dlg = ModelDialog(w, free=w.settings_panel.free, gpu_offload=w.settings_panel.gpu_available)
        dlg.loadRequested.connect(w.load_model)
        dlg.serverChosen.connect(w.controller.connect_saved)
        w.controller.connectionsListed.connect(dlg.set_servers)
        w.controller.list_connections()
        dlg.show()
        w.models_dialog = dlg
        return dlg

    def open_model_dialog(self) -> None:
        w = self.w
        path, _ = QFileDialog.getOpenFileName(
            w, "Open a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            w.load_model(path)

    def about(self) -> Any:
        w = self.w
        from desklm.ui.dialogs.about import AboutDialog

        dlg = AboutDialog(w.load_info, w)
        dlg.open()
        return dlg
