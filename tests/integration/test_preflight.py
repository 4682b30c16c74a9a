"""No display, or X libraries missing: one line and exit 2, never Qt's abort (exit 134)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from desklm.ui.preflight import XCB_LIBRARIES, check_display, install_hint, missing_libraries


def run_window(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(
        [sys.executable, "-m", "desklm"], capture_output=True, text=True, timeout=120, env=env
    )


NO_DISPLAY = {"DISPLAY": None, "WAYLAND_DISPLAY": None, "QT_QPA_PLATFORM": None}


@pytest.mark.parametrize(
    "env",
    [
        NO_DISPLAY,
        {**NO_DISPLAY, "QT_QPA_PLATFORM": "xcb"},
        {**NO_DISPLAY, "QT_QPA_PLATFORM": "wayland"},
        {**NO_DISPLAY, "DISPLAY": ":987"},  # set, but no X server there (or X libraries missing)
    ],
    ids=["nothing", "xcb asked", "wayland asked", "no server at :987"],
)
def test_the_window_without_a_usable_display_is_one_line_and_exit_2(env):
    r = run_window(env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("desklm: error: the window cannot open")
    assert "desklm chat" in lines[0]
    if env.get("DISPLAY") == ":987":
        missing = missing_libraries()
        expect = install_hint(missing) if missing else "cannot connect to the X display ':987'"
        assert expect in lines[0]


def test_the_check_passes_where_qt_needs_no_display_server():
    for platform in ("offscreen", "minimal", "vnc", "offscreen;xcb"):
        assert check_display({"QT_QPA_PLATFORM": platform}, "linux") is None
    assert check_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert check_display({}, "win32") is None and check_display({}, "darwin") is None


def test_missing_libraries_are_named_with_their_packages():
    hint = install_hint(["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libodd.so.9"])
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in hint
    assert "libodd.so.9" in hint
    # the loader's answer for this machine: every missing library is in the known list
    assert set(missing_libraries()) <= set(XCB_LIBRARIES)


def test_the_check_imports_no_qt():
    code = (
        "import sys, desklm.ui.preflight as p; p.check_display({'DISPLAY': ':987'}, 'linux')\n"
        "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr[-800:]
