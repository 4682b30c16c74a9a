#!/bin/bash
# Drive the real window on a virtual X server as a user would (Xvfb + xdotool + ImageMagick):
# launch with an empty data folder, click the message box, type a question, press Enter,
# and take screenshots of the screen and the window at each step into $OUTD.
# usage: tools/drive_window.sh WIDTHxHEIGHT NAME [light|dark]   (DESKLM=path/to/desklm)
set -u
GEOM=$1; NAME=$2; THEME=${3:-}
OUTD=$(realpath "${OUTD:-$PWD}")
APP=${DESKLM:-desklm}
[[ "$APP" == */* ]] && APP=$(realpath "$APP")  # the app runs from /tmp: a relative path breaks
D=/tmp/xd-$NAME; rm -rf $D; mkdir -p $D
DN=$((100 + RANDOM % 100)); export DISPLAY=:$DN
Xvfb :$DN -screen 0 ${GEOM}x24 >/dev/null 2>&1 & XPID=$!
sleep 2
if [ -n "$THEME" ]; then mkdir -p $D/config; echo "{\"theme\": \"$THEME\"}" > $D/config/settings.json; fi
( cd /tmp && QT_QPA_PLATFORM=xcb "$APP" --data-dir $D gui > $D/app.log 2>&1 ) & APID=$!
for i in $(seq 60); do W=$(xdotool search --onlyvisible --name "^DeskLM" 2>/dev/null | head -1); [ -n "$W" ] && break; sleep 1; done
if [ -z "$W" ]; then
  echo "no DeskLM window appeared; its output:" >&2; cat $D/app.log >&2
  kill $XPID; exit 1
fi
echo "window $W"; sleep 6
import -window root $OUTD/$NAME-1-launch.png; import -window $W $OUTD/$NAME-w1-launch.png
# click the message box: find it near the bottom of the window and type
xdotool windowfocus --sync $W 2>/dev/null
eval $(xdotool getwindowgeometry --shell $W)
xdotool mousemove $((X + WIDTH / 2)) $((Y + HEIGHT - 60)) click 1
sleep 0.5
xdotool type --delay 30 "What is the capital of France?"
sleep 0.5
import -window root $OUTD/$NAME-2-typed.png
xdotool key Return
sleep 12
import -window root $OUTD/$NAME-3-reply.png; import -window $W $OUTD/$NAME-w3-reply.png
xdotool key ctrl+q; sleep 3
kill $APID 2>/dev/null; kill $XPID; wait 2>/dev/null
tail -5 $D/app.log
