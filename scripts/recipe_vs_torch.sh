#!/usr/bin/env bash
# The default recipe and the PyTorch quality recipe (../shared/bench/torch_recipe.py: the same small
# ResNet, augmentation, AdamW + warm-up + cosine, EMA, threshold for >= 95% sensitivity on validation)
# trained one after the other on the same machine and the same patient-disjoint split of DATA.h5, with
# the same 2 cores: xray-dp as 2 MPI ranks x 1 thread, PyTorch with 2 threads. Reports wall time and
# the validation split's ROC-AUC, and accuracy/sensitivity/specificity at the threshold each chose on
# that same validation split (so those three are optimistic for both; the held-out test decides).
#
# usage: scripts/recipe_vs_torch.sh DATA.h5 [OUTDIR]
# env:   XRAYDP=build/xray-dp  TORCH_RECIPE=../shared/bench/torch_recipe.py  PYTHON=/usr/bin/python3
#        SEED=1  EPOCHS (both; default: each recipe's own, 20)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:?usage: recipe_vs_torch.sh DATA.h5 [OUTDIR]}
out=${2:-runs/recipe_vs_torch}
X=${XRAYDP:-$root/build/xray-dp}
ref=${TORCH_RECIPE:-$root/../shared/bench/torch_recipe.py}
py=${PYTHON:-/usr/bin/python3}
seed=${SEED:-1}
[ -f "$ref" ] || { echo "recipe_vs_torch: no torch_recipe.py at $ref (set TORCH_RECIPE)" >&2; exit 2; }
mkdir -p "$out"
ep=()
[ -n "${EPOCHS:-}" ] && ep=(--epochs "$EPOCHS")
rm -rf "$out/xray-dp"
t0=$(date +%s.%N)
"$root/scripts/mpirun.sh" -np 2 -x OMP_NUM_THREADS=1 "$X" train --data "$data" --model default --seed "$seed" \
  "${ep[@]}" --out "$out/xray-dp" --quiet
t1=$(date +%s.%N)
"$X" eval --ckpt "$out/xray-dp/best.h5" --data "$data" --split val --threshold auto --json >"$out/xray-dp.json"
t2=$(date +%s.%N)
OMP_NUM_THREADS=2 "$py" "$ref" "$data" "$data" --eval-split val --threads 2 --seed "$seed" "${ep[@]}" \
  >"$out/torch.log"
t3=$(date +%s.%N)
tail -1 "$out/torch.log" >"$out/torch.json"
jq -r --arg tx "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 60}')" \
      --arg tt "$(awk -v a="$t2" -v b="$t3" 'BEGIN {printf "%.1f", (b - a) / 60}')" \
      --slurpfile t "$out/torch.json" '
  "| | xray-dp default (2 ranks x 1 thread) | PyTorch torch_recipe.py (2 threads) |",
  "|---|---|---|",
  "| wall time, minutes | \($tx) | \($tt) |",
  "| val ROC-AUC | \(.roc_auc * 10000 | round / 10000) | \($t[0].val_auc * 10000 | round / 10000) |",
  "| val accuracy at its val threshold | \(.accuracy * 1000 | round / 1000) | \($t[0].eval_at_val_threshold.acc * 1000 | round / 1000) |",
  "| val sensitivity | \(.recall * 1000 | round / 1000) | \($t[0].eval_at_val_threshold.sens * 1000 | round / 1000) |",
  "| val specificity | \(.specificity * 1000 | round / 1000) | \($t[0].eval_at_val_threshold.spec * 1000 | round / 1000) |",
  "| threshold | \(.threshold * 1000 | round / 1000) | \($t[0].eval_at_val_threshold.thr * 1000 | round / 1000) |"
' "$out/xray-dp.json"
