#!/usr/bin/env bash
# Training curves of a run: scripts/plot_run.sh RUN_DIR
#
# Reads RUN_DIR/metrics.csv (SPEC section 4; one row per epoch) and writes RUN_DIR/curves.png with
# three panels: loss, accuracy (train vs validation) and validation ROC-AUC per epoch. Validation
# columns may be empty or nan (no validation split); such series are left out. Needs gnuplot
# (Debian: gnuplot-nox). Fails with one line naming the file when the input is missing or malformed.
set -euo pipefail

me=$(basename "$0")
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $me RUN_DIR"
csv="$1/metrics.csv"
out="$1/curves.png"
[ -f "$csv" ] || die "$csv: no such file"
[ -r "$csv" ] || die "$csv: not readable"
command -v gnuplot > /dev/null || die "gnuplot not found (Debian: apt-get install gnuplot-nox)"

header="epoch,train_loss,train_acc,val_loss,val_acc,val_auc,val_precision,val_recall,val_specificity,val_f1,lr,images_per_s,seconds"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Validate and convert to whitespace-separated columns with '?' for missing values, and collect
# what the plot needs: which validation series exist, the epoch range, the best validation AUC.
if ! summary=$(awk -F, -v header="$header" -v file="$csv" -v data="$tmp/data" '
  function bad(msg) { print file ": " msg > "/dev/stderr"; failed = 1; exit 1 }
  function num(s) { return s ~ /^[ ]*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?[ ]*$/ }
  { sub(/\r$/, "") }
  NR == 1 { if ($0 != header) bad("line 1: header is not \"" header "\""); next }
  /^[ ]*$/ { next }
  {
    if (NF != 13) bad("line " NR ": " NF " fields, expected 13")
    if (!num($1)) bad("line " NR ": epoch \"" $1 "\" is not a number")
    row = ""
    for (i = 1; i <= 13; i++) {
      v = $i
      if (v ~ /^[ ]*$/ || tolower(v) ~ /^[ ]*[-+]?(nan|inf|infinity)[ ]*$/) v = "?"
      else if (!num(v)) bad("line " NR ": column " i " \"" v "\" is not a number")
      else have[i] = 1
      row = row (i > 1 ? " " : "") v
    }
    print row > data
    rows++
    if (rows == 1 || $1 < emin) emin = $1
    if (rows == 1 || $1 > emax) emax = $1
    if (num($6) && (best == "" || $6 + 0 > best + 0)) { best = $6 + 0; bestep = $1 }
  }
  END {
    if (failed) exit 1
    if (NR < 1) bad("empty file")
    if (rows < 1) bad("no epoch rows after the header")
    printf "%s %s %d %d %d %d %d %s %s\n", emin, emax, rows, (2 in have), (3 in have), (4 in have),
           (5 in have), (6 in have) ? best : "?", (6 in have) ? bestep : "?"
  }' "$csv" 2> "$tmp/err"); then
  die "$(head -n1 "$tmp/err")"
fi
read -r emin emax rows has_tl has_ta has_vl has_va best_auc best_ep <<< "$summary"
[ "$has_tl" = 1 ] || die "$csv: train_loss has no numeric value"

term="pngcairo size 1650,520 enhanced font 'DejaVu Sans,12' linewidth 2"
gnuplot -e "set terminal pngcairo" 2> /dev/null || term="png size 1650,520 enhanced"

series() { # series COLUMN TITLE STYLE -> one gnuplot plot clause
  echo "'$tmp/data' using 1:$1 with linespoints $3 title '$2'"
}
join_plots() { local IFS=,; echo "$*"; }

loss=("$(series 2 train 'lc rgb "#1f77b4" pt 7 ps 0.8')")
[ "$has_vl" = 1 ] && loss+=("$(series 4 validation 'lc rgb "#d62728" pt 5 ps 0.8')")
acc=()
[ "$has_ta" = 1 ] && acc+=("$(series 3 train 'lc rgb "#1f77b4" pt 7 ps 0.8')")
[ "$has_va" = 1 ] && acc+=("$(series 5 validation 'lc rgb "#d62728" pt 5 ps 0.8')")
acc_yr="[*:1]"
if [ ${#acc[@]} -eq 0 ]; then acc=("2 notitle"); acc_yr="[0.5:1]"; fi

if [ "$best_auc" != "?" ]; then
  auc_plot="$(series 6 'validation ROC-AUC' 'lc rgb "#d62728" pt 5 ps 0.8'), \
    '+' using ($best_ep):($best_auc) every ::0::0 with points pt 6 ps 2.5 lc rgb '#222222' \
    title sprintf('best: %.4f (epoch %d)', $best_auc, $best_ep)"
else
  auc_plot="2 notitle" # outside the y range: an empty panel that says why
  auc_yr="[0.5:1]"
  auc_label="set label 1 'no validation ROC-AUC in metrics.csv' at graph 0.5,0.5 center; unset key"
fi

# A single epoch still gets a readable x axis; integer epoch tics up to 20 epochs.
xr="set xrange [$emin-0.5:$emax+0.5]"
xt=$(awk -v a="$emin" -v b="$emax" 'BEGIN { print (b - a <= 20) ? "set xtics 1" : "set xtics" }')

cat > "$tmp/plot.gp" << EOF
set terminal $term
set output '$tmp/curves.png'
set datafile missing '?'
set multiplot layout 1,3 title "Training run: $(basename "$(cd "$1" && pwd)") ($rows epoch$([ "$rows" = 1 ] || echo s))" font ',15'
$xr
$xt
set xlabel 'epoch'
set grid lc rgb '#dddddd'
set key top right box opaque Left reverse samplen 2
set title font ',13'

set title 'Loss (binary cross-entropy)'
set ylabel 'loss'
set yrange [0:*]
plot $(join_plots "${loss[@]}")

set title 'Accuracy'
set ylabel 'accuracy'
set yrange $acc_yr
set key bottom right
plot $(join_plots "${acc[@]}")

set title 'Validation ROC-AUC'
set ylabel 'ROC-AUC'
set key below horizontal noopaque nobox # points can sit anywhere in this panel: keep the key off them
set yrange ${auc_yr:-[*:1]}
${auc_label:-}
plot $auc_plot
unset multiplot
EOF

if ! gnuplot "$tmp/plot.gp" 2> "$tmp/gp.err"; then
  die "gnuplot failed on $csv: $(grep -v '^ *$' "$tmp/gp.err" | tail -n1)"
fi
mv "$tmp/curves.png" "$out"
echo "$out"
