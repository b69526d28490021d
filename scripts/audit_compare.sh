#!/usr/bin/env bash
# Side-by-side shortcut audit of two checkpoints on the same split, as a markdown table (docs/audit.md).
#
#   scripts/audit_compare.sh CKPT_A CKPT_B DATA [SPLIT] [-- AUDIT_OPTION...]
#
# Runs `xray-dp audit --json` on each checkpoint (each at its own stored threshold unless an option
# says otherwise) and prints: the clean numbers, one row per perturbation (ROC-AUC change, flip rate,
# mean |delta probability| of both models), and the Grad-CAM mass shares next to a uniform map's.
# SPLIT defaults to val. Options after `--` go to both audits (e.g. -- --threads 2 --cam-images 100).
# env: XRAYDP (default build/xray-dp), LABEL_A / LABEL_B (column titles; default the checkpoint paths).
# Needs jq. Exit 1 (nothing on stdout) if either audit fails; 2 on bad usage.
set -euo pipefail
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
A=$1 B=$2 DATA=$3
shift 3
SPLIT=val
if [ $# -gt 0 ] && [ "$1" != -- ]; then SPLIT=$1; shift; fi
if [ $# -gt 0 ]; then
  [ "$1" = -- ] || usage
  shift
fi
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${XRAYDP:-$root/build/xray-dp}
[ -x "$BIN" ] || { echo "audit_compare.sh: $BIN: no xray-dp binary (build it, or set XRAYDP)" >&2; exit 1; }
command -v jq > /dev/null || { echo "audit_compare.sh: jq is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
LA=${LABEL_A:-$A}
LB=${LABEL_B:-$B}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for k in a b; do
  ck=$A
  [ $k = b ] && ck=$B
  if ! "$BIN" audit --ckpt "$ck" --data "$DATA" --split "$SPLIT" --json "$@" > "$tmp/$k.json" 2> "$tmp/err"; then
    cat "$tmp/err" >&2
    exit 1
  fi
done

jq -r -n --slurpfile a "$tmp/a.json" --slurpfile b "$tmp/b.json" --arg la "$LA" --arg lb "$LB" '
  $a[0] as $A | $b[0] as $B |
  def fixed($d): if . == null then "n/a" else
      (. * pow(10; $d) | round) as $i | ($i | fabs | tostring) as $s |
      ("0" * ([$d + 1 - ($s | length), 0] | max) + $s) as $p |
      (if $i < 0 then "-" else "" end) + $p[:($p | length) - $d] + "." + $p[($p | length) - $d:] end;
  def f4: fixed(4);
  def s4: if . == null then "n/a" elif (. * 10000 | round) > 0 then "+" + f4 else f4 end;
  def pct: if . == null then "n/a" else (. * 100 | fixed(1)) + "%" end;
  def flips: "\(.flip_rate | f4) (\(.flips_to_pos)+/\(.flips_to_neg)-)";
  if $A.n != $B.n then error("the two audits saw different splits") else . end |
  "Shortcut audit on `\($A.data)` [\($A.split)], \($A.n) images (\($A.positives) positive); each model at its threshold.",
  "A = `\($la)`, B = `\($lb)`.",
  "",
  "| clean | A | B |",
  "|---|---:|---:|",
  "| threshold | \($A.threshold | f4) | \($B.threshold | f4) |",
  "| ROC-AUC | \($A.clean.roc_auc | f4) | \($B.clean.roc_auc | f4) |",
  "| sensitivity | \($A.clean.sensitivity | f4) | \($B.clean.sensitivity | f4) |",
  "| specificity | \($A.clean.specificity | f4) | \($B.clean.specificity | f4) |",
  "",
  "| perturbation | dAUC A | dAUC B | flip rate A (to+/to-) | flip rate B (to+/to-) | mean abs dp A | mean abs dp B |",
  "|---|---:|---:|---:|---:|---:|---:|",
  ( [$A.perturbations, $B.perturbations] | transpose[] | . as [$p, $q] |
    "| \($p.name) | \($p.delta_auc | s4) | \($q.delta_auc | s4) | \($p | flips) | \($q | flips) | \($p.mean_abs_dprob | f4) | \($q.mean_abs_dprob | f4) |" ),
  "| **mean over perturbations** | \([$A.perturbations[].delta_auc] | add / length | s4) | \([$B.perturbations[].delta_auc] | add / length | s4) | \([$A.perturbations[].flip_rate] | add / length | f4) | \([$B.perturbations[].flip_rate] | add / length | f4) | \([$A.perturbations[].mean_abs_dprob] | add / length | f4) | \([$B.perturbations[].mean_abs_dprob] | add / length | f4) |",
  "",
  ( if $A.gradcam == null or $B.gradcam == null then
      "Grad-CAM: not available for \([if $A.gradcam == null then "A" else empty end, if $B.gradcam == null then "B" else empty end] | join(" and ")) (no conv layer, or --cam-images 0)."
    else
      ($A.gradcam as $g | $B.gradcam as $h |
      "| Grad-CAM mass share (\($g.images) / \($h.images) images) | A | B | uniform map |",
      "|---|---:|---:|---:|",
      "| central thorax box (\($g.box_width * 100 | round)% x \($g.box_height * 100 | round)%) | \($g.center_share | pct) | \($h.center_share | pct) | \($g.center_area | pct) |",
      "| outer frame (\($g.frame * 100 | round)% each side) | \($g.border_share | pct) | \($h.border_share | pct) | \($g.border_area | pct) |")
    end )
'
