"""Help > About: DeskLM's version, the loaded model, llama.cpp's build and backend, where
DeskLM keeps its files, and the licences. :func:`about_text` builds the text (tested on its own);
:class:`AboutDialog` shows it with a Copy button (for bug reports)."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import backend_name, data_paths, llama_info, versions

LICENCES = [
    ("DeskLM", "MIT licence"),
    ("llama.cpp and llama-cpp-python", "MIT licence"),
    ("Qt for Python (PySide6)", "LGPL v3 (Qt is used as a dynamically linked library)"),
    ("Embedded model: Gemma 3 270M (Google)", "Gemma Terms of Use, ai.google.dev/gemma/terms"),
    ("Downloaded models", "each under its own licence, shown on its Hugging Face page"),
]


def about_sections(load_info: Any = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The About content as (section, [(key, value)]) pairs."""
    from PySide6 import __version__ as pyside_version

    v = versions()
    llama = llama_info()
    backend = backend_name(llama["system_info"], llama["gpu_offload"])
    model: list[tuple[str, str]]
    if load_info is None:
        model = [("Model", "none loaded")]
    else:
        path = getattr(load_info, "path", "")
        size = getattr(load_info, "file_size", 0) or 0
        arch = getattr(load_info, "architecture", "") or "?"
        fmt = getattr(load_info, "chat_format", "") or "?"
        model = [
            ("Name", str(getattr(load_info, "name", "?"))),
            ("File", str(path)),
            ("Format", f"GGUF · {arch} · {size / 2**20:,.0f} MB · chat format {fmt}"),
            (
                "Context",
                f"{getattr(load_info, 'n_ctx', '?')} tokens "
                f"(trained for {getattr(load_info, 'n_ctx_train', '?')})",
            ),
        ]
    return [
        (
            "DeskLM",
            [
                ("Version", v["desklm"]),
                ("Python", v["python"]),
                ("Qt for Python", pyside_version),
                ("System", v["platform"]),
            ],
        ),
        ("Loaded model", model),
        (
            "llama.cpp",
            [
                ("Version", llama["llama_cpp"] or "not reported by this build"),
                ("Commit", llama["commit"] or "not reported by this build"),
                ("ggml", llama["ggml"] or "not reported by this build"),
                ("llama-cpp-python", llama["version"]),
                ("Backend", backend),
                (
                    "GPU offload",
                    "supported by this build"
                    if llama["gpu_offload"]
                    else "not in this build (CPU only)",
                ),
                ("Build", llama["system_info"] or "n/a"),
            ],
        ),
        ("Files", [(k.capitalize(), p) for k, p in data_paths().items()]),
        ("Licences", LICENCES),
    ]


def about_text(load_info: Any = None) -> str:
    """Plain text of the About box (what Copy puts on the clipboard)."""
    lines: list[str] = []
    for title, rows in about_sections(load_info):
        lines.append(title)
        lines.extend(f"  {k}: {v}" for k, v in rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def about_html(load_info: Any = None) -> str:
    parts = [
        "<h2>DeskLM</h2><p>A private desktop chat app for local language models. "
        "Everything runs and stays on this computer.</p>"
    ]
    for title, rows in about_sections(load_info):
        parts.append(f"<h3>{html.escape(title)}</h3><table cellspacing='2'>")
        parts.extend(
            f"<tr><td><b>{html.escape(k)}</b>&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        parts.append("</table>")
    return "".join(parts)


class AboutDialog(QDialog):
    def __init__(self, load_info: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About DeskLM")
        self.setObjectName("about")
        self.resize(640, 560)
        self.text = about_text(load_info)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(False)
        self.browser.setHtml(about_html(load_info))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy this information, for a bug report")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text))
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser, 1)
        lay.addWidget(buttons)
