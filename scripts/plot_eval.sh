#!/usr/bin/env bash
# ROC curve, confusion matrix and reliability diagram of an evaluation:
#   scripts/plot_eval.sh EVAL_DIR OUT_DIR            reads EVAL_DIR/eval.json and EVAL_DIR/roc.tsv, and
#                                                    EVAL_DIR/reliability.csv when it exists
#   scripts/plot_eval.sh EVAL_JSON ROC_TSV OUT_DIR [RELIABILITY_CSV]
# Writes OUT_DIR/roc.png (ROC curve, AUC in the title, the operating point at the evaluation threshold
# marked), OUT_DIR/confusion.png (2x2 counts, coloured by the fraction of each actual class) and, with a
# reliability table, OUT_DIR/reliability.png (fraction positive vs mean predicted probability per bin
# against the diagonal of perfect calibration, ECE and Brier in the title, cases per bin below).
#
# Inputs (what `xray-dp eval` writes):
#   eval.json  the `eval --json` object (SPEC section 5): needs n, threshold, roc_auc and confusion
#              [[TN,FP],[FN,TP]]; an optional "class_names": ["NORMAL","PNEUMONIA"] names the classes,
#              else XD_CLASS_NAMES="NEG,POS" from the environment, else NORMAL,PNEUMONIA.
#   roc.tsv    the `eval --roc FILE` curve (xd_roc_curve_write): header `threshold<TAB>fpr<TAB>tpr`,
#              then rows by descending threshold, the first being `inf 0 0`.
#   reliability.csv  the `eval --reliability FILE` table: header `bin_lo,bin_hi,count,mean_prob,frac_pos`,
#              one row per bin, both means empty for an empty bin. The title's ECE and Brier come from
#              eval.json ("ece", "brier") when it has them.
# Needs gnuplot (Debian: gnuplot-nox). Fails with one line naming the file when an input is missing or
# malformed, or when OUT_DIR cannot take the PNGs (a full disk, a read-only folder: the reason is in the
# line); the PNGs are written all or nothing (a staging folder in OUT_DIR, flushed, then renamed), so a
# failure leaves OUT_DIR's earlier PNGs as they were.
set -euo pipefail

me=$(basename "$0")
die() { echo "$me: $*" >&2; exit 1; }

rel=
case $# in
  2) [ -d "$1" ] || die "$1: not a directory (for files: $me EVAL_JSON ROC_TSV OUT_DIR [RELIABILITY_CSV])"
     json="$1/eval.json"; roc="$1/roc.tsv"; out="$2"
     if [ -e "$1/reliability.csv" ]; then rel="$1/reliability.csv"; fi ;;
  3) json="$1"; roc="$2"; out="$3" ;;
  4) json="$1"; roc="$2"; out="$3"; rel="$4" ;;
  *) die "usage: $me EVAL_DIR OUT_DIR | $me EVAL_JSON ROC_TSV OUT_DIR [RELIABILITY_CSV]" ;;
esac
for f in "$json" "$roc" ${rel:+"$rel"}; do
  [ -f "$f" ] || die "$f: no such file"
  [ -r "$f" ] || die "$f: not readable"
done
command -v gnuplot > /dev/null || die "gnuplot not found (Debian: apt-get install gnuplot-nox)"
err=$(mkdir -p "$out" 2>&1) || die "$out: cannot create the output directory: ${err##*: }"
[ -w "$out" ] || die "$out: cannot write to the output directory"

# ---- eval.json: a flat object, so a regular expression per key is enough ----
j=$(tr -d '\n\r' < "$json")
[[ $j =~ ^[[:space:]]*\{.*\}[[:space:]]*$ ]] || die "$json: not a JSON object"
num='[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?'
getnum() { # getnum KEY -> number, "null", or empty when absent
  sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*(null|$num).*/\1/p" <<< "$j"
}
n=$(getnum n)
threshold=$(getnum threshold)
auc=$(getnum roc_auc)
[ -n "$n" ] && [ "$n" != null ] || die "$json: no numeric \"n\""
[ -n "$threshold" ] || die "$json: no \"threshold\""
[ -n "$auc" ] || die "$json: no \"roc_auc\""
read -r tn fp fn tp <<< "$(sed -nE 's/.*"confusion"[[:space:]]*:[[:space:]]*\[[[:space:]]*\[[[:space:]]*([0-9]+)[[:space:]]*,[[:space:]]*([0-9]+)[[:space:]]*\][[:space:]]*,[[:space:]]*\[[[:space:]]*([0-9]+)[[:space:]]*,[[:space:]]*([0-9]+)[[:space:]]*\][[:space:]]*\].*/\1 \2 \3 \4/p' <<< "$j")"
[ -n "${tp:-}" ] || die "$json: no \"confusion\": [[TN, FP], [FN, TP]]"
[ $((tn + fp + fn + tp)) -eq "$n" ] || die "$json: confusion counts sum to $((tn + fp + fn + tp)), n is $n"

