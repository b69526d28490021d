#!/usr/bin/env bash
# A real headless Chromium (Debian chromium + chromium-driver + python3-selenium) loads serve's page,
# uploads images through it (a small JPEG fixture, a PGM X-ray-like image, and a real X-ray from
# ../shared/data when the checkout has one) and must show exactly the probability `xray-dp predict`
# prints for the same file, the Grad-CAM overlay and the validation figures (tests/test_serve_browser.py).
# Usage: bash tests/test_serve_browser.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
for t in curl /usr/bin/chromium /usr/bin/chromedriver; do
  command -v $t > /dev/null || { echo "FAIL: $t is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import selenium' 2> /dev/null || { echo "FAIL: python3-selenium is needed (scripts/deps.sh --test)" >&2; exit 1; }
SPID=
trap '[ -n "$SPID" ] && kill -9 $SPID 2> /dev/null' EXIT
S=$W/src
pgm_classes "$S" 10
printf 'input 1x16x16\nconv 4 3x3 relu pad=same\nmaxpool 2x2\nconv 6 3x3 relu\nflatten\ndense 1 sigmoid\n' > "$W/tiny.txt"
"$BIN" pack "$S" "$W/d.h5" --size 16 --val-fraction 0.3 --seed 2 > /dev/null 2>&1 || bad "pack"
"$BIN" train --data "$W/d.h5" --model "$W/tiny.txt" --epochs 2 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train"
C=$W/run/best.h5
"$BIN" serve --ckpt "$C" --port 0 > "$W/serve.out" 2> "$W/serve.err" &
SPID=$!
PORT=
for _ in $(seq 1 100); do
  PORT=$(sed -n 's|^xray-dp serve: listening on http://[^ ]*:\([0-9]*\)/ .*|\1|p' "$W/serve.out")
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "FAIL: serve did not start: $(cat "$W/serve.err")" >&2; exit 1; }
imgs=("$SRC/tests/fuzz/corpus/image/rgb.jpg" "$S/PNEUMONIA/p4.pgm")
real=$(ls "$SRC"/../shared/data/chest_xray_fullres/PNEUMONIA/*.jpeg 2> /dev/null | head -1)
[ -n "$real" ] && imgs+=("$real") || echo "note: no ../shared/data; the real X-ray case is skipped"
for f in "${imgs[@]}"; do
  want=$("$BIN" predict --ckpt "$C" "$f" | cut -f2)
  timeout 120 /usr/bin/python3 "$SRC/tests/test_serve_browser.py" "http://127.0.0.1:$PORT/" "$(readlink -f "$f")" "$want" \
    > "$W/browser.log" 2>&1
  r=$?
  sed 's/^/  /' "$W/browser.log"
  [ $r -eq 0 ] && ok || bad "browser with $(basename "$f"): exit $r"
done
kill -TERM "$SPID"
wait "$SPID" && ok || bad "serve did not exit 0 after SIGTERM"
SPID=
finish test_serve_browser
