#!/usr/bin/env bash
# Regenerates every example shown in docs/results.md from the real data, end to end:
#   pack at 128 -> train keras-seed -> eval (table, --json, --roc, --scores, --reliability) on the val split ->
#   predict (+ --gradcam) on a few val images -> scripts/plot_run.sh and scripts/plot_eval.sh.
# Usage: scripts/make_results_docs.sh [DATA_DIR] [WORK_DIR]
#   DATA_DIR  folder with NORMAL/ and PNEUMONIA/ (default: ../shared/data/chest_xray_train beside the repo)
#   WORK_DIR  scratch (default: a new temporary folder; the packed file and run stay there)
# Env: XRAYDP (binary; default build/xray-dp), EPOCHS (default 4), THREADS (default 2).
# Writes docs/img/*.png and docs/examples/* (the text outputs), which results.md quotes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$repo/../shared/data/chest_xray_train}
work=${2:-$(mktemp -d)}
bin=${XRAYDP:-$repo/build/xray-dp}
epochs=${EPOCHS:-4}
threads=${THREADS:-2}
[ -x "$bin" ] || { echo "make_results_docs.sh: $bin: no binary (build first, or set XRAYDP)" >&2; exit 1; }
[ -d "$data" ] || { echo "make_results_docs.sh: $data: no such folder" >&2; exit 1; }
data=$(cd "$data" && pwd)
img=$repo/docs/img
ex=$repo/docs/examples
mkdir -p "$work" "$img" "$ex"
work=$(cd "$work" && pwd)
# run inside the work folder with relative names, so the quoted outputs read like a user's session
cd "$work"
run=run

set -x
"$bin" pack "$data" real128.h5 --size 128 --val-fraction 0.1 --seed 1 2>&1 | tee "$ex/pack.txt"
rm -rf "$run"
# not a TTY here: the progress bar turns into plain lines, which is what the log keeps
"$bin" train --data real128.h5 --model keras-seed --epochs "$epochs" --seed 1 --threads "$threads" \
  --out "$run" 2>&1 | tee "$ex/train_stdout.txt"
cp "$run/metrics.csv" "$ex/metrics.csv"
cp "$run/train.log" "$ex/train.log"

ck=$work/$run/best.h5
"$bin" eval --ckpt run/best.h5 --data real128.h5 --split val --threshold auto > "$ex/eval.txt"
"$bin" eval --ckpt run/best.h5 --data real128.h5 --split val --threshold auto --json \
  --roc roc.tsv --scores scores.tsv --reliability reliability.csv > "$ex/eval.json"
head -n 12 "$work/roc.tsv" > "$ex/roc_head.tsv"

# a few val images of each class, by their paths relative to the data folder (as eval --scores names
# them), so that predict's lines can be checked against eval's: they must be identical
mapfile -t pick < <({ grep -m3 '^NORMAL/' "$work/scores.tsv"; grep -m3 '^PNEUMONIA/' "$work/scores.tsv"; } | cut -f1)
(cd "$data" && "$bin" predict --ckpt "$ck" --threshold auto "${pick[@]}") > "$ex/predict.tsv"
(cd "$data" && "$bin" predict --ckpt "$ck" --threshold auto --json "${pick[@]:0:2}") > "$ex/predict.json"
grep -F -f <(printf '%s\t\n' "${pick[@]}") "$work/scores.tsv" > "$work/scores_pick.tsv"
if cmp -s "$work/scores_pick.tsv" "$ex/predict.tsv"; then
  echo "predict == eval --scores on the ${#pick[@]} images, byte for byte" | tee "$ex/predict_vs_eval.txt"
else
  echo "make_results_docs.sh: predict and eval --scores differ:" >&2
  diff "$work/scores_pick.tsv" "$ex/predict.tsv" >&2 || true
  exit 1
fi
rm -f "$img"/gradcam_*.png
(cd "$data" && "$bin" predict --ckpt "$ck" --threshold auto --gradcam "$work/cam" \
  "${pick[0]}" "${pick[1]}" "${pick[3]}" "${pick[4]}") > /dev/null
for f in "$work"/cam/*.png; do
  b=$(basename "$f")
  case $b in person*) cp "$f" "$img/gradcam_PNEUMONIA_$b" ;; *) cp "$f" "$img/gradcam_NORMAL_$b" ;; esac
done

bash "$repo/scripts/plot_run.sh" "$run"
cp "$run/curves.png" "$img/curves.png"
bash "$repo/scripts/plot_eval.sh" "$ex/eval.json" "$work/roc.tsv" "$img" "$work/reliability.csv"
set +x
ls -l "$img" "$ex"
echo "work files in $work"