names=$(sed -nE 's/.*"class_names"[[:space:]]*:[[:space:]]*\[[[:space:]]*"([^"]*)"[[:space:]]*,[[:space:]]*"([^"]*)"[[:space:]]*\].*/\1,\2/p' <<< "$j")
names=${names:-${XD_CLASS_NAMES:-NORMAL,PNEUMONIA}}
names=$(tr -cd 'A-Za-z0-9 ,_.+-' <<< "$names") # they go into gnuplot strings
neg=${names%%,*}
pos=${names#*,}
[ -n "$neg" ] && [ -n "$pos" ] && [ "$neg" != "$names" ] || die "class names \"$names\" are not NEG,POS"

tmp=$(mktemp -d)
stage=
trap 'rm -rf "$tmp" ${stage:+"$stage"}' EXIT

# ---- roc.tsv ----
if ! awk -F'\t' -v file="$roc" -v data="$tmp/roc" '
  function bad(msg) { print file ": " msg > "/dev/stderr"; failed = 1; exit 1 }
  function rate(s) { return s ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ && s >= 0 && s <= 1 }
  { sub(/\r$/, "") }
  NR == 1 { if ($0 != "threshold\tfpr\ttpr") bad("line 1: header is not threshold<TAB>fpr<TAB>tpr"); next }
  {
    if (NF != 3) bad("line " NR ": " NF " tab-separated fields, expected 3")
    if (!rate($2) || !rate($3)) bad("line " NR ": fpr/tpr \"" $2 "\", \"" $3 "\" not in [0, 1]")
    if (rows && ($2 < pf || $3 < pt)) bad("line " NR ": fpr/tpr decrease (rows must be by descending threshold)")
    pf = $2; pt = $3; rows++
    print $2, $3 > data
  }
  END {
    if (failed) exit 1
    if (rows < 2) bad("fewer than 2 curve points")
  }' "$roc" 2> "$tmp/err"; then
  die "$(head -n1 "$tmp/err")"
fi

# ---- reliability.csv ----
if [ -n "$rel" ] && ! awk -F, -v file="$rel" -v data="$tmp/rel" '
  function bad(msg) { print file ": " msg > "/dev/stderr"; failed = 1; exit 1 }
  function unit(s) { return s ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ && s >= 0 && s <= 1 }
  { sub(/\r$/, "") }
  NR == 1 { if ($0 != "bin_lo,bin_hi,count,mean_prob,frac_pos") bad("line 1: header is not bin_lo,bin_hi,count,mean_prob,frac_pos"); next }
  {
    if (NF != 5) bad("line " NR ": " NF " comma-separated fields, expected 5")
    if (!unit($1) || !unit($2) || $1 + 0 >= $2 + 0) bad("line " NR ": bin \"" $1 "\" to \"" $2 "\" is not an interval in [0, 1]")
    if ($3 !~ /^[0-9]+$/) bad("line " NR ": count \"" $3 "\" is not a non-negative integer")
    if ($3 > 0 && (!unit($4) || !unit($5))) bad("line " NR ": mean_prob/frac_pos \"" $4 "\", \"" $5 "\" not in [0, 1]")
    if ($3 == 0 && ($4 != "" || $5 != "")) bad("line " NR ": an empty bin has means")
    rows++; cases += $3
    printf "%s %s %s %s %s\n", ($1 + $2) / 2, $2 - $1, $3, ($3 > 0 ? $4 : "NaN"), ($3 > 0 ? $5 : "NaN") > data
  }
  END {
    if (failed) exit 1
    if (rows < 1) bad("no bins")
    if (cases < 1) bad("every bin is empty")
  }' "$rel" 2> "$tmp/err"; then
  die "$(head -n1 "$tmp/err")"
fi

# Operating point from the counts (the JSON rates may be null where undefined).
[ $((tn + fp)) -gt 0 ] && [ $((fn + tp)) -gt 0 ] || die "$json: both classes are needed for a ROC curve"
read -r op_fpr op_tpr op_spec <<< "$(awk -v tn="$tn" -v fp="$fp" -v fn="$fn" -v tp="$tp" \
  'BEGIN { printf "%.6f %.6f %.6f\n", fp / (tn + fp), tp / (tp + fn), tn / (tn + fp) }')"
auc_txt=$([ "$auc" = null ] && echo "undefined" || printf '%.4f' "$auc")
thr_txt=$([ "$threshold" = null ] && echo "?" || printf '%.4g' "$threshold")

font="DejaVu Sans"
if gnuplot -e "set terminal pngcairo" 2> /dev/null; then
  term() { echo "pngcairo size $1 noenhanced font '$font,13' linewidth 1.5"; }
else
  term() { echo "png size $1 noenhanced"; }
fi

run_gnuplot() { # run_gnuplot SCRIPT INPUT_NAMED_IN_ERRORS
  gnuplot "$1" 2> "$tmp/gp.err" || die "gnuplot failed on $2: $(grep -v '^ *$' "$tmp/gp.err" | tail -n1)"
}

# ---- roc.png ----
# The operating-point label sits beside the point, on whichever side has room.
lx=$(awk -v x="$op_fpr" 'BEGIN { print (x < 0.55) ? x + 0.06 : x - 0.06 }')
ly=$(awk -v y="$op_tpr" 'BEGIN { print (y > 0.25) ? y - 0.14 : y + 0.1 }')
lalign=$(awk -v x="$op_fpr" 'BEGIN { print (x < 0.55) ? "left" : "right" }')
cat > "$tmp/roc.gp" << EOF
set terminal $(term 800,760)
set output '$tmp/roc.png'
set size ratio -1
set xrange [0:1]
set yrange [0:1]
set xtics 0.1
set ytics 0.1
set format x '%.1f'
set format y '%.1f'
set grid lc rgb '#dddddd'
set title "ROC curve: AUC = $auc_txt   (n = $n, $pos positive)" font ',15'
set xlabel 'false positive rate (1 - specificity)'
set ylabel 'true positive rate (sensitivity)'
set key bottom right box opaque Left reverse samplen 2
set label 1 sprintf("threshold %s\nsensitivity %.1f%%\nspecificity %.1f%%", "$thr_txt", 100*$op_tpr, 100*$op_spec) \
  at $lx,$ly $lalign front
plot '$tmp/roc' using 1:2 with filledcurves y1=0 fs transparent solid 0.12 lc rgb '#1f77b4' notitle, \
     x with lines dt 2 lc rgb '#888888' title 'chance', \
     '$tmp/roc' using 1:2 with lines lw 2.5 lc rgb '#1f77b4' title 'model', \
     '+' using ($op_fpr):($op_tpr) every ::0::0 with points pt 7 ps 2 lc rgb '#d62728' \
       title 'operating point (threshold $thr_txt)'
EOF
run_gnuplot "$tmp/roc.gp" "$roc"

# ---- confusion.png ----
# Colour is the fraction of the actual class (row), so the diagonal reads as specificity and
# sensitivity whatever the class balance; the cells show the counts.
awk -v tn="$tn" -v fp="$fp" -v fn="$fn" -v tp="$tp" 'BEGIN {
  printf "%.6f %.6f\n%.6f %.6f\n", tn / (tn + fp), fp / (tn + fp), fn / (fn + tp), tp / (fn + tp) }' > "$tmp/cm"
