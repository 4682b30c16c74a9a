#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp sources vendored in the installed
# llama-cpp-python (the same llama.cpp DeskLM runs), for `desklm bench --concurrency --peer`.
#
#   tools/build_llama_server.sh [OUT_DIR]      (default: build/llama-server)
#
# The sources come from llama-cpp-python's sdist: pip's cache if it is there, else
# `pip download --no-binary :all: --no-deps llama-cpp-python==<installed version>`
# (or the file named by LLAMA_CPP_SDIST).
# CPU only, Release. Takes long on few cores (about 20-40 minutes on 2). Prints the binary's path.
set -euo pipefail
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-build/llama-server}"
JOBS="${JOBS:-$(nproc)}"
VER="$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
WORK="$OUT/src"
mkdir -p "$WORK"
SDIST="${LLAMA_CPP_SDIST:-}"
[ -n "$SDIST" ] || SDIST="$(find "${PIP_CACHE_DIR:-$HOME/.cache/pip}" /tmp -name \
    "llama_cpp_python-$VER.tar.gz" 2>/dev/null | head -1 || true)"
if [ -z "$SDIST" ]; then
    "$PY" -m pip download --no-binary :all: --no-deps -d "$WORK" \
        "llama-cpp-python==$VER" >&2
    SDIST="$WORK/llama_cpp_python-$VER.tar.gz"
fi
[ -f "$SDIST" ] || { echo "build_llama_server: no sdist of llama-cpp-python $VER" >&2; exit 2; }
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VER/vendor/llama.cpp"
[ -f "$SRC/tools/server/server.cpp" ] || [ -d "$SRC/tools/server" ] || {
    echo "build_llama_server: $SDIST has no tools/server" >&2; exit 2; }
cmake -S "$SRC" -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$OUT/cmake" --target llama-server -j "$JOBS" >&2
BIN="$(find "$OUT/cmake" -name llama-server -type f -perm -u+x | head -1)"
cp "$BIN" "$OUT/llama-server"
echo "$(cd "$OUT" && pwd)/llama-server"
