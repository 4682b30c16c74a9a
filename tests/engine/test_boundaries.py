"""The engine never imports Qt: every engine module imports with PySide6 blocked."""

import pkgutil
import subprocess
import sys

import desklm.engine


def test_engine_imports_with_pyside6_blocked():
    mods = [m.name for m in pkgutil.iter_modules(desklm.engine.__path__, "desklm.engine.")]
    assert "desklm.engine.llm" in mods and len(mods) >= 9
    code = (
        "import sys, importlib\n"
        "sys.modules['PySide6'] = None\n"  # any 'import PySide6...' now raises ImportError
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "assert not any(k.startswith('PySide6') and sys.modules[k] for k in sys.modules)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
