"""Make the app icons from the SVG master: PNG sizes, a Windows .ico and a macOS .icns.

    python packaging/make_icons.py [--out DIR]     # writes into resources/icons/ by default

Rendered with Qt's SVG renderer (PySide6, already a dependency); .ico and .icns are written
directly (both formats are containers of PNG images), so no other tool is needed.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "app" / "desklm" / "resources" / "desklm.svg"
OUT = ROOT / "resources" / "icons"
SIZES = [16, 24, 32, 48, 64, 128, 256, 512, 1024]


def render(size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(MASTER)).render(p)
    p.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    return bytes(data.data())


def write_ico(path: Path, pngs: dict[int, bytes]) -> None:
    sizes = [s for s in (16, 24, 32, 48, 64, 128, 256) if s in pngs]
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = 6 + 16 * len(sizes)
    entries, blobs = b"", b""
    for s in sizes:
        data = pngs[s]
        dim = 0 if s >= 256 else s  # 0 means 256 in the ICO directory
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    path.write_bytes(header + entries + blobs)


def write_icns(path: Path, pngs: dict[int, bytes]) -> None:
    kinds = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09",
             1024: b"ic10"}
    chunks = b"".join(k + struct.pack(">I", 8 + len(pngs[s])) + pngs[s]
                      for s, k in kinds.items() if s in pngs)
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(chunks)) + chunks)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Make the app icons from the SVG master.")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)
    out = args.out
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    out.mkdir(parents=True, exist_ok=True)
    pngs = {s: render(s) for s in SIZES}
    for s, data in pngs.items():
        (out / f"desklm-{s}.png").write_bytes(data)
    write_ico(out / "desklm.ico", pngs)
    write_icns(out / "desklm.icns", pngs)
    (out / "desklm.svg").write_bytes(MASTER.read_bytes())
    print(f"icons written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
