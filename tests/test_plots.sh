#!/usr/bin/env bash
# scripts/plot_run.sh and scripts/plot_eval.sh (ROC, confusion, reliability) on fake inputs: valid PNGs of the designed size and of
# non-trivial content, and a one-line error naming the file for missing or malformed inputs.
# Usage: bash tests/test_plots.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR (the binary is not needed).
set -uo pipefail
src=$2
work=$3
rm -rf "$work" && mkdir -p "$work" || exit 1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

png_ok() { # png_ok FILE WIDTH HEIGHT MIN_BYTES
  local f=$1
  [ -f "$f" ] || { fail "$f not written"; return; }
  [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || { fail "$f: not PNG magic"; return; }
  # IHDR: width and height are big-endian 32-bit at bytes 16 and 20.
  local w h
  w=$(od -An -tu1 -j16 -N4 "$f" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
  h=$(od -An -tu1 -j20 -N4 "$f" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
  [ "$w" = "$2" ] && [ "$h" = "$3" ] || fail "$f: ${w}x$h, expected $2x$3"
  if command -v file > /dev/null; then
    file "$f" | grep -q "PNG image data, $2 x $3" || fail "$f: file(1) says: $(file "$f")"
  fi
  # A blank or nearly blank canvas compresses to a few kB; the plots carry lines, text and fills.
  local bytes
  bytes=$(wc -c < "$f")
  [ "$bytes" -ge "$4" ] || fail "$f: only $bytes bytes (expected >= $4): blank plot?"
}

fails_cleanly() { # fails_cleanly NAME_IN_MESSAGE COMMAND...: non-zero exit, one stderr line naming it
  local name=$1; shift
  "$@" > "$work/out.txt" 2> "$work/err.txt"
  local rc=$?
  [ $rc -ne 0 ] || fail "$* succeeded on bad input"
  [ "$(wc -l < "$work/err.txt")" -eq 1 ] || fail "$*: expected one error line, got: $(cat "$work/err.txt")"
  grep -qF "$name" "$work/err.txt" || fail "$*: error does not name $name: $(cat "$work/err.txt")"
  [ ! -s "$work/out.txt" ] || fail "$*: wrote to stdout on failure"
}

header=epoch,train_loss,train_acc,val_loss,val_acc,val_auc,val_precision,val_recall,val_specificity,val_f1,lr,images_per_s,seconds

# ---- plot_run.sh ----
run=$work/run
mkdir -p "$run"
awk -v h="$header" 'BEGIN { print h
  for (e = 1; e <= 12; e++) {
    tl = 0.6 * exp(-e / 4) + 0.08; vl = 0.55 * exp(-e / 5) + 0.15 + 0.004 * (e > 8 ? (e - 8) ^ 2 : 0)
    printf "%d,%.4f,%.4f,%.4f,%.4f,%.4f,0.9,0.95,0.8,0.92,0.001,850.5,42.1\n", e, tl, 1 - 0.6 * tl,
      vl, 1 - 0.55 * vl, 0.97 - 0.25 * exp(-e / 3)
  } }' > "$run/metrics.csv"
bash "$src/scripts/plot_run.sh" "$run" > /dev/null || fail "plot_run.sh failed on a good metrics.csv"
png_ok "$run/curves.png" 1650 520 30000

# Without a validation split the validation columns are empty: still a plot.
run2=$work/run_noval
mkdir -p "$run2"
{ echo "$header"; echo "1,0.61,0.70,,,,,,,,0.001,900,40"; echo "2,0.50,0.78,,,,,,,,0.001,910,39"; } > "$run2/metrics.csv"
bash "$src/scripts/plot_run.sh" "$run2" > /dev/null || fail "plot_run.sh failed without validation columns"
png_ok "$run2/curves.png" 1650 520 15000

bad=$work/run_bad
mkdir -p "$bad"
fails_cleanly "$bad/metrics.csv" bash "$src/scripts/plot_run.sh" "$bad"
echo "epoch,loss" > "$bad/metrics.csv"
fails_cleanly "$bad/metrics.csv" bash "$src/scripts/plot_run.sh" "$bad"
{ echo "$header"; echo "1,0.5,0.8,0.6,0.7,0.8,0.9,0.95,0.8,0.92,0.001,850"; } > "$bad/metrics.csv"
fails_cleanly "$bad/metrics.csv" bash "$src/scripts/plot_run.sh" "$bad"
{ echo "$header"; echo "1,0.5,oops,0.6,0.7,0.8,0.9,0.95,0.8,0.92,0.001,850,3"; } > "$bad/metrics.csv"
fails_cleanly "$bad/metrics.csv" bash "$src/scripts/plot_run.sh" "$bad"
[ ! -e "$bad/curves.png" ] || fail "curves.png written from a malformed metrics.csv"

# ---- plot_eval.sh ----
ev=$work/eval
mkdir -p "$ev"
cat > "$ev/eval.json" << 'JSON'
{"n": 624, "loss": 0.3123, "accuracy": 0.85897435897435892, "precision": 0.84318181818181814, "recall": 0.95128205128205123, "specificity": 0.70512820512820518, "f1": 0.89397590361445778, "roc_auc": 0.9390532544378698, "pr_auc": 0.95806812447010381, "threshold": 0.3622516393661499, "confusion": [[165, 69], [19, 371]]}
JSON
# A smooth concave curve through the operating point's neighbourhood, in xd_roc_curve_write's format.
awk 'BEGIN { printf "threshold\tfpr\ttpr\ninf\t0\t0\n"
  for (i = 1; i <= 234; i++) { f = i / 234; printf "%.6f\t%.12g\t%.12g\n", 1 - f, f, f ^ 0.04 } }' > "$ev/roc.tsv"
out=$work/eval_out
bash "$src/scripts/plot_eval.sh" "$ev" "$out" > /dev/null || fail "plot_eval.sh EVAL_DIR OUT_DIR failed"
png_ok "$out/roc.png" 800 760 25000
png_ok "$out/confusion.png" 800 700 25000
[ ! -e "$out/reliability.png" ] || fail "reliability.png without a reliability table"
# the reliability diagram, from EVAL_DIR/reliability.csv or a fourth argument (eval --reliability's format)
cat > "$ev/reliability.csv" << 'CSV'
bin_lo,bin_hi,count,mean_prob,frac_pos
0.0,0.1,120,0.041,0.025
0.1,0.2,45,0.148,0.111
0.2,0.3,30,0.251,0.2
0.3,0.4,21,0.352,0.381
0.4,0.5,18,0.447,0.611
0.5,0.6,0,,
0.6,0.7,25,0.655,0.76
0.7,0.8,40,0.752,0.875
0.8,0.9,85,0.857,0.941
0.9,1.0,240,0.968,0.992
CSV
sed -i 's/}$/, "ece": 0.0734, "brier": 0.1021}/' "$ev/eval.json"
bash "$src/scripts/plot_eval.sh" "$ev" "$out" > /dev/null || fail "plot_eval.sh with reliability.csv failed"
png_ok "$out/reliability.png" 800 900 25000
outr=$work/eval_out_rel
bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$outr" "$ev/reliability.csv" > /dev/null ||
  fail "plot_eval.sh EVAL_JSON ROC_TSV OUT_DIR RELIABILITY_CSV failed"
png_ok "$outr/reliability.png" 800 900 25000
printf 'bin_lo,bin_hi,count,mean_prob,frac_pos\n0.0,0.1,3,0.05,1.5\n' > "$work/rel_bad.csv"
fails_cleanly "$work/rel_bad.csv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$outr" "$work/rel_bad.csv"
printf 'bin,count\n0.0,3\n' > "$work/rel_head.csv"
fails_cleanly "$work/rel_head.csv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$outr" "$work/rel_head.csv"
printf 'bin_lo,bin_hi,count,mean_prob,frac_pos\n0.0,0.1,0,,\n' > "$work/rel_empty.csv"
fails_cleanly "$work/rel_empty.csv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$outr" "$work/rel_empty.csv"
fails_cleanly "$work/nothing.csv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$outr" "$work/nothing.csv"
rm "$ev/reliability.csv"

out2=$work/eval_out2
XD_CLASS_NAMES="healthy,sick" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$ev/roc.tsv" "$out2" > /dev/null ||
  fail "plot_eval.sh EVAL_JSON ROC_TSV OUT_DIR failed"
png_ok "$out2/roc.png" 800 760 25000
png_ok "$out2/confusion.png" 800 700 25000
# The class names reach the picture: different names, different pixels.
cmp -s "$out/confusion.png" "$out2/confusion.png" && fail "class names did not change confusion.png"

fails_cleanly "$work/nothing" bash "$src/scripts/plot_eval.sh" "$work/nothing" "$out"
mkdir -p "$work/nothing"
fails_cleanly "$work/nothing/eval.json" bash "$src/scripts/plot_eval.sh" "$work/nothing" "$out"
echo '{"n": 10, "threshold": 0.5, "roc_auc": 0.9}' > "$work/noconf.json"
fails_cleanly "$work/noconf.json" bash "$src/scripts/plot_eval.sh" "$work/noconf.json" "$ev/roc.tsv" "$out"
sed 's/371/300/' "$ev/eval.json" > "$work/sum.json"
fails_cleanly "$work/sum.json" bash "$src/scripts/plot_eval.sh" "$work/sum.json" "$ev/roc.tsv" "$out"
printf 'threshold\tfpr\ttpr\ninf\t0\t0\n0.5\t0.3\n' > "$work/short.tsv"
fails_cleanly "$work/short.tsv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$work/short.tsv" "$out"
printf 'threshold\tfpr\ttpr\ninf\t0\t0\n0.5\t0.6\t0.9\n0.4\t0.5\t1\n' > "$work/order.tsv"
fails_cleanly "$work/order.tsv" bash "$src/scripts/plot_eval.sh" "$ev/eval.json" "$work/order.tsv" "$out"

if [ $failures -ne 0 ]; then
  echo "test_plots: $failures failed" >&2
  exit 1
fi
echo "test_plots: ok"
