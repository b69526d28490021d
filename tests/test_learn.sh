#!/usr/bin/env bash
# keras-seed on the built-in synthetic set: it must learn (val ROC-AUC >= 0.70 within 5 epochs), and
# not in one step (epoch 1 below the best epoch by a margin): the set is meant to need a few epochs.
set -euo pipefail
X=$1; SRC=$2; W=$3
rm -rf "$W"; mkdir -p "$W"; cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
"$X" synth d.h5 >/dev/null
"$X" train --data d.h5 --model keras-seed --epochs 5 --patience 0 --out run --quiet
cat run/metrics.csv
best=$(awk -F, 'NR > 1 && $6 > b { b = $6 } END { print b }' run/metrics.csv)
first=$(awk -F, 'NR == 2 { print $6 }' run/metrics.csv)
awk -v b="$best" 'BEGIN { exit !(b >= 0.70) }' || fail "best val_auc $best < 0.70 after 5 epochs"
awk -v b="$best" -v f="$first" 'BEGIN { exit !(f < b - 0.05) }' || fail "epoch 1 already at val_auc $first (best $best): too easy"
echo "learn: 1 passed, 0 failed (val_auc epoch 1 $first, best $best)"
