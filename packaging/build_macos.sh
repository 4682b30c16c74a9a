#!/usr/bin/env bash
# Build DeskLM for macOS: dist/DeskLM.app and dist/DeskLM-<version>-macos-<arch>.dmg.
#
#   packaging/build_macos.sh
#
# Needs python3 (3.11+, or set PYTHON), the Xcode command line tools and cmake. llama.cpp is
# built with Metal (the Apple GPU; its shaders embedded in the library) and without
# CPU-specific flags, for macOS $MACOSX_DEPLOYMENT_TARGET (default 13.0) and newer; the app is
# for the build machine's architecture (arm64 on Apple silicon).
#
# Signing (optional): DESKLM_CODESIGN_IDENTITY="Developer ID Application: ..." signs every
# binary and the app with the hardened runtime (packaging/macos/entitlements.plist); without
# it PyInstaller signs ad hoc, which runs on the machine that built it, and elsewhere only
# after the user allows it (right-click > Open). Notarizing is a step of
# .github/workflows/installers.yml, which runs exactly this script on a hosted macos runner.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=build/venv
export MACOSX_DEPLOYMENT_TARGET=${MACOSX_DEPLOYMENT_TARGET:-13.0}
ARCH=$(uname -m)

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip wheel
# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back another build
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_METAL=on -DGGML_METAL_EMBED_LIBRARY=on ${CMAKE_ARGS:-}" \
  "$VENV/bin/python" -m pip install -q --no-cache-dir "llama-cpp-python>=0.3.36,<0.4"
"$VENV/bin/python" -m pip install -q ".[package]"
VERSION=$("$VENV/bin/python" -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
"$VENV/bin/python" packaging/make_icons.py
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
  packaging/desklm.spec
codesign --verify --deep --strict dist/DeskLM.app

# the disk image: the app and a link to /Applications to drag it onto
STAGE=build/dmg
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -R dist/DeskLM.app "$STAGE/"
ln -s /Applications "$STAGE/Applications"
DMG="dist/DeskLM-$VERSION-macos-$ARCH.dmg"
hdiutil create -volname "DeskLM $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
if [ -n "${DESKLM_CODESIGN_IDENTITY:-}" ]; then
  codesign --force --timestamp --sign "$DESKLM_CODESIGN_IDENTITY" "$DMG"
fi
du -sh dist/DeskLM.app "$DMG"
