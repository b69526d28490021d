#!/usr/bin/env bash
# Training throughput of one real epoch with the shard in memory vs streamed from the file
# (--mem-cap 0: a prefetch thread reads the next batch while the current one computes), interleaved,
# medians of ROUNDS, next to `xray-dp bench` on random data (what data handling costs on top).
# usage: scripts/bench_stream.sh DATA.h5 [XRAYDP_BINARY]     env: ROUNDS=3 THREADS=2 MODEL=keras-seed
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:?usage: scripts/bench_stream.sh DATA.h5 [XRAYDP_BINARY]}
X=${2:-$root/build/xray-dp}
rounds=${ROUNDS:-3} threads=${THREADS:-2} model=${MODEL:-keras-seed}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for r in $(seq "$rounds"); do
  for mode in memory stream; do
    cap=8192; [ $mode = stream ] && cap=0
    rm -rf "$tmp/run"
    "$X" train --data "$data" --model "$model" --epochs 1 --patience 0 --threads "$threads" --mem-cap $cap \
      --quiet --out "$tmp/run"
    sed -n '2p' "$tmp/run/metrics.csv" | cut -d, -f12 >> "$tmp/$mode"
  done
  "$X" bench --model "$model" --threads "$threads" --steps 30 --json | sed -n 's/.*"images_per_s": *\([0-9.]*\).*/\1/p' >> "$tmp/bench"
done
m=$(median < "$tmp/memory") s=$(median < "$tmp/stream") b=$(median < "$tmp/bench")
awk -v m="$m" -v s="$s" -v b="$b" -v t="$threads" -v n="$rounds" 'BEGIN {
  printf "threads %d, %d rounds: epoch in memory %.1f img/s, streamed %.1f img/s (%.1f%%), bench %.1f img/s (epoch in memory = %.1f%% of bench)\n",
    t, n, m, s, 100 * s / m, b, 100 * m / b }'