cell() { # cell COL ROW COUNT ROWTOTAL WHAT ROWNAME
  awk -v x="$1" -v y="$2" -v c="$3" -v t="$4" -v what="$5" -v name="$6" 'BEGIN {
    f = c / t; col = f > 0.55 ? "#ffffff" : "#1a1a1a"
    printf "set label at %d,%g \"%d\" center front font \",30\" tc rgb \"%s\"\n", x, y - 0.08, c, col
    printf "set label at %d,%g \"%s\" center front font \",12\" tc rgb \"%s\"\n", x, y + 0.12, what, col
    printf "set label at %d,%g \"%.1f%% of actual %s\" center front font \",11\" tc rgb \"%s\"\n", x, y + 0.24, 100 * f, name, col
  }'
}
cat > "$tmp/cm.gp" << EOF
set terminal $(term 800,700)
set output '$tmp/confusion.png'
set title "Confusion matrix at threshold $thr_txt   (n = $n)\nsensitivity $(awk -v v="$op_tpr" 'BEGIN{printf "%.1f", 100*v}')%   specificity $(awk -v v="$op_spec" 'BEGIN{printf "%.1f", 100*v}')%" font ',15'
set size ratio -1
set xrange [-0.5:1.5]
set yrange [1.5:-0.5]
set xtics ("$neg" 0, "$pos" 1) scale 0 nomirror font ',13'
set ytics ("$neg" 0, "$pos" 1) scale 0 nomirror rotate by 90 center font ',13'
set xlabel 'predicted' font ',14'
set ylabel 'actual' font ',14'
unset x2tics
unset y2tics
set border 15
set cbrange [0:1]
set cbtics ('0%%' 0, '20%%' 0.2, '40%%' 0.4, '60%%' 0.6, '80%%' 0.8, '100%%' 1)
set cblabel 'share of the actual class'
set palette defined (0 '#f7fbff', 0.5 '#6baed6', 1 '#08306b')
unset key
$(cell 0 0 "$tn" $((tn + fp)) "true negative" "$neg")
$(cell 1 0 "$fp" $((tn + fp)) "false positive (false alarm)" "$neg")
$(cell 0 1 "$fn" $((fn + tp)) "false negative (missed)" "$pos")
$(cell 1 1 "$tp" $((fn + tp)) "true positive" "$pos")
plot '$tmp/cm' matrix with image
EOF
run_gnuplot "$tmp/cm.gp" "$json"

