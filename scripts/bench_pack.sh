#!/usr/bin/env bash
# Packing throughput (files/s) of the real data for --threads 1 and 2: median of RUNS runs, interleaved.
# Usage: scripts/bench_pack.sh [XRAYDP_BINARY] [RUNS]   (default build/xray-dp, 3 runs)
# Data: ../shared/data/chest_xray_train (5,216 JPEGs 224x224) and ../shared/data/chest_xray_fullres
# (120 originals), relative to the repository root. Outputs go to a temporary directory, removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/xray-dp}
runs=${2:-3}
data=$root/../shared/data
[ -x "$bin" ] || { echo "bench_pack.sh: no binary at $bin (build first or pass its path)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "xray-dp pack --size 128 --val-fraction 0.1, median of $runs runs ($(nproc) cores, $(uname -m))"
for set in chest_xray_train chest_xray_fullres; do
  src=$data/$set
  [ -d "$src" ] || { echo "bench_pack.sh: missing $src" >&2; exit 1; }
  : >"$tmp/t1"; : >"$tmp/t2"
  for r in $(seq "$runs"); do
    for t in 1 2; do
      "$bin" pack "$src" "$tmp/out.h5" --size 128 --val-fraction 0.1 --threads $t 2>"$tmp/log"
      # summary: "...; N files in S s (R files/s)"
      sed -n 's/.* files in \([0-9.]*\) s (\([0-9.]*\) files\/s).*/\2/p' "$tmp/log" >>"$tmp/t$t"
    done
  done
  n=$(sed -n 's/.*; \([0-9]*\) files in .*/\1/p' "$tmp/log")
  printf '%-20s %5s files  threads 1: %6.0f files/s  threads 2: %6.0f files/s  (runs: %s | %s)\n' "$set" "$n" \
    "$(median <"$tmp/t1")" "$(median <"$tmp/t2")" "$(tr '\n' ' ' <"$tmp/t1")" "$(tr '\n' ' ' <"$tmp/t2")"
done
