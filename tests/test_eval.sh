#!/usr/bin/env bash
# eval and predict end to end on a crafted dataset: predict's probabilities are bitwise eval's (batch 64
# vs 1, another eval batch, 2 MPI ranks; also with --tta and for an ensemble of --ckpt), eval --json has
# the SPEC keys then the calibration ones, --threshold auto is the checkpoint's stored threshold (or,
# for an ensemble / --tta, the one chosen on the val split), --tta is the same on 1 and 2 threads, an
# ensemble is the mean of its members, --prior and --reliability work, Grad-CAM PNGs are written, and
# bad inputs fail cleanly (exit 1, one line naming the file; bad usage exit 2; predict keeps going past
# bad files).
# Usage: bash tests/test_eval.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR   (needs jq: scripts/deps.sh --test)
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") # predict runs from inside the image tree
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$2/tests/lib.sh"
command -v jq > /dev/null || { echo "FAIL: jq is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
S=$W/src
pgm_classes "$S" 14
cat > "$W/tiny.txt" << 'EOF'
input 1x16x16
conv 4 3x3 relu pad=same
batchnorm
maxpool 2x2
conv 6 3x3 relu
flatten
dense 8 relu
dropout 0.2
dense 1 sigmoid
EOF
"$BIN" pack "$S" "$W/d16.h5" --size 16 --val-fraction 0.3 --seed 2 > /dev/null 2>&1 || bad "pack at 16"
"$BIN" pack "$S" "$W/d20.h5" --size 20 > /dev/null 2>&1 || bad "pack at 20"
"$BIN" train --data "$W/d16.h5" --model "$W/tiny.txt" --epochs 3 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train"
C=$W/run/best.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint; cannot go on" >&2; exit 1; }

# ---- --json: exactly the SPEC keys, consistent numbers ----
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --json --scores "$W/s64.tsv" --roc "$W/roc.tsv"
[ "$(rc)" -eq 0 ] && ok || bad "eval --json: exit $(rc): $(cat "$W/err.txt")"
cp "$W/out.txt" "$W/e.json"
jq -e . "$W/e.json" > /dev/null && ok || bad "eval --json is not JSON: $(cat "$W/e.json")"
[ "$(jq -s length "$W/e.json")" = 1 ] && ok || bad "eval --json printed more than one value"
keys=$(jq -c 'keys_unsorted' "$W/e.json")
[ "$keys" = '["n","loss","accuracy","precision","recall","specificity","f1","roc_auc","pr_auc","threshold","confusion","ece","brier","reliability"]' ] \
  && ok || bad "eval --json keys: $keys"
[ "$(jq -c '[(.reliability | length), (.reliability | map(.count) | add) == .n, (.ece >= 0 and .ece <= 1),
  (.brier >= 0 and .brier <= 1), (.reliability[0] | keys_unsorted)]' "$W/e.json")" \
  = '[10,true,true,true,["bin_lo","bin_hi","count","mean_prob","frac_pos"]]' ] \
  && ok || bad "eval --json calibration: $(jq -c '[.ece, .brier, .reliability]' "$W/e.json")"
# ECE and Brier recomputed from --scores: mean (p - y)^2, and the 10-bin gap
read -r ece brier < <(awk -F'\t' '{ y = $1 ~ /^PNEUMONIA\// ; p = $2; b = int(p * 10); if (b > 9) b = 9
  c[b]++; sp[b] += p; sy[b] += y; sq += (p - y) ^ 2; n++ }
  END { for (b in c) { d = sp[b] / c[b] - sy[b] / c[b]; e += c[b] / n * (d < 0 ? -d : d) }; printf "%.9f %.9f\n", e, sq / n }' "$W/s64.tsv")
[ "$(jq --argjson e "$ece" --argjson b "$brier" '((.ece - $e) | fabs) < 1e-6 and ((.brier - $b) | fabs) < 1e-6' "$W/e.json")" = true ] \
  && ok || bad "ece/brier $(jq -c '[.ece, .brier]' "$W/e.json") vs from the scores $ece $brier"
n_train=$(wc -l < "$W/s64.tsv")
[ "$(jq .n "$W/e.json")" = "$n_train" ] && [ "$n_train" -ge 15 ] && ok || bad "n $(jq .n "$W/e.json") vs $n_train scores"
[ "$(jq '.confusion | flatten | add' "$W/e.json")" = "$n_train" ] && ok || bad "confusion does not sum to n"
[ "$(jq '.threshold' "$W/e.json")" = 0.5 ] && ok || bad "default threshold is not 0.5"
[ "$(jq '[.loss, .accuracy, .roc_auc, .pr_auc] | all(. >= 0 and . <= 10)' "$W/e.json")" = true ] && ok \
  || bad "metrics out of range: $(cat "$W/e.json")"
[ "$(head -1 "$W/roc.tsv")" = "$(printf 'threshold\tfpr\ttpr')" ] && ok || bad "roc header"
# the confusion matrix counts the labels eval --scores writes (both from the same probabilities)
cm_from_scores() { awk -F'\t' '{ a = $1 ~ /^PNEUMONIA\// ; p = $3 == "PNEUMONIA"; c[a, p]++ }
  END { printf "[[%d,%d],[%d,%d]]\n", c[0, 0], c[0, 1], c[1, 0], c[1, 1] }' "$1"; }
[ "$(jq -c .confusion "$W/e.json")" = "$(cm_from_scores "$W/s64.tsv")" ] && ok \
  || bad "confusion $(jq -c .confusion "$W/e.json") vs scores $(cm_from_scores "$W/s64.tsv")"

# ---- --threshold auto: the root attribute `threshold` of the checkpoint ----
stored=$(h5dump -m %.17g -a /threshold "$C" | sed -n 's/^ *(0): *//p')
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --json --threshold auto --scores "$W/sauto.tsv"
cp "$W/out.txt" "$W/eauto.json"
got=$(jq .threshold "$W/eauto.json")
[ -n "$stored" ] && awk -v a="$stored" -v b="$got" 'BEGIN { exit !(a == b && a != 0.5) }' && ok \
  || bad "auto threshold $got, checkpoint holds '$stored' (must differ from 0.5 for this test to mean anything)"
[ "$(jq -c .confusion "$W/eauto.json")" = "$(cm_from_scores "$W/sauto.tsv")" ] && ok || bad "auto confusion vs labels"
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --threshold 0.25 --json
[ "$(jq .threshold "$W/out.txt")" = 0.25 ] && ok || bad "--threshold 0.25 not reported"
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train
grep -q "ROC-AUC" "$W/out.txt" && grep -q "actual PNEUMONIA" "$W/out.txt" && ok || bad "eval table: $(cat "$W/out.txt")"

# ---- predict == eval, bitwise (eval batch 64 and 3, predict batch 1, 2 ranks) ----
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --batch 3 --scores "$W/s3.tsv"
cmp -s "$W/s64.tsv" "$W/s3.tsv" && ok || bad "eval --batch 3 and 64 give different probabilities"
mapfile -t paths < <(cut -f1 "$W/s64.tsv")
(cd "$S" && "$BIN" predict --ckpt "$C" "${paths[@]}") > "$W/pred.tsv" 2> "$W/err.txt" || bad "predict: $(cat "$W/err.txt")"
cmp -s "$W/s64.tsv" "$W/pred.tsv" && ok || bad "predict differs from eval --scores: $(diff "$W/s64.tsv" "$W/pred.tsv" | head -4)"
[ "$(cut -f2 "$W/pred.tsv" | sort -u | wc -l)" -ge 5 ] && ok || bad "scores barely differ: weak test"
(cd "$S" && "$BIN" predict --ckpt "$C" --threshold auto "${paths[@]}") > "$W/pred_auto.tsv" 2> /dev/null
cmp -s "$W/sauto.tsv" "$W/pred_auto.tsv" && ok || bad "predict --threshold auto labels differ from eval's"
MPIRUN=$SRC/scripts/mpirun.sh
if command -v mpirun > /dev/null; then
  run bash "$MPIRUN" -np 2 "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --json --scores "$W/smpi.tsv"
  [ "$(rc)" -eq 0 ] && ok || bad "eval on 2 ranks: exit $(rc): $(tail -3 "$W/err.txt")"
  cmp -s "$W/s64.tsv" "$W/smpi.tsv" && ok || bad "eval on 2 ranks gives other probabilities"
  [ "$(jq -c 'del(.loss)' "$W/out.txt")" = "$(jq -c 'del(.loss)' "$W/e.json")" ] && ok || bad "2-rank JSON differs"
  run bash "$MPIRUN" -np 2 "$BIN" eval --ckpt "$C" --data "$W/d20.h5" --split train
  [ "$(rc)" -ne 0 ] && [ ! -s "$W/out.txt" ] && ok || bad "2 ranks, wrong image size: exit $(rc)"
  # mpirun adds its own banner; the program's line, naming the file, must be there exactly once
  [ "$(grep -c '^xray-dp eval: .*d20.h5' "$W/err.txt")" -eq 1 ] && [ "$(grep -c '^xray-dp' "$W/err.txt")" -eq 1 ] && ok \
    || bad "2 ranks: not one error line: $(cat "$W/err.txt")"
else
  bad "mpirun not found (openmpi-bin)"
fi

good_img=$S/NORMAL/n3.pgm
# ---- ensembles (--ckpt A --ckpt B), --tta, --threshold auto for them, --prior, --reliability ----
"$BIN" train --data "$W/d16.h5" --model "$W/tiny.txt" --epochs 3 --batch 4 --out "$W/run2" --quiet --threads 1 \
  --seed 7 > /dev/null 2>&1 || bad "train seed 7"
C2=$W/run2/best.h5
run "$BIN" eval --ckpt "$C2" --data "$W/d16.h5" --split train --scores "$W/s_b.tsv"
run "$BIN" eval --ckpt "$C" --ckpt "$C2" --data "$W/d16.h5" --split train --scores "$W/s_ab.tsv" --json
[ "$(rc)" -eq 0 ] && [ "$(jq .checkpoints "$W/out.txt")" = 2 ] && ok || bad "ensemble eval: exit $(rc): $(cat "$W/err.txt")"
paste "$W/s64.tsv" "$W/s_b.tsv" "$W/s_ab.tsv" | awk -F'\t' '$1 != $4 || $1 != $7 { exit 1 }
  { d = ($2 + $5) / 2 - $8; if (d < 0) d = -d; if (d > 1e-6) exit 1 }' && ok \
  || bad "ensemble of 2 is not the mean of its members: $(paste "$W/s64.tsv" "$W/s_b.tsv" "$W/s_ab.tsv" | head -3)"
cmp -s "$W/s64.tsv" "$W/s_b.tsv" && bad "the two checkpoints score alike: weak ensemble test" || ok
# --tta: the same bytes on 1 and 2 threads, different from no TTA, and predict gives the same (with an
# ensemble, and with --threshold auto chosen on the val split by both commands)
OMP_NUM_THREADS=1 "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --tta --scores "$W/tta1.tsv" > /dev/null 2>&1
OMP_NUM_THREADS=2 "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --tta --scores "$W/tta2.tsv" > /dev/null 2>&1
[ -s "$W/tta1.tsv" ] && cmp -s "$W/tta1.tsv" "$W/tta2.tsv" && ok || bad "--tta differs between 1 and 2 threads"
cmp -s "$W/tta1.tsv" "$W/s64.tsv" && bad "--tta changes nothing" || ok
(cd "$S" && OMP_NUM_THREADS=2 "$BIN" predict --ckpt "$C" --tta "${paths[@]}") > "$W/pred_tta.tsv" 2> "$W/err.txt"
cmp -s "$W/tta1.tsv" "$W/pred_tta.tsv" && ok || bad "predict --tta differs from eval --tta: $(diff "$W/tta1.tsv" "$W/pred_tta.tsv" | head -4)"
run "$BIN" eval --ckpt "$C" --ckpt "$C2" --data "$W/d16.h5" --split train --tta --threshold auto --scores "$W/ens_tta.tsv" --json
[ "$(rc)" -eq 0 ] && [ "$(jq -c '[.checkpoints, .tta]' "$W/out.txt")" = "[2,9]" ] && ok || bad "ensemble --tta eval: $(cat "$W/err.txt")"
thr_ens=$(jq .threshold "$W/out.txt")
"$BIN" eval --ckpt "$C" --ckpt "$C2" --data "$W/d16.h5" --split val --tta --scores "$W/ens_tta_val.tsv" > /dev/null 2>&1
# the auto threshold: the highest val score that keeps >= 95% of val PNEUMONIA cases above it
want_thr=$(awk -F'\t' '$1 ~ /^PNEUMONIA\// { print $2 }' "$W/ens_tta_val.tsv" | sort -g | awk '{ v[NR] = $1 }
  END { k = NR - int(NR * 0.95 + 0.999999) + 1; print v[k] }')
[ -n "$want_thr" ] && [ "$(printf '%.9g' "$thr_ens")" = "$want_thr" ] && ok || bad "ensemble auto threshold $thr_ens, val gives $want_thr"
(cd "$S" && "$BIN" predict --ckpt "$C" --ckpt "$C2" --tta --threshold auto --val-data "$W/d16.h5" "${paths[@]}") \
  > "$W/pred_ens_tta.tsv" 2> "$W/err.txt"
cmp -s "$W/ens_tta.tsv" "$W/pred_ens_tta.tsv" && ok \
  || bad "predict ensemble --tta differs from eval: $(cat "$W/err.txt") $(diff "$W/ens_tta.tsv" "$W/pred_ens_tta.tsv" | head -4)"
if command -v mpirun > /dev/null; then
  run bash "$MPIRUN" -np 2 "$BIN" eval --ckpt "$C" --ckpt "$C2" --data "$W/d16.h5" --split train --tta --threshold auto \
    --scores "$W/ens_tta_mpi.tsv"
  [ "$(rc)" -eq 0 ] && cmp -s "$W/ens_tta.tsv" "$W/ens_tta_mpi.tsv" && ok || bad "ensemble --tta on 2 ranks differs: $(tail -3 "$W/err.txt")"
fi
fails_with 2 "--val-data" "predict ensemble auto without --val-data" -- "$BIN" predict --ckpt "$C" --ckpt "$C2" \
  --threshold auto "$good_img"
# --reliability: the JSON's table as CSV; --prior: probabilities moved by the odds ratio, auto threshold
# mapped alike (same confusion matrix), reported in the JSON
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --reliability "$W/rel.csv" --json
[ "$(head -1 "$W/rel.csv")" = "bin_lo,bin_hi,count,mean_prob,frac_pos" ] && [ "$(wc -l < "$W/rel.csv")" -eq 11 ] \
  && [ "$(awk -F, 'NR > 1 { n += $3 } END { print n }' "$W/rel.csv")" = "$(jq .n "$W/out.txt")" ] && ok || bad "--reliability: $(cat "$W/rel.csv")"
ls "$W"/rel.csv.tmp* > /dev/null 2>&1 && bad "temporary file left behind" || ok
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --threshold auto --prior 0.2 --json --scores "$W/sprior.tsv"
[ "$(rc)" -eq 0 ] && [ "$(jq -c '[.prior.deployment, .prior.train_from, .confusion == $c]' --argjson c "$(jq -c .confusion "$W/eauto.json")" "$W/out.txt")" = '[0.2,"checkpoint",true]' ] \
  && ok || bad "--prior 0.2: $(cat "$W/out.txt" "$W/err.txt")"
moved() { # moved BEFORE.tsv AFTER.tsv P Q: AFTER's probabilities are BEFORE's with the odds times odds(P)/odds(Q)
  paste "$1" "$2" | awk -F'\t' -v P="$3" -v Q="$4" '{ r = (P / (1 - P)) / (Q / (1 - Q)); p = $2; q = p * r / (p * r + 1 - p)
    d = q - $5; if (d < 0) d = -d; if (d > 1e-6) exit 1 }'; }
q_train=$(jq .prior.train "$W/out.txt") # the checkpoint's train_prior: 10 of 20 positive, no class weights: 0.5
[ "$q_train" = 0.5 ] && moved "$W/sauto.tsv" "$W/sprior.tsv" 0.2 "$q_train" && ok || bad "--prior: probabilities not moved by the odds ratio (q $q_train)"
run "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --prior 0.2 --train-prior 0.7 --json --scores "$W/sprior7.tsv"
[ "$(jq -c '[.prior.train, .prior.train_from]' "$W/out.txt")" = '[0.7,"option"]' ] && moved "$W/s64.tsv" "$W/sprior7.tsv" 0.2 0.7 \
  && ok || bad "--train-prior 0.7: $(cat "$W/out.txt" "$W/err.txt")"
fails_with 2 "--prior" "prior 1" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --prior 1
fails_with 2 "--prior" "prior x" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --prior x
fails_with 2 "--train-prior" "train-prior without prior" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --train-prior 0.5
fails_with 1 "$W" "--reliability to a directory" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train --reliability "$W"
# bad ensembles: another input size or other class names -> exit 1 naming the odd checkpoint, nothing written
"$BIN" train --data "$W/d20.h5" --model keras-seed --max-steps 0 --batch 4 --out "$W/run20" --quiet --threads 1 > /dev/null 2>&1
rm -f "$W/never.tsv"
fails_with 1 "run20/last.h5" "ensemble of 16x16 and 20x20 inputs" -- "$BIN" eval --ckpt "$C" --ckpt "$W/run20/last.h5" \
  --data "$W/d16.h5" --split train --scores "$W/never.tsv"
[ ! -e "$W/never.tsv" ] && ok || bad "mismatched ensemble wrote --scores"
grep -q "input size" "$W/err.txt" && ok || bad "mismatched ensemble: message does not say input size: $(cat "$W/err.txt")"
fails_with 1 "run20/last.h5" "predict ensemble of 16x16 and 20x20" -- "$BIN" predict --ckpt "$C" --ckpt "$W/run20/last.h5" "$good_img"
fails_with 1 nope.h5 "ensemble with a missing member" -- "$BIN" eval --ckpt "$C" --ckpt "$W/nope.h5" --data "$W/d16.h5" --split train
mkdir -p "$W/src_ab/healthy" "$W/src_ab/sick"
cp "$S"/NORMAL/* "$W/src_ab/healthy/" && cp "$S"/PNEUMONIA/* "$W/src_ab/sick/"
"$BIN" pack "$W/src_ab" "$W/d16ab.h5" --size 16 > /dev/null 2>&1
"$BIN" train --data "$W/d16ab.h5" --model "$W/tiny.txt" --max-steps 0 --batch 4 --out "$W/run_ab" --quiet --threads 1 \
  > /dev/null 2>&1
fails_with 1 "run_ab/last.h5" "ensemble with other class names" -- "$BIN" eval --ckpt "$C" --ckpt "$W/run_ab/last.h5" \
  --data "$W/d16.h5" --split train
grep -q "class names" "$W/err.txt" && ok || bad "class-name mismatch: message does not say so: $(cat "$W/err.txt")"
"$BIN" pack "$S" "$W/d16noval.h5" --size 16 --val-fraction 0 > /dev/null 2>&1
fails_with 1 d16noval.h5 "ensemble auto threshold without a val split" -- "$BIN" eval --ckpt "$C" --ckpt "$C2" \
  --data "$W/d16noval.h5" --split train --threshold auto

# ---- eval errors: exit 1 naming the file; usage: exit 2 ----
fails_with 1 nope.h5 "missing checkpoint" -- "$BIN" eval --ckpt "$W/nope.h5" --data "$W/d16.h5" --split train
fails_with 1 nodata.h5 "missing dataset" -- "$BIN" eval --ckpt "$C" --data "$W/nodata.h5" --split train
fails_with 1 d20.h5 "wrong image size" -- "$BIN" eval --ckpt "$C" --data "$W/d20.h5" --split train
fails_with 1 "'test'" "missing split" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5"
fails_with 1 d16.h5 "dataset as checkpoint" -- "$BIN" eval --ckpt "$W/d16.h5" --data "$W/d16.h5" --split train
echo "not hdf5" > "$W/garbage.h5"
fails_with 1 garbage.h5 "garbage checkpoint" -- "$BIN" eval --ckpt "$W/garbage.h5" --data "$W/d16.h5" --split train
fails_with 1 /nonexistent/roc.tsv "unwritable --roc" -- "$BIN" eval --ckpt "$C" --data "$W/d16.h5" --split train \
  --roc /nonexistent/roc.tsv --json
for args in "" "--ckpt $C" "--ckpt $C --data $W/d16.h5 --bogus" "--ckpt $C --data $W/d16.h5 --threshold 2" \
  "--ckpt $C --data $W/d16.h5 --threshold x" "--ckpt $C --data $W/d16.h5 --batch 0" "--ckpt $C --data $W/d16.h5 --split"; do
  # shellcheck disable=SC2086
  fails_with 2 "xray-dp eval" "eval $args" -- "$BIN" eval $args
done
run "$BIN" eval --help
[ "$(rc)" -eq 0 ] && grep -q "usage: xray-dp eval" "$W/out.txt" && ok || bad "eval --help"

# ---- predict: bad files reported per file, the rest still predicted ----
echo "junk" > "$W/junk.png"
: > "$W/empty.jpg"
good1=$S/NORMAL/n3.pgm
good2=$S/PNEUMONIA/p5.pgm
run "$BIN" predict --ckpt "$C" "$good1" "$W/missing.png" "$W/junk.png" "$good2" "$W/empty.jpg"
[ "$(rc)" -eq 1 ] && ok || bad "predict with bad files: exit $(rc), expected 1"
[ "$(wc -l < "$W/out.txt")" -eq 2 ] && grep -qF "$good1" "$W/out.txt" && grep -qF "$good2" "$W/out.txt" && ok \
  || bad "good files not all predicted: $(cat "$W/out.txt")"
[ "$(wc -l < "$W/err.txt")" -eq 3 ] && ok || bad "expected 3 error lines: $(cat "$W/err.txt")"
for f in missing.png junk.png empty.jpg; do grep -qF "$W/$f" "$W/err.txt" && ok || bad "no error line names $f"; done
awk -F'\t' 'NF != 3 || $2 !~ /^[0-9.e-]+$/ || $2 < 0 || $2 > 1 || ($3 != "NORMAL" && $3 != "PNEUMONIA") { exit 1 }' \
  "$W/out.txt" && ok || bad "predict line format: $(cat "$W/out.txt")"
run "$BIN" predict --ckpt "$C" --json "$good1" "$W/junk.png" "$good2"
[ "$(rc)" -eq 1 ] && ok || bad "predict --json with a bad file: exit $(rc)"
jq -e . "$W/out.txt" > /dev/null && ok || bad "predict --json is not JSON: $(cat "$W/out.txt")"
[ "$(jq -c '[.threshold, (.predictions | length), (.predictions[1] | keys), (.predictions[0] | keys)]' "$W/out.txt")" \
  = '[0.5,3,["error","path"],["label","path","probability"]]' ] && ok || bad "predict --json shape: $(cat "$W/out.txt")"
p_json=$(jq -r '.predictions[2].probability' "$W/out.txt")
p_text=$("$BIN" predict --ckpt "$C" "$good2" | cut -f2)
awk -v a="$p_json" -v b="$p_text" 'BEGIN { exit !(a == b) }' && ok || bad "--json probability $p_json vs $p_text"
fails_with 1 nope.h5 "predict, missing checkpoint" -- "$BIN" predict --ckpt "$W/nope.h5" "$good1"
fails_with 2 "xray-dp predict" "predict without --ckpt" -- "$BIN" predict "$good1"
fails_with 2 "xray-dp predict" "predict without images" -- "$BIN" predict --ckpt "$C"
fails_with 2 "xray-dp predict" "predict unknown option" -- "$BIN" predict --ckpt "$C" --bogus "$good1"

# ---- Grad-CAM: one PNG per image, probability in the name, same-name images not overwritten ----
mkdir -p "$W/dup/a" "$W/dup/b"
cp "$good1" "$W/dup/a/x.pgm"
cp "$good2" "$W/dup/b/x.pgm"
run "$BIN" predict --ckpt "$C" --gradcam "$W/cam" "$good1" "$W/dup/a/x.pgm" "$W/dup/b/x.pgm"
[ "$(rc)" -eq 0 ] && ok || bad "predict --gradcam: exit $(rc): $(cat "$W/err.txt")"
[ "$(find "$W/cam" -name '*.png' | wc -l)" -eq 3 ] && ok || bad "expected 3 overlays: $(ls "$W/cam")"
p1=$(grep -F "$good1" "$W/out.txt" | cut -f2)
f1="$W/cam/n3_p$(printf '%.3f' "$p1").png"
if [ -f "$f1" ]; then
  ok
  [ "$(head -c 8 "$f1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok || bad "$f1: not a PNG"
  wh=$(od -An -tu1 -j16 -N8 "$f1" | awk '{ print ($3 * 256 + $4) "x" ($7 * 256 + $8) }')
  [ "$wh" = 512x644 ] && ok || bad "$f1: ${wh}, expected 512x644 (512 square at the source's aspect, plus the 132-px panel)"
else
  bad "no overlay named $f1: $(ls "$W/cam")"
fi
cmp -s "$W/out.txt" <("$BIN" predict --ckpt "$C" "$good1" "$W/dup/a/x.pgm" "$W/dup/b/x.pgm") && ok \
  || bad "--gradcam changes the printed probabilities"

finish test_eval
