#!/usr/bin/env bash
# Regenerates the "keras-seed vs default" part of docs/audit.md from a scripts/study.sh output folder:
# the side-by-side audit table (scripts/audit_compare.sh) of the two recipes trained on the same
# patient-disjoint carve-out, and Grad-CAM pictures of both models on the same validation images
# (docs/img/audit_<model>_<image>.png).
#
# usage: scripts/make_audit_docs.sh STUDY_DIR [SEED]     (SEED: which carve-out, default 1)
# env:   XRAYDP=build/xray-dp  SRC=../shared/data/chest_xray_train  IMAGES="NORMAL/... PNEUMONIA/..."
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
study=${1:?usage: make_audit_docs.sh STUDY_DIR [SEED]}
seed=${2:-1}
X=$(realpath "${XRAYDP:-$root/build/xray-dp}")
src=${SRC:-$root/../shared/data/chest_xray_train}
data=$study/data_s$seed.h5
A=$study/run_keras-seed_s$seed/best.h5
B=$study/run_default_s$seed/best.h5
for f in "$data" "$A" "$B"; do [ -f "$f" ] || { echo "make_audit_docs: missing $f (run scripts/study.sh)" >&2; exit 1; }; done
out=$root/docs/examples/audit_keras-seed_vs_default.md
XRAYDP=$X LABEL_A=keras-seed LABEL_B=default "$root/scripts/audit_compare.sh" "$A" "$B" "$data" val -- \
  --cam-images 200 >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
# validation images of this carve-out (never trained on by either model): the first two of each class
mapfile -t val < <(h5dump -y -d /val/paths "$data" | grep -o '"[^"]*"' | tr -d '"' | grep -v '^/val')
imgs=${IMAGES:-"$(printf '%s\n' "${val[@]}" | grep '^NORMAL/' | head -2) $(printf '%s\n' "${val[@]}" | grep '^PNEUMONIA/' | head -2)"}
tmp=$(mktemp -d)
rm -f "$root"/docs/img/audit_*.png
trap 'rm -rf "$tmp"' EXIT
for m in keras-seed default; do
  ck=$A; [ $m = default ] && ck=$B
  # shellcheck disable=SC2086
  (cd "$src" && "$X" predict --ckpt "$ck" --threshold auto --gradcam "$tmp/$m" $imgs) | sed "s|^|$m\t|"
  for f in "$tmp/$m"/*.png; do
    cp "$f" "$root/docs/img/audit_${m}_$(basename "$f")"
  done
done
ls "$root"/docs/img/audit_*.png
