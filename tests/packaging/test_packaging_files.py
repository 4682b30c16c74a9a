"""The packaging inputs: icons made from the SVG master, and files that agree with each other.
(Building the bundle itself is minutes of compiling: see the README's Installers section.)"""

from __future__ import annotations

import configparser
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_icons_writes_pngs_ico_and_icns(tmp_path):
    # a subprocess, as a user runs it (a QGuiApplication made in this process would break the
    # widget tests that follow)
    r = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "make_icons.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert r.returncode == 0, r.stderr
    for s in (16, 24, 32, 48, 64, 128, 256, 512, 1024):
        png = (tmp_path / f"desklm-{s}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", png[16:24])
        assert (w, h) == (s, s)
    ico = (tmp_path / "desklm.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind, count) == (0, 1, 7)
    for i in range(count):  # every entry points at a PNG inside the file
        size, offset = struct.unpack("<II", ico[6 + 16 * i + 8 : 6 + 16 * i + 16])
        assert ico[offset : offset + 8] == b"\x89PNG\r\n\x1a\n" and offset + size <= len(ico)
    icns = (tmp_path / "desklm.icns").read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    assert b"ic10" in icns and b"icp4" in icns


def test_desktop_entry_matches_the_bundle():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "packaging" / "linux" / "desklm.desktop")
    d = entry["Desktop Entry"]
    spec = (ROOT / "packaging" / "desklm.spec").read_text()
    exe = Path(d["Exec"].split()[0])
    assert exe.parent == Path("/opt/desklm") and f'name="{exe.name}"' in spec
    assert d["Icon"] == "desklm" and d["Terminal"] == "false" and d["Type"] == "Application"
    deb = (ROOT / "packaging" / "linux" / "make_deb.sh").read_text()
    assert "/opt/desklm" in deb and "hicolor" in deb and "metainfo" in deb
    iss = (ROOT / "packaging" / "windows" / "desklm.iss").read_text()
    assert re.search(r'Filename: "\{app\}\\desklm-gui\.exe"', iss)


def test_metainfo_is_valid_xml_with_the_desktop_id():
    import xml.etree.ElementTree as ET

    tree = ET.parse(ROOT / "packaging" / "linux" / "io.desklm.DeskLM.metainfo.xml")
    assert tree.getroot().find("launchable").text == "desklm.desktop"


def test_build_scripts_are_valid_shell():
    for script in ("build_linux.sh", "build_macos.sh", "linux/make_deb.sh"):
        r = subprocess.run(
            ["bash", "-n", str(ROOT / "packaging" / script)], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr


def test_opening_a_model_from_the_file_manager_opens_the_window_on_it():
    # the menu entry handles GGUF files: its Exec line, expanded as a desktop does for one
    # file (%f) and for none, must parse as "open the window (on that model)"
    from desklm.cli import build_parser, opened_file_args

    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "packaging" / "linux" / "desklm.desktop")
    d = entry["Desktop Entry"]
    assert "application/x-gguf" in d["MimeType"]
    words = d["Exec"].split()[1:]
    assert words == ["%f"]  # one file per launch: the window opens one model
    model = "/home/me/Downloads/Qwen2.5-0.5B-Instruct-Q4_K_M.GGUF"
    args = build_parser().parse_args(opened_file_args([model if w == "%f" else w for w in words]))
    assert args.command == "gui" and args.model == model
    args = build_parser().parse_args(opened_file_args([w for w in words if w != "%f"]))
    assert args.command is None and args.model is None  # no file: the window, as usual
    # a command is never mistaken for a file
    assert build_parser().parse_args(opened_file_args(["chat", "--model", model])).command == "chat"
