#!/bin/bash
# The README's screenshots, taken as a user would see the window: a real X server (Xvfb), the
# real app on the embedded model, five questions typed with xdotool (a ten-message chat), then
# the window at 1600x1000, 1024x640 and 800x500, in the light and the dark theme (View > Theme,
# by keyboard), each grabbed with ImageMagick's `import` and shrunk to a small PNG.
# usage: tools/screenshots.sh [OUTDIR]   (PY=python with desklm installed; default .venv/bin/python)
set -u
OUT=$(realpath "${1:-resources/screenshots}"); mkdir -p "$OUT"
PY=${PY:-$PWD/.venv/bin/python}  # not realpath: the venv python is a symlink
WAIT=${WAIT:-25}  # seconds per reply (short replies: max_tokens 48)
D=/tmp/xd-shots; rm -rf $D; mkdir -p $D/config
DN=$((100 + RANDOM % 100)); export DISPLAY=:$DN
Xvfb :$DN -screen 0 1600x1000x24 >/dev/null 2>&1 & XPID=$!
sleep 2
echo '{"theme": "light", "welcome_dismissed": true, "settings": {"max_tokens": 48, "temperature": 0.3}}' \
  > $D/config/settings.json
( cd /tmp && QT_QPA_PLATFORM=xcb "$PY" -m desklm --data-dir $D gui > $D/app.log 2>&1 ) & APID=$!
W=""
for i in $(seq 90); do W=$(xdotool search --onlyvisible --name "^DeskLM" 2>/dev/null | head -1); [ -n "$W" ] && break; sleep 1; done
if [ -z "$W" ]; then echo "no window; log:" >&2; cat $D/app.log >&2; kill $XPID; exit 1; fi
xdotool windowmove $W 0 0; xdotool windowsize $W 1600 1000; sleep 8
ask() {
  eval $(xdotool getwindowgeometry --shell $W)
  xdotool mousemove $((X + WIDTH / 2)) $((Y + HEIGHT - 70)) click 1; sleep 0.3
  xdotool type --delay 15 "$1"; xdotool key Return; sleep "$WAIT"
}
ask "What is the capital of France?"
ask "Write a haiku about the sea."
ask "Give me a Python function that reverses a string."
ask "What is a KV cache, in two sentences?"
ask "Thanks! Sum up our chat in one line."
shot() {  # NAME WIDTH HEIGHT
  xdotool windowsize $W $2 $3; sleep 3
  eval $(xdotool getwindowgeometry --shell $W)
  xdotool mousemove $((X + WIDTH - 5)) $((Y + HEIGHT - 5)); sleep 0.5  # no hover bar
  import -window root -crop ${2}x${3}+0+0 +repage "$D/$1.png"
  convert "$D/$1.png" +dither -colors 160 -define png:compression-level=9 "$OUT/$1.png"
}
for t in light dark; do
  if [ $t = dark ]; then xdotool key --window $W alt+v; sleep 0.5; xdotool key t; sleep 0.3; xdotool key d; sleep 2; fi
  shot "window-1600x1000-$t" 1600 1000
  shot "window-1024x640-$t" 1024 640
  shot "window-800x500-$t" 800 500
  xdotool windowsize $W 1600 1000; sleep 2
done
xdotool key --window $W ctrl+q; sleep 4
kill $APID 2>/dev/null; kill $XPID; wait 2>/dev/null
ls -la "$OUT"/window-*.png
tail -3 $D/app.log
