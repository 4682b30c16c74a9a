"""The server never imports Qt."""

import pkgutil
import subprocess
import sys

import desklm.server


def test_server_imports_with_pyside6_blocked() -> None:
    mods = [m.name for m in pkgutil.iter_modules(desklm.server.__path__, "desklm.server.")]
    assert "desklm.server.app" in mods and "desklm.server.server" in mods
    code = (
        "import sys, importlib\nsys.modules['PySide6'] = None\n"
        f"for m in {mods!r}: importlib.import_module(m)\nprint('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
