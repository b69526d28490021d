#!/usr/bin/env bash
# xray-dp audit end to end on a small synthetic set: the identity perturbation gives flip rate 0 and
# dAUC 0, the clean ROC-AUC / sensitivity / specificity / threshold are exactly eval's, --json has the
# documented keys and rates in range, output is bitwise identical for 1 vs 2 threads and another batch,
# Grad-CAM is null without a conv layer, bad input fails cleanly (exit 1 naming the file, nothing on
# stdout; bad usage exit 2), and scripts/audit_compare.sh prints the side-by-side table.
# Usage: bash tests/test_audit.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR   (needs jq: scripts/deps.sh --test)
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
command -v jq > /dev/null || { echo "FAIL: jq is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in $(seq 1 24); do
  pgm "$S/NORMAL/n$i.pgm" $((30 + i % 7)) $((28 + i % 5)) "$i" $((i % 4 * 10))
  pgm "$S/PNEUMONIA/p$i.pgm" $((34 - i % 6)) $((27 + i % 4)) $((100 + i)) $((30 + 5 * i))
done
D=$W/d.h5
"$BIN" pack "$S" "$D" --size 32 --val-fraction 0.5 --seed 2 --threads 1 > /dev/null 2>&1 || bad "pack"
"$BIN" pack "$S" "$W/d16.h5" --size 16 --threads 1 > /dev/null 2>&1 || bad "pack at 16"
cat > "$W/tiny.txt" << 'EOF'
input 1x32x32
conv 6 3x3 relu pad=same
maxpool 2x2
conv 8 3x3 relu
maxpool 2x2
flatten
dense 16 relu
dense 1 sigmoid
EOF
printf 'input 1x32x32\nflatten\ndense 1 sigmoid\n' > "$W/linear.txt"
"$BIN" train --data "$D" --model "$W/tiny.txt" --epochs 4 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2> "$W/train.err" || bad "train: $(tail -3 "$W/train.err")"
"$BIN" train --data "$D" --model "$W/linear.txt" --epochs 1 --batch 8 --out "$W/lin" --quiet --threads 1 \
  > /dev/null 2> "$W/train.err" || bad "train linear: $(tail -3 "$W/train.err")"
C=$W/run/best.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint; cannot go on" >&2; finish test_audit; exit 1; }

# ---- --json: keys, ranges, consistency ----
run "$BIN" audit --ckpt "$C" --data "$D" --json --threads 1 --cam-images 20
[ "$(rc)" -eq 0 ] && ok || bad "audit --json: exit $(rc): $(cat "$W/err.txt")"
cp "$W/out.txt" "$W/a1.json"
jq -e . "$W/a1.json" > /dev/null && ok || bad "audit --json is not JSON: $(head -c 300 "$W/a1.json")"
[ "$(jq -s length "$W/a1.json")" = 1 ] && ok || bad "audit --json printed more than one value"
[ "$(jq -c keys_unsorted "$W/a1.json")" = '["ckpt","data","split","n","positives","threshold","clean","perturbations","gradcam"]' ] \
  && ok || bad "top-level keys: $(jq -c keys_unsorted "$W/a1.json")"
[ "$(jq -c '.clean | keys_unsorted' "$W/a1.json")" = '["roc_auc","sensitivity","specificity","positive_rate"]' ] \
  && ok || bad "clean keys: $(jq -c '.clean | keys_unsorted' "$W/a1.json")"
row_keys='["name","description","roc_auc","delta_auc","sensitivity","specificity","flip_rate","flips_to_pos","flips_to_neg","mean_abs_dprob","max_abs_dprob"]'
[ "$(jq -c '[.perturbations[] | keys_unsorted] | unique' "$W/a1.json")" = "[$row_keys]" ] && ok \
  || bad "perturbation keys: $(jq -c '[.perturbations[] | keys_unsorted] | unique' "$W/a1.json")"
[ "$(jq -c '[.perturbations[].name]' "$W/a1.json")" = \
  '["squeeze","stretch","border-median","border-black","markers","brighter","darker","gamma-0.7","gamma-1.4","nearest-2x","box-3x3"]' ] \
  && ok || bad "default perturbations: $(jq -c '[.perturbations[].name]' "$W/a1.json")"
[ "$(jq -c '.gradcam | keys_unsorted' "$W/a1.json")" = \
  '["images","empty","box_width","box_height","frame","center_share","border_share","center_area","border_area","center_share_pos","center_share_neg"]' ] \
  && ok || bad "gradcam keys: $(jq -c '.gradcam | keys_unsorted' "$W/a1.json")"
[ "$(jq '[.perturbations[] | .flip_rate >= 0 and .flip_rate <= 1] | all' "$W/a1.json")" = true ] && ok \
  || bad "flip rates out of [0,1]: $(jq -c '[.perturbations[].flip_rate]' "$W/a1.json")"
[ "$(jq '.n as $n | [.perturbations[] | (.flips_to_pos + .flips_to_neg) / $n == .flip_rate] | all' "$W/a1.json")" = true ] \
  && ok || bad "flip counts do not add up to the flip rate"
[ "$(jq '[.perturbations[] | (.roc_auc >= 0 and .roc_auc <= 1) and (.mean_abs_dprob >= 0 and .mean_abs_dprob <= .max_abs_dprob and .max_abs_dprob <= 1)] | all' "$W/a1.json")" = true ] \
  && ok || bad "AUC or |dp| out of range: $(jq -c '.perturbations' "$W/a1.json")"
[ "$(jq '.clean.roc_auc as $c | [.perturbations[] | .delta_auc == .roc_auc - $c] | all' "$W/a1.json")" = true ] \
  && ok || bad "delta_auc is not roc_auc minus the clean AUC"
[ "$(jq '[.perturbations[].mean_abs_dprob] | max > 0' "$W/a1.json")" = true ] && ok \
  || bad "no perturbation moved any probability: the test would not catch a no-op"
[ "$(jq '.gradcam | .images + .empty == 20 and ([.center_share, .border_share, .center_area, .border_area] | all(. >= 0 and . <= 1))' "$W/a1.json")" = true ] \
  && ok || bad "gradcam numbers: $(jq -c .gradcam "$W/a1.json")"
# 32x32: box [6,26) x [5,27) = 440 pixels; frame round(2.56) = 3 -> 1024 - 26*26 = 348
[ "$(jq -c '.gradcam | [.center_area * 1024, .border_area * 1024]' "$W/a1.json")" = '[440,348]' ] && ok \
  || bad "region areas: $(jq -c '.gradcam | [.center_area, .border_area]' "$W/a1.json")"

# ---- the clean numbers are eval's, exactly (same probabilities, same threshold) ----
run "$BIN" eval --ckpt "$C" --data "$D" --split val --threshold auto --json
[ "$(rc)" -eq 0 ] && ok || bad "eval: exit $(rc): $(cat "$W/err.txt")"
ev=$(jq -c '[.n, .roc_auc, .recall, .specificity, .threshold]' "$W/out.txt")
au=$(jq -c '[.n, .clean.roc_auc, .clean.sensitivity, .clean.specificity, .threshold]' "$W/a1.json")
[ "$ev" = "$au" ] && ok || bad "audit clean numbers $au differ from eval's $ev"
[ "$(jq '.clean.roc_auc > 0.5' "$W/a1.json")" = true ] && ok || bad "the test model did not learn: weak test"

# ---- identity: flip rate 0, dAUC 0, no probability moves ----
run "$BIN" audit --ckpt "$C" --data "$D" --json --perturb identity --cam-images 0
[ "$(jq -c '[.perturbations[] | [.name, .flip_rate, .delta_auc, .mean_abs_dprob, .max_abs_dprob]]' "$W/out.txt")" = '[["identity",0,0,0,0]]' ] \
  && ok || bad "identity: $(jq -c .perturbations "$W/out.txt")"
[ "$(jq -c .gradcam "$W/out.txt")" = null ] && ok || bad "--cam-images 0: gradcam is not null"
run "$BIN" audit --ckpt "$C" --data "$D" --json --perturb darker,identity,darker --cam-images 0
[ "$(jq -c '[.perturbations[].name]' "$W/out.txt")" = '["darker","identity","darker"]' ] && ok || bad "--perturb list"
[ "$(jq '.perturbations[0] == .perturbations[2]' "$W/out.txt")" = true ] && ok || bad "the same perturbation twice differs"
[ "$(jq -c '.perturbations[0]' "$W/out.txt")" = "$(jq -c '.perturbations[] | select(.name == "darker")' "$W/a1.json")" ] \
  && ok || bad "a perturbation's row depends on the others"

# ---- determinism: 1 vs 2 threads, another batch, table and JSON ----
run "$BIN" audit --ckpt "$C" --data "$D" --json --threads 2 --cam-images 20
cmp -s "$W/a1.json" "$W/out.txt" && ok || bad "--threads 1 and 2 give different JSON: $(diff "$W/a1.json" "$W/out.txt" | head -c 400)"
run "$BIN" audit --ckpt "$C" --data "$D" --json --threads 2 --batch 7 --cam-images 20
cmp -s "$W/a1.json" "$W/out.txt" && ok || bad "--batch 7 gives different JSON"
"$BIN" audit --ckpt "$C" --data "$D" --threads 1 --cam-images 20 > "$W/t1.txt" 2>&1
"$BIN" audit --ckpt "$C" --data "$D" --threads 2 --cam-images 20 > "$W/t2.txt" 2>&1
cmp -s "$W/t1.txt" "$W/t2.txt" && ok || bad "table differs between 1 and 2 threads"
[ "$(grep -cE '^(squeeze|stretch|border-median|border-black|markers|brighter|darker|gamma-0.7|gamma-1.4|nearest-2x|box-3x3) ' "$W/t1.txt")" -eq 11 ] \
  && grep -q "central thorax box" "$W/t1.txt" && ok || bad "table: $(cat "$W/t1.txt")"

# ---- no conv layer: audit works, Grad-CAM null; a threshold given by hand ----
run "$BIN" audit --ckpt "$W/lin/best.h5" --data "$D" --split train --json --threshold 0.3
[ "$(rc)" -eq 0 ] && [ "$(jq -c '[.gradcam, .threshold, .split]' "$W/out.txt")" = '[null,0.3,"train"]' ] && ok \
  || bad "linear model: exit $(rc): $(head -c 300 "$W/out.txt") $(cat "$W/err.txt")"

# ---- bad input: exit 1, one line naming the file, nothing on stdout ----
fails_with 1 nope.h5 "missing checkpoint" -- "$BIN" audit --ckpt "$W/nope.h5" --data "$D"
fails_with 1 nodata.h5 "missing dataset" -- "$BIN" audit --ckpt "$C" --data "$W/nodata.h5"
fails_with 1 d16.h5 "wrong image size" -- "$BIN" audit --ckpt "$C" --data "$W/d16.h5"
fails_with 1 "'test'" "missing split" -- "$BIN" audit --ckpt "$C" --data "$D" --split test
fails_with 1 d.h5 "dataset as checkpoint" -- "$BIN" audit --ckpt "$D" --data "$D"
echo "not hdf5" > "$W/garbage.h5"
fails_with 1 garbage.h5 "garbage checkpoint" -- "$BIN" audit --ckpt "$W/garbage.h5" --data "$D" --json
fails_with 1 garbage.h5 "garbage dataset" -- "$BIN" audit --ckpt "$C" --data "$W/garbage.h5" --json
for args in "" "--ckpt $C" "--ckpt $C --data $D --bogus" "--ckpt $C --data $D --threshold 2" \
  "--ckpt $C --data $D --perturb nope" "--ckpt $C --data $D --perturb ," "--ckpt $C --data $D --cam-images -1" \
  "--ckpt $C --data $D --threads 0" "--ckpt $C --data $D --split foo" "--ckpt $C --data $D --split"; do
  # shellcheck disable=SC2086
  fails_with 2 "xray-dp audit" "audit $args" -- "$BIN" audit $args
done
run "$BIN" audit --help
[ "$(rc)" -eq 0 ] && grep -q "usage: xray-dp audit" "$W/out.txt" && ok || bad "audit --help"
for p in identity squeeze stretch border-median border-black markers brighter darker gamma-0.7 gamma-1.4 nearest-2x box-3x3; do
  grep -q "^  $p " "$W/out.txt" && ok || bad "--help does not list $p"
done

# ---- scripts/audit_compare.sh: both models side by side ----
run env XRAYDP="$BIN" LABEL_A=tiny LABEL_B=linear bash "$SRC/scripts/audit_compare.sh" "$C" "$W/lin/best.h5" "$D" val -- --cam-images 10
[ "$(rc)" -eq 0 ] && ok || bad "audit_compare.sh: exit $(rc): $(cat "$W/err.txt")"
[ "$(grep -c '^| \(squeeze\|stretch\|border-median\|border-black\|markers\|brighter\|darker\|gamma-0.7\|gamma-1.4\|nearest-2x\|box-3x3\) |' "$W/out.txt")" -eq 11 ] \
  && grep -q 'A = `tiny`, B = `linear`' "$W/out.txt" && grep -q "not available for B " "$W/out.txt" && ok \
  || bad "audit_compare.sh table: $(cat "$W/out.txt")"
auc=$(jq -r '.clean.roc_auc * 10000 | round' "$W/a1.json")
grep -q "^| ROC-AUC | $(awk -v a="$auc" 'BEGIN { printf "%.4f", a / 10000 }') |" "$W/out.txt" && ok || bad "compare: clean ROC-AUC of A"
run env XRAYDP="$BIN" bash "$SRC/scripts/audit_compare.sh" "$C" "$W/nope.h5" "$D"
[ "$(rc)" -eq 1 ] && [ ! -s "$W/out.txt" ] && grep -q nope.h5 "$W/err.txt" && ok || bad "compare with a missing checkpoint: exit $(rc)"
run env XRAYDP="$BIN" bash "$SRC/scripts/audit_compare.sh" "$C"
[ "$(rc)" -eq 2 ] && ok || bad "compare with too few arguments: exit $(rc)"

finish test_audit
