#!/usr/bin/env bash
# Regenerates the Grad-CAM pictures of docs/results.md (docs/img/gradcam_*.png): trains a small ResNet for a
# few epochs on 200 + 200 real X-rays of ../shared/data/chest_xray_train (224 px copies, packed at 128 px; the
# resnet-s preset, 3 epochs, about 40 s on 2 cores: a tiny plain CNN said NORMAL through its bias alone, so
# its NORMAL maps were empty),
# then draws `predict --gradcam` (map of the called class, and --gradcam-class both for one image) over
# full-resolution X-rays of ../shared/data/chest_xray_fullres, at their own aspect ratio.
# env: BIN (default build/xray-dp), DATA (default ../shared/data), CKPT (use this checkpoint, skip training),
#      WORK (default a temporary folder), THREADS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/xray-dp}
DATA=${DATA:-../shared/data}
THREADS=${THREADS:-2}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
if [ -z "${CKPT:-}" ]; then
  rm -rf "$WORK/sub" && mkdir -p "$WORK/sub/NORMAL" "$WORK/sub/PNEUMONIA"
  for c in NORMAL PNEUMONIA; do
    ls "$DATA/chest_xray_train/$c" | sort | awk "NR <= 200" | while read -r f; do ln -s "$(realpath "$DATA/chest_xray_train/$c/$f")" "$WORK/sub/$c/$f"; done
  done
  "$BIN" pack "$WORK/sub" "$WORK/d.h5" --size 128 --val-fraction 0.2 --seed 1 > /dev/null
  "$BIN" train --data "$WORK/d.h5" --model resnet-s --epochs ${EPOCHS:-3} --batch 16 --out "$WORK/run" \
    --quiet --threads "$THREADS" --seed 1 > /dev/null
  CKPT=$WORK/run/best.h5
fi
N=$(ls "$DATA/chest_xray_fullres/NORMAL" | sort | awk "NR <= 2")
P=$(ls "$DATA/chest_xray_fullres/PNEUMONIA" | sort | awk "NR <= 2")
rm -rf "$WORK/cam" && mkdir -p "$WORK/cam"
imgs=()
for f in $N; do imgs+=("$DATA/chest_xray_fullres/NORMAL/$f"); done
for f in $P; do imgs+=("$DATA/chest_xray_fullres/PNEUMONIA/$f"); done
"$BIN" predict --ckpt "$CKPT" --threshold auto "${imgs[@]}" --gradcam "$WORK/cam" | tee "$WORK/predict.tsv"
"$BIN" predict --ckpt "$CKPT" --threshold auto "${imgs[0]}" --gradcam "$WORK/cam/both" --gradcam-class both > /dev/null
rm -f docs/img/gradcam_*.png
for f in "$WORK"/cam/*.png; do
  b=$(basename "$f")
  for c in NORMAL PNEUMONIA; do [ -e "$DATA/chest_xray_fullres/$c/${b%_p*}.jpeg" ] && cp "$f" "docs/img/gradcam_${c}_$b"; done
done
for f in "$WORK"/cam/both/*.png; do cp "$f" "docs/img/gradcam_both_$(basename "$f")"; done
ls docs/img/gradcam_*.png
