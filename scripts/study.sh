#!/usr/bin/env bash
# Compares candidate training recipes the honest way: for each seeded, patient-disjoint validation
# carve-out of the train split (pack's default grouping by Kaggle patient id), train every recipe with
# 2 MPI ranks, then measure on that carve-out's val split (which the recipe never trained on):
# ROC-AUC, sensitivity/specificity/accuracy at the threshold the run chose (>= 95% sensitivity on the
# same val split, so these are optimistic), ECE, the shortcut audit's mean flip rate and mean AUC drop,
# the specificity when every val image is squeezed to 80% of its width (the known shift: the held-out
# test's NORMAL films are wider than train's, so after the square resize their anatomy is narrower,
# as train's PNEUMONIA films are), and the training wall time. Prints one markdown row per (recipe, carve-out) and a summary table
# (mean and spread over carve-outs) that docs/results.md quotes.
#
# usage: scripts/study.sh [SRC] [OUTDIR]
#   SRC     folder with NORMAL/ and PNEUMONIA/ (default ../shared/data/chest_xray_train)
#   OUTDIR  where packed data, runs and results go (default study/)
# env:   SEEDS="1 2"         carve-out seeds (pack --seed); each is a different patient-disjoint val
#        RECIPES="keras-seed default-noaug default"   names from the list below
#        SIZE=128 NP=2 XRAYDP=build/xray-dp
#        REPORT_ONLY=1: only rebuild the tables from the runs already in OUTDIR
# Recipes (the options each passes to `xray-dp train`):
#   keras-seed      --model keras-seed (the old default: Adam 1e-3, 10 epochs, early stopping)
#   keras-shortcut  --model keras-seed --augment shortcut --class-weight balanced
#   default-noaug   --model default --augment none      (the recipe without augmentation)
#   default-augdef  --model default --augment default   (the recipe with the older, milder augmentation)
#   default         --model default                     (the recipe as shipped)
#   resnet-m        --model resnet-m + the default recipe's options (width 24 instead of 16)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$root/../shared/data/chest_xray_train}
out=${2:-study}
X=${XRAYDP:-$root/build/xray-dp}
np=${NP:-2}
size=${SIZE:-128}
[ -x "$X" ] || { echo "study.sh: no binary at $X (scripts/build.sh first)" >&2; exit 2; }
[ -d "$src" ] || { echo "study.sh: no image folder at $src" >&2; exit 2; }
command -v jq >/dev/null || { echo "study.sh: needs jq" >&2; exit 2; }
mkdir -p "$out"
recipe_args() {
  case "$1" in
    keras-seed) echo "--model keras-seed" ;;
    keras-shortcut) echo "--model keras-seed --augment shortcut --class-weight balanced" ;;
    default-noaug) echo "--model default --augment none" ;;
    default-augdef) echo "--model default --augment default" ;;
    default) echo "--model default" ;;
    resnet-m) echo "--model resnet-m --optimizer adamw --lr 2e-3 --weight-decay 5e-4 --warmup 1 --schedule cosine \
--epochs 20 --augment shortcut --class-weight balanced --ema 0.998 --sync-bn --monitor last --patience 0" ;;
    *) echo "study.sh: unknown recipe '$1'" >&2; return 1 ;;
  esac
}
rows=$out/rows.tsv
: >"$rows"
echo "| recipe | carve-out seed | val ROC-AUC | sensitivity | specificity | accuracy | ECE | audit mean flip | audit mean AUC drop | specificity squeezed | train min |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for seed in ${SEEDS:-1 2}; do
  data=$out/data_s$seed.h5
  [ -f "$data" ] || [ -n "${REPORT_ONLY:-}" ] || "$X" pack "$src" "$data" --size "$size" --val-fraction 0.1 --seed "$seed" 2>"$out/pack_s$seed.log"
  for r in ${RECIPES:-keras-seed default-noaug default}; do
    args=$(recipe_args "$r")
    run=$out/run_${r}_s$seed
    if [ -z "${REPORT_ONLY:-}" ]; then
      rm -rf "$run"
      t0=$(date +%s.%N)
      # shellcheck disable=SC2086
      "$root/scripts/mpirun.sh" -np "$np" "$X" train --data "$data" $args --seed "$seed" --out "$run" --quiet
      t1=$(date +%s.%N)
      awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", (b - a) / 60}' >"$run/train_minutes"
      "$X" eval --ckpt "$run/best.h5" --data "$data" --split val --threshold auto --json >"$run/eval_val.json"
      "$X" audit --ckpt "$run/best.h5" --data "$data" --split val --json --cam-images 100 >"$run/audit_val.json"
    fi
    [ -f "$run/audit_val.json" ] || continue
    e=$run/eval_val.json a=$run/audit_val.json
    flip=$(jq '[.perturbations[].flip_rate] | add / length' "$a")
    drop=$(jq '[.perturbations[] | -.delta_auc] | add / length' "$a")
    sq=$(jq '.perturbations[] | select(.name == "squeeze") | .specificity' "$a")
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$r" "$seed" "$(jq .roc_auc "$e")" "$(jq .recall "$e")" \
      "$(jq .specificity "$e")" "$(jq .accuracy "$e")" "$(jq .ece "$e")" "$flip" "$drop" "$sq" "$(cat "$run/train_minutes")" >>"$rows"
    tail -1 "$rows" | awk -F'\t' '{printf "| %s | %s | %.4f | %.3f | %.3f | %.3f | %.3f | %.3f | %.4f | %.3f | %.1f |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}'
  done
done
echo
echo "Summary over carve-outs (mean +- sd; val = the carve-out's patient-disjoint validation split):"
echo
echo "| recipe | runs | val ROC-AUC | sensitivity | specificity | accuracy | ECE | audit mean flip | audit mean AUC drop | specificity squeezed | train min |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '
  { n[$1]++; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
    for (c = 3; c <= 11; c++) { s[$1, c] += $c; q[$1, c] += $c * $c } }
  END {
    for (i = 1; i <= k; i++) {
      r = order[i]; printf "| %s | %d |", r, n[r]
      for (c = 3; c <= 11; c++) {
        m = s[r, c] / n[r]; v = q[r, c] / n[r] - m * m; sd = v > 0 ? sqrt(v) : 0
        fmt = (c == 3 || c == 9) ? " %.4f +- %.4f |" : (c == 11 ? " %.1f +- %.1f |" : " %.3f +- %.3f |")
        printf fmt, m, sd
      }
      printf "\n"
    }
  }' "$rows"
