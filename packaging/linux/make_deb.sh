#!/usr/bin/env bash
# Package dist/desklm/ as a .deb that installs into /opt/desklm, with the menu entry, icons,
# AppStream metainfo and a `desklm` command. Usage: make_deb.sh VERSION
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=$1
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
ROOT=build/deb
rm -rf "$ROOT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications" \
  "$ROOT/usr/share/metainfo" "$ROOT/usr/share/icons/hicolor/scalable/apps"
cp -a dist/desklm "$ROOT/opt/desklm"
ln -s /opt/desklm/desklm "$ROOT/usr/bin/desklm"
install -m 644 packaging/linux/desklm.desktop "$ROOT/usr/share/applications/desklm.desktop"
install -m 644 packaging/linux/io.desklm.DeskLM.metainfo.xml "$ROOT/usr/share/metainfo/"
for s in 16 24 32 48 64 128 256 512; do
  mkdir -p "$ROOT/usr/share/icons/hicolor/${s}x${s}/apps"
  install -m 644 "resources/icons/desklm-$s.png" \
    "$ROOT/usr/share/icons/hicolor/${s}x${s}/apps/desklm.png"
done
install -m 644 resources/icons/desklm.svg "$ROOT/usr/share/icons/hicolor/scalable/apps/desklm.svg"
SIZE=$(du -sk "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: desklm
Version: $VERSION
Architecture: $ARCH
Maintainer: DeskLM developers <hello@desklm.io>
Installed-Size: $SIZE
Depends: libc6 (>= 2.31), libgl1, libegl1, libxkbcommon0, libxkbcommon-x11-0, libfontconfig1, libdbus-1-3, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libxcb-shape0
Section: utils
Priority: optional
Homepage: https://desklm.io
Description: private chat with local language models
 DeskLM runs a quantized language model (GGUF, through llama.cpp) on this
 computer and shows live what it costs: memory, CPU, tokens per second, time
 to first token and context fill. Works offline with its embedded model.
CONTROL
for script in postinst postrm; do
  cat > "$ROOT/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if command -v update-desktop-database >/dev/null 2>&1; then update-desktop-database -q /usr/share/applications || true; fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true; fi
exit 0
SCRIPT
  chmod 755 "$ROOT/DEBIAN/$script"
done
dpkg-deb --build --root-owner-group "$ROOT" "dist/desklm_${VERSION}_${ARCH}.deb"
