#!/usr/bin/env bash
# Build the Linux bundle and the .deb from this checkout and check that they start, as a user
# would run them: outside any virtual environment, from another folder, with an empty home.
#
#   packaging/check_linux.sh               # uses .venv (pip install -e ".[package]" or ".[test]")
#   PYTHON=path/to/python packaging/check_linux.sh
#
# Steps (each prints its time; any failure stops the check with a reason, exit 1):
#   1. pyinstaller packaging/desklm.spec               -> build/check/dist/desklm/
#   2. the bundle's `desklm --version`, `desklm --self-test` (offscreen: the window opens,
#      chats once on the embedded model, /reset), a one-line `desklm chat`, and
#      `desklm serve` answering /v1/models and a chat completion (curl)
#   3. packaging/linux/make_deb.sh                      -> build/check/dist/desklm_*.deb
#   4. the .deb installed into a scratch root with dpkg (its own database, maintainer scripts
#      run): the menu entry and icons checked, the program the menu entry starts
#      (/opt/desklm/desklm-gui) self-tested, then the package removed
#
# It builds with the venv's llama.cpp (compiled for this machine): a check, not a release.
# Release builds are packaging/build_linux.sh (llama.cpp for any x86-64 CPU with AVX2).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
OUT=$REPO/build/check
mkdir -p "$OUT"  # a fresh clone has no build/ yet
DIST=$OUT/dist
T0=$(date +%s)
step_start=$T0

fail() { echo "check_linux: FAILED: $*" >&2; exit 1; }
step() {
  local now; now=$(date +%s)
  echo "check_linux: [$((now - T0))s] $*"
  step_start=$now
}
done_step() { echo "check_linux:   ok ($(($(date +%s) - step_start)) s)"; }

[ -x "$PY" ] || fail "no Python at $PY; create the venv (README: Set up) or set PYTHON"
"$PY" -c "import PyInstaller" 2>/dev/null \
  || fail "PyInstaller is not installed in $PY's environment: pip install -e '.[package]'"
command -v dpkg-deb >/dev/null || fail "dpkg-deb is missing (Debian/Ubuntu: it is in dpkg)"
command -v curl >/dev/null || fail "curl is missing (apt-get install curl)"
VERSION=$("$PY" -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")

# A user's environment: no venv, no PYTHONPATH, a fresh home, another working folder.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/desklm-check.XXXXXX")
SERVE_PID=""
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
mkdir -p "$SCRATCH/home" "$SCRATCH/cwd"
as_user() {  # as_user HOME_DIR CMD...: run CMD outside any venv
  local home=$1; shift
  (cd "$SCRATCH/cwd" && env -i PATH=/usr/bin:/bin HOME="$home" LANG=C.UTF-8 \
    QT_QPA_PLATFORM=offscreen "$@")
}
check_self_test() {  # check_self_test LABEL EXE HOME_DIR
  local label=$1 exe=$2 home=$3 log
  log="$SCRATCH/self-test-$label.json"
  local rc=0
  as_user "$home" "$exe" --self-test --screenshot "$SCRATCH/shot-$label.png" >"$log" \
    2>"$log.err" || rc=$?
  [ "$rc" = 0 ] || { tail -20 "$log.err" >&2; fail "$label: desklm --self-test exited $rc"; }
  "$PY" - "$log" "$SCRATCH/shot-$label.png" <<'PYCHECK' || fail "$label: self-test summary"
import json, os, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert summary["ok"] is True, summary
assert summary["reply_chars"] > 0 and summary["reset_ok"] is True, summary
assert "/_internal/models/" in summary["model_path"], summary["model_path"]  # the bundled copy
assert os.path.getsize(sys.argv[2]) > 10_000, "no screenshot"
print(f"check_linux:   self-test: {summary['completion_tokens']} tokens at "
      f"{summary['tokens_per_s']:.0f} tok/s, model {summary['model']}, {summary['total_s']} s")
PYCHECK
}

step "1. building the bundle with PyInstaller ($("$PY" -m PyInstaller --version))"
rm -rf "$DIST"
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN --distpath "$DIST" \
  --workpath "$OUT/work" packaging/desklm.spec >"$OUT.build.log" 2>&1 \
  || { tail -30 "$OUT.build.log" >&2; fail "pyinstaller (full log: $OUT.build.log)"; }
BUNDLE=$DIST/desklm
[ -x "$BUNDLE/desklm" ] && [ -x "$BUNDLE/desklm-gui" ] || fail "the bundle has no desklm executables"
done_step
echo "check_linux:   bundle: $(du -sh "$BUNDLE" | cut -f1) ($BUNDLE)"

step "2. running the bundle outside the venv"
rc=0
ver=$(as_user "$SCRATCH/home" "$BUNDLE/desklm" --version 2>"$SCRATCH/version.err") || rc=$?
[ "$rc" = 0 ] || { tail -20 "$SCRATCH/version.err" >&2; fail "desklm --version exited $rc"; }
[ "${ver%%$'\n'*}" = "desklm $VERSION" ] || fail "--version said '$ver', expected 'desklm $VERSION'"
grep -q "^llama.cpp .* via llama-cpp-python" <<<"$ver" || fail "--version does not name llama.cpp"
sed -n '2,3s/^/check_linux:   /p' <<<"$ver"
check_self_test bundle "$BUNDLE/desklm" "$SCRATCH/home"
rc=0
reply=$(echo "Say hello in three words." \
  | as_user "$SCRATCH/home" "$BUNDLE/desklm" chat --json --no-save --max-tokens 12) || rc=$?
[ "$rc" = 0 ] || fail "desklm chat exited $rc"
echo "$reply" | "$PY" -c "import json,sys; t=json.loads(sys.stdin.readline()); \
assert t['completion_tokens'] > 0 and t['reply'].strip(), t; \
print('check_linux:   chat:', repr(t['reply'][:60]))" || fail "desklm chat gave no reply"
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
(cd "$SCRATCH/cwd" && exec env -i PATH=/usr/bin:/bin HOME="$SCRATCH/home" LANG=C.UTF-8 \
  "$BUNDLE/desklm" serve --port "$PORT") >"$SCRATCH/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/v1/models" >"$SCRATCH/models.json" 2>/dev/null && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$SCRATCH/serve.log" >&2; fail "desklm serve died"; }
  sleep 0.5
done
grep -q '"object"' "$SCRATCH/models.json" 2>/dev/null \
  || { cat "$SCRATCH/serve.log" >&2; fail "desklm serve did not answer /v1/models"; }
curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8}' >"$SCRATCH/completion.json" \
  || fail "desklm serve: the chat completion failed"
