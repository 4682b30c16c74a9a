"""Can the window open here? Checked before Qt is imported, so the answer is one line.

Without a display, or with X libraries missing (a minimal Debian lacks ``libxcb-icccm4`` and
``libxcb-keysyms1``), Qt prints its own message, often naming the wrong library, and aborts
the process (exit 134). :func:`check_display` finds those cases first and returns the reason
with the fix, or None when the window may start. Nothing here imports Qt.

The library list is what Qt's xcb platform plugin (``PySide6/Qt/plugins/platforms/
libqxcb.so``) and its ``libQt6XcbQpa`` link against, found with ``ldd``; where ``ldd`` is
missing, :data:`XCB_LIBRARIES` is checked with ``ctypes.util.find_library``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# shared object -> Debian/Ubuntu package (ldd of libqxcb.so and libQt6XcbQpa.so.6, PySide6 6.11)
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}
# platforms that need no display server (or are not ours to second-guess)
NO_DISPLAY_PLATFORMS = (
    "offscreen",
    "minimal",
    "vnc",
    "eglfs",
    "linuxfb",
    "vkkhrdisplay",
    "minimalegl",
    "windows",
    "cocoa",
    "direct2d",
)
CHAT_HINT = "or use `desklm chat` in a terminal"


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin, found without importing PySide6."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if p.exists():
            return p
    return None


def missing_libraries(plugin: Path | None = None) -> list[str]:
    """Shared objects the xcb plugin needs that the dynamic loader cannot find."""
    plugin = plugin if plugin is not None else xcb_plugin()
    ldd = shutil.which("ldd")
    if plugin is not None and ldd:
        try:
            r = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20)
            missing = {
                line.split("=>")[0].strip()
                for line in r.stdout.splitlines()
                if "=> not found" in line
            }
            return sorted(missing)
        except (OSError, subprocess.SubprocessError):
            pass
    out = []
    for so in XCB_LIBRARIES:
        stem = so[3:].split(".so")[0]
        if ctypes.util.find_library(stem) is None:
            out.append(so)
    return out


def install_hint(missing: list[str]) -> str:
    pkgs: list[str] = []
    for so in missing:
        pkg = XCB_LIBRARIES.get(so)
        if pkg and pkg not in pkgs:
            pkgs.append(pkg)
    unknown = [so for so in missing if so not in XCB_LIBRARIES]
    hint = f"on Debian/Ubuntu: sudo apt-get install {' '.join(pkgs)}" if pkgs else ""
    if unknown:
        hint += ("; " if hint else "") + "install the packages that provide " + ", ".join(unknown)
    return hint


def x_connect_error(display: str) -> int:
    """0 when an X server at ``display`` accepts us, else libxcb's error code."""
    name = ctypes.util.find_library("xcb") or "libxcb.so.1"
    lib = ctypes.CDLL(name)
    lib.xcb_connect.restype = ctypes.c_void_p
    lib.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    lib.xcb_connection_has_error.restype = ctypes.c_int
    lib.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = lib.xcb_connect(display.encode(), None)
    try:
        return int(lib.xcb_connection_has_error(conn))
    finally:
        lib.xcb_disconnect(conn)


def check_display(
    env: Mapping[str, str] | None = None, platform: str | None = None, plugin: Path | None = None
) -> str | None:
    """Why the window cannot open here (one line, with the fix), or None if it may."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return None
    wanted = [
        p.split(":")[0].strip().lower()
        for p in env.get("QT_QPA_PLATFORM", "").split(";")
        if p.strip()
    ]
    if any(p in NO_DISPLAY_PLATFORMS for p in wanted):
        return None
    display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if wanted and all(p == "wayland" or p.startswith("wayland-") for p in wanted):
        if wayland:
            return None
        return (
            "the window cannot open: QT_QPA_PLATFORM asks for Wayland but WAYLAND_DISPLAY "
            f"is not set; run it in a desktop session, {CHAT_HINT}"
        )
    if wayland and "xcb" not in wanted:
        return None  # Qt picks Wayland (and falls back to X if it must)
    if not display:
        return (
            "the window cannot open: there is no display (DISPLAY and WAYLAND_DISPLAY are "
            f"not set); run it in a desktop session or over `ssh -X`, {CHAT_HINT}"
        )
    missing = missing_libraries(plugin)
    if missing:
        return (
            f"the window cannot open: X libraries are missing: {', '.join(missing)}; "
            f"{install_hint(missing)}; {CHAT_HINT}"
        )
    try:
        err = x_connect_error(display)
    except (OSError, AttributeError):
        return None  # cannot ask libxcb: let Qt try
    if err:
        return (
            f"the window cannot open: cannot connect to the X display '{display}' (is the "
            f"X server running, and may this user use it?); {CHAT_HINT}"
        )
    return None
