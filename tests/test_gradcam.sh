#!/usr/bin/env bash
# predict --gradcam: the picture follows the source's aspect ratio (longest side 512) with the panel under
# it, --gradcam-class picks whose evidence is drawn (both: two files named by class), the default file name
# is unchanged, the same run gives the same bytes, bad --gradcam-class values are usage errors.
# (Pixels — panel, colour bar, opacity floor and cap, the negative class's map — are in test_render.c.)
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
command -v file > /dev/null || { echo "FAIL: file is needed" >&2; exit 1; }
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in $(seq 1 8); do
  pgm "$S/NORMAL/n$i.pgm" 24 24 "$i" 0
  pgm "$S/PNEUMONIA/p$i.pgm" 24 24 $((100 + i)) $((30 + 10 * i))
done
cat > "$W/tiny.txt" << 'M'
input 1x16x16
conv 4 3x3 relu pad=same
maxpool 2x2
conv 6 3x3 relu
flatten
dense 1 sigmoid
M
"$BIN" pack "$S" "$W/d.h5" --size 16 --val-fraction 0.25 --seed 2 > /dev/null 2>&1 || bad "pack"
"$BIN" train --data "$W/d.h5" --model "$W/tiny.txt" --epochs 1 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train"
C=$W/run/last.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint; cannot go on" >&2; exit 1; }
pgm "$W/wide.pgm" 80 40 7 60   # landscape 2:1 -> 512 x 256 + 132 panel
pgm "$W/tall.pgm" 30 60 8 60   # portrait 1:2  -> 256 x 512, on a 512-wide canvas

dims() { file "$1" | sed -n 's/.*PNG image data, \([0-9]*\) x \([0-9]*\),.*/\1x\2/p'; }
# the default: one file per image, named as before, at the source's aspect ratio
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" "$W/tall.pgm" --gradcam "$W/g1"
[ "$(rc)" = 0 ] && ok || bad "predict --gradcam: rc $(rc): $(cat "$W/err.txt")"
f=$(ls "$W"/g1/wide_p*.png 2> /dev/null)
[ "$(ls "$W/g1" | wc -l)" = 2 ] && ok || bad "files: $(ls "$W/g1")"
[ "$(dims "$f")" = 512x388 ] && ok || bad "wide: $(dims "$f") (want 512x388)"
[ "$(dims "$W"/g1/tall_p*.png)" = 512x644 ] && ok || bad "tall: $(dims "$W"/g1/tall_p*.png) (want 512x644)"
p=$(awk -F'\t' 'NR == 1 { printf "%.3f", $2 }' "$W/out.txt")
[ "$(basename "$f")" = "wide_p$p.png" ] && ok || bad "name $(basename "$f"), probability $p"
# the same bytes twice
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" "$W/tall.pgm" --gradcam "$W/g2"
for g in "$W"/g1/*.png; do
  cmp -s "$g" "$W/g2/$(basename "$g")" && ok || bad "$(basename "$g") differs between two runs"
done
# predicted = the called class: with --threshold 0 the call is positive, with 1 (p < 1) negative
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/pos" --gradcam-class positive --threshold 0
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/pred" --threshold 0
cmp -s "$W"/pos/*.png "$W"/pred/*.png && ok || bad "predicted (positive call) differs from positive"
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/neg" --gradcam-class negative --threshold 1
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/predn" --threshold 1
cmp -s "$W"/neg/*.png "$W"/predn/*.png && ok || bad "predicted (negative call) differs from negative"
! cmp -s "$W"/neg/*.png "$W"/pos/*.png && ok || bad "the negative class's picture equals the positive's"
# both: two files, named by class
run "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/both" --gradcam-class both --threshold 0
[ "$(rc)" = 0 ] && ls "$W"/both/wide_p*_PNEUMONIA.png "$W"/both/wide_p*_NORMAL.png > /dev/null 2>&1 && ok \
  || bad "both: $(ls "$W/both")"
cmp -s "$W"/both/wide_p*_PNEUMONIA.png "$W"/pos/*.png && ok || bad "both's PNEUMONIA file differs from positive's"
# usage errors
fails_with 2 "--gradcam-class" "bad class" -- "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam "$W/x" --gradcam-class up
fails_with 2 "--gradcam-class" "without --gradcam" -- "$BIN" predict --ckpt "$C" "$W/wide.pgm" --gradcam-class both
"$BIN" predict --help | grep -q -- "--gradcam-class predicted|positive|negative|both" && ok || bad "--help"
finish gradcam