grep -q '"choices"' "$SCRATCH/completion.json" || fail "desklm serve: no choices in the answer"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=""
echo "check_linux:   serve: /v1/models and /v1/chat/completions answered"
done_step

step "3. building the .deb"
DEB=$(DIST=$DIST packaging/linux/make_deb.sh "$VERSION")
[ -f "$DEB" ] || fail "make_deb.sh made no .deb"
dpkg-deb --field "$DEB" Package Version | grep -q "Version: $VERSION" || fail "the .deb's version"
done_step
echo "check_linux:   .deb: $(du -h "$DEB" | cut -f1) ($DEB)"

step "4. installing the .deb into a scratch root and starting the installed desklm"
ROOTFS=$SCRATCH/root
mkdir -p "$ROOTFS/var/lib/dpkg/info" "$ROOTFS/var/lib/dpkg/updates" "$ROOTFS/var/log"
: >"$ROOTFS/var/lib/dpkg/status"
# its own dpkg database; dependencies are the host's (this is not a chroot), scripts run with
# DPKG_ROOT pointing into the scratch root
dpkg --root="$ROOTFS" --force-depends --force-script-chrootless --force-not-root \
  --log="$ROOTFS/var/log/dpkg.log" -i "$DEB" >"$SCRATCH/dpkg.log" 2>&1 \
  || { cat "$SCRATCH/dpkg.log" >&2; fail "dpkg -i into the scratch root"; }
dpkg --root="$ROOTFS" -s desklm | grep -q "^Status: install ok installed" \
  || fail "dpkg does not list desklm as installed"
[ "$(readlink "$ROOTFS/usr/bin/desklm")" = /opt/desklm/desklm ] || fail "/usr/bin/desklm link"
DESKTOP=$ROOTFS/usr/share/applications/desklm.desktop
exe=$(sed -n 's/^Exec=\([^ ]*\).*/\1/p' "$DESKTOP")
[ -x "$ROOTFS$exe" ] || fail "the menu entry's Exec ($exe) is not in the package"
[ -f "$ROOTFS/usr/share/icons/hicolor/256x256/apps/desklm.png" ] \
  && [ -f "$ROOTFS/usr/share/icons/hicolor/scalable/apps/desklm.svg" ] || fail "the icons"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate "$DESKTOP" || fail "desktop-file-validate"
fi
mkdir -p "$SCRATCH/home2"
check_self_test installed "$ROOTFS$exe" "$SCRATCH/home2"  # what the menu entry starts
dpkg --root="$ROOTFS" --force-script-chrootless --force-not-root -r desklm >/dev/null 2>&1 \
  || fail "dpkg -r"
[ ! -e "$ROOTFS/opt/desklm" ] && [ ! -e "$DESKTOP" ] || fail "dpkg -r left files behind"
echo "check_linux:   installed, started, removed (nothing left behind)"
done_step

echo "check_linux: passed in $(($(date +%s) - T0)) s: bundle $(du -sh "$BUNDLE" | cut -f1), .deb $(du -h "$DEB" | cut -f1)"
