#!/usr/bin/env bash
# Package the PyInstaller bundle (dist/desklm/) as a .deb that installs into /opt/desklm, with
# the menu entry, icons, AppStream metainfo and a `desklm` command.
#
#   make_deb.sh VERSION          # writes dist/desklm_VERSION_ARCH.deb and prints its path
#
# DIST=DIR takes the bundle from DIR/desklm and writes the .deb into DIR (default dist);
# DEB_COMPRESSION=zstd|xz|gzip|none picks dpkg-deb's compression. The default, zstd, is
# read by the dpkg of every system the bundle runs on (Debian 12+, Ubuntu 22.04+: the bundle
# needs the build machine's glibc or newer anyway) and takes seconds where xz takes many
# minutes on two cores (the model inside is already compressed; xz saves little).
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=$1
DIST=${DIST:-dist}
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
[ -x "$DIST/desklm/desklm" ] || { echo "make_deb.sh: no bundle at $DIST/desklm (build it first)" >&2; exit 1; }
mkdir -p build
ROOT=$(mktemp -d build/deb.XXXXXX)  # its own tree: two builds at once cannot mix
trap 'rm -rf "$ROOT"' EXIT
chmod 755 "$ROOT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications" \
  "$ROOT/usr/share/metainfo" "$ROOT/usr/share/icons/hicolor/scalable/apps"
mkdir -p "$ROOT/opt/desklm" && cp -a "$DIST/desklm/." "$ROOT/opt/desklm/"
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
# the newest glibc symbol version any binary in the bundle needs (what dpkg-shlibdeps would
# find); without binutils, the build machine's glibc
GLIBC=$(find "$ROOT/opt" -type f \( -name '*.so*' -o -perm -u+x \) -print0 2>/dev/null \
  | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' \
  | sort -Vu | tail -1 || true)
[ -n "$GLIBC" ] || GLIBC=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: desklm
Version: $VERSION
Architecture: $ARCH
Maintainer: DeskLM developers <hello@desklm.io>
Installed-Size: $SIZE
Depends: libc6 (>= $GLIBC), libgl1, libegl1, libxkbcommon0, libxkbcommon-x11-0, libfontconfig1, libdbus-1-3, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libxcb-shape0
Section: utils
Priority: optional
Homepage: https://desklm.io
Description: private chat with local language models
 DeskLM runs a quantized language model (GGUF, through llama.cpp) on this
 computer and shows live what it costs: memory, CPU, tokens per second, time
 to first token and context fill. Works offline with its embedded model.
CONTROL
# refresh the menu and icon caches ($DPKG_ROOT: installed into another root, dpkg --root)
for script in postinst postrm; do
  cat > "$ROOT/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if command -v update-desktop-database >/dev/null 2>&1; then update-desktop-database -q "${DPKG_ROOT:-}/usr/share/applications" || true; fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then gtk-update-icon-cache -q -t "${DPKG_ROOT:-}/usr/share/icons/hicolor" || true; fi
exit 0
SCRIPT
  chmod 755 "$ROOT/DEBIAN/$script"
done
DEB="$DIST/desklm_${VERSION}_${ARCH}.deb"
dpkg-deb --build --root-owner-group -Z"${DEB_COMPRESSION:-zstd}" "$ROOT" "$DEB" >/dev/null
echo "$DEB"