# ---- reliability.png ----
# Top: fraction positive against mean predicted probability, one point per non-empty bin, the gap to
# the diagonal (perfect calibration) shaded. Bottom: cases per bin, so that a bin of 3 cases is not
# read like a bin of 300.
if [ -n "$rel" ]; then
  ece=$(getnum ece)
  brier=$(getnum brier)
  cal_txt=""
  [ -n "$ece" ] && [ "$ece" != null ] && cal_txt="ECE = $(printf '%.4f' "$ece")"
  [ -n "$brier" ] && [ "$brier" != null ] && cal_txt="${cal_txt:+$cal_txt, }Brier = $(printf '%.4f' "$brier")"
  maxc=$(awk '$3 > m { m = $3 } END { print m }' "$tmp/rel")
  cat > "$tmp/rel.gp" << EOF
set terminal $(term 800,900)
set output '$tmp/reliability.png'
set multiplot
set lmargin at screen 0.12
set rmargin at screen 0.95
set tmargin at screen 0.91
set bmargin at screen 0.36
set title "Reliability diagram${cal_txt:+: $cal_txt}   (n = $n)" font ',15'
set xrange [0:1]
set yrange [0:1]
set xtics 0.1 format ''
set ytics 0.1 format '%.1f'
set grid lc rgb '#dddddd'
set ylabel 'fraction actually $pos'
set key bottom right box opaque Left reverse samplen 2
plot '$tmp/rel' using 4:(\$4 < \$5 ? \$4 : \$5):(0):(abs(\$5 - \$4)) with vectors nohead lw 6 lc rgb '#f4a6a6' \\
       title 'gap to the diagonal', \\
     x with lines dt 2 lc rgb '#888888' title 'perfect calibration', \\
     '$tmp/rel' using 4:5 with linespoints lw 2.5 pt 7 ps 1.6 lc rgb '#1f77b4' \\
       title 'model (one point per bin)'
unset title
set tmargin at screen 0.30
set bmargin at screen 0.07
set yrange [0:$maxc * 1.18 + 1]
set ytics auto format '%g'
set xtics 0.1 format '%.1f'
set xlabel 'predicted probability of $pos (bins of the reliability table)'
set ylabel 'cases'
set style fill solid 0.6 noborder
unset key
plot '$tmp/rel' using 1:3:2 with boxes lc rgb '#1f77b4', \\
     '$tmp/rel' using 1:3:(sprintf('%d', \$3)) with labels offset 0,0.8 font ',10'
unset multiplot
EOF
  run_gnuplot "$tmp/rel.gp" "$rel"
fi

# ---- into OUT_DIR, all or nothing: each PNG must be whole (gnuplot does not always report a failed
# write), is copied into a staging folder inside OUT_DIR (a full disk fails here, naming the file and the
# reason), flushed, and only then renamed into place; a failure leaves OUT_DIR's old files as they were ----
pngs=(roc.png confusion.png)
[ -n "$rel" ] && pngs+=(reliability.png)
for p in "${pngs[@]}"; do
  [ "$(tail -c 8 "$tmp/$p" 2> /dev/null | od -An -tx1 | tr -d ' \n')" = "49454e44ae426082" ] ||
    die "$out/$p: gnuplot wrote an incomplete PNG (disk full at $tmp?)"
done
stage=$(mktemp -d "$out/.plot_eval.XXXXXX" 2> /dev/null) || die "$out: cannot create a staging folder there (read-only or full?)"
for p in "${pngs[@]}"; do
  err=$(cp "$tmp/$p" "$stage/$p" 2>&1) || die "$out/$p: cannot write: ${err##*: }"
done
err=$(sync "${pngs[@]/#/$stage/}" 2>&1) || die "$out: cannot flush the PNGs: ${err##*: }"
for p in "${pngs[@]}"; do
  mv -f "$stage/$p" "$out/$p" || die "$out/$p: cannot rename into place"
done
for p in "${pngs[@]}"; do echo "$out/$p"; done
