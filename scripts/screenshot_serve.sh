#!/usr/bin/env bash
# docs/img/serve.png: serve's page in headless Chromium after uploading a real X-ray (through
# tests/test_serve_browser.py, which also checks the page shows predict's probability).
# Usage: scripts/screenshot_serve.sh CKPT.h5 IMAGE [XRAYDP_BINARY] [VAL_DATA.h5]   (OUT=path to change the output)
# docs/img/serve.png was made with a keras-seed checkpoint trained 15 epochs on 400 images of
# ../shared/data/chest_xray_train (the first 200 file names of NORMAL and of PNEUMONIA, `ls` order; pack
# --size 128 --val-fraction 0.25 --seed 1; train --model keras-seed --epochs 15), VAL_DATA = that packed
# file, and IMAGE = ../shared/data/chest_xray_fullres/PNEUMONIA/<first file>.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CKPT=$(readlink -f "$1")
IMG=$(readlink -f "$2")
BIN=$(readlink -f "${3:-$ROOT/build/xray-dp}")
VAL=${4:-}
OUT=${OUT:-$ROOT/docs/img/serve.png}
W=$(mktemp -d /tmp/screenshot_serve.XXXXXX)
SPID=
trap '[ -n "$SPID" ] && kill -9 $SPID 2> /dev/null; rm -rf "$W"' EXIT
args=(--ckpt "$CKPT" --port 0)
[ -n "$VAL" ] && args+=(--val-data "$VAL")
"$BIN" serve "${args[@]}" > "$W/serve.out" 2> "$W/serve.err" &
SPID=$!
port=
for _ in $(seq 1 300); do
  port=$(sed -n 's|^xray-dp serve: listening on http://[^ ]*:\([0-9]*\)/ .*|\1|p' "$W/serve.out")
  [ -n "$port" ] && break
  kill -0 "$SPID" 2> /dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { echo "screenshot_serve.sh: serve did not start: $(cat "$W/serve.err")" >&2; exit 1; }
want=$("$BIN" predict --ckpt "$CKPT" "$IMG" | cut -f2)
/usr/bin/python3 "$ROOT/tests/test_serve_browser.py" "http://127.0.0.1:$port/" "$IMG" "$want" "$W/shot.png"
mkdir -p "$(dirname "$OUT")"
cp "$W/shot.png" "$OUT"
kill -TERM "$SPID"
wait "$SPID"
SPID=
echo "screenshot_serve.sh: wrote $OUT"
