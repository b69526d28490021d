#!/usr/bin/env bash
# Scaling on one multicore node, two parts:
#  1. threads: `xray-dp bench` and the PyTorch reference (keras-seed, batch 32, 128x128), interleaved,
#     median of ROUNDS, at 1, 2, 4, ... up to CORES threads; prints images/s and the ratio.
#  2. ranks x threads = CORES: training throughput (images/s of epoch 2 from metrics.csv, median of ROUNDS
#     runs) on a synthetic set, global batch BATCH, each rank bound to its own cores.
# usage: scripts/bench_scaling.sh [XRAYDP_BINARY]
# env:   CORES (default nproc), ROUNDS=3, BATCH=64, N=4000 (synthetic images), MPIRUN=mpirun, BIND=core|none,
#        PYTHON=python3, TORCH_REF=../shared/bench/torch_reference.py, SKIP_TORCH=1 to skip part 1's PyTorch side,
#        PARTS="1 2" (which parts to run)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
X=${1:-$root/build/xray-dp}
cores=${CORES:-$(nproc)} rounds=${ROUNDS:-3} batch=${BATCH:-64} n=${N:-4000}
mpirun=${MPIRUN:-mpirun} bind=${BIND:-core} py=${PYTHON:-python3}
ref=${TORCH_REF:-$root/../shared/bench/torch_reference.py}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
field() { sed -n "s/.*\"$1\": *\([0-9.eE+-]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "bench_scaling: $cores cores ($(uname -m)), $("$X" bench --steps 1 --warmup 0 --batch 1 --size 32 --json | sed -n 's/.*"isa": "\([a-z0-9]*\)".*/isa \1/p')"

parts=${PARTS:-1 2}
if [[ " $parts " == *" 1 "* ]]; then
echo "== part 1: threads, keras-seed batch 32 at 128x128, median of $rounds interleaved rounds"
t=1
while [ "$t" -le "$cores" ]; do
  : >"$tmp/o"; : >"$tmp/p"
  for _ in $(seq "$rounds"); do
    "$X" bench --json --threads "$t" --steps 20 | field images_per_s >>"$tmp/o"
    [ -n "${SKIP_TORCH:-}" ] || "$py" "$ref" bench --json --threads "$t" --steps 20 | field images_per_s >>"$tmp/p"
  done
  o=$(median <"$tmp/o")
  if [ -n "${SKIP_TORCH:-}" ]; then
    printf "threads %2d: xray-dp %8.1f img/s\n" "$t" "$o"
  else
    p=$(median <"$tmp/p")
    awk -v t="$t" -v o="$o" -v p="$p" 'BEGIN { printf "threads %2d: xray-dp %8.1f img/s  pytorch %8.1f img/s  ratio %.2fx\n", t, o, p, o / p }'
  fi
  t=$((t * 2))
done
fi
[[ " $parts " == *" 2 "* ]] || exit 0

echo "== part 2: training, ranks x threads = $cores, global batch $batch, synthetic $n images at 128x128"
"$X" synth "$tmp/d.h5" --n "$n" >/dev/null
np=1
while [ "$np" -le "$cores" ]; do
  th=$((cores / np))
  : >"$tmp/r"; : >"$tmp/c"
  for r in $(seq "$rounds"); do
    rm -rf "$tmp/run"
    bindargs=(--bind-to none)
    [ "$bind" = core ] && bindargs=(--map-by "slot:PE=$th" --bind-to core)
    "$mpirun" -np "$np" "${bindargs[@]}" -x OMP_NUM_THREADS="$th" "$X" train --data "$tmp/d.h5" --batch "$batch" \
      --epochs 2 --patience 0 --out "$tmp/run" >"$tmp/out"
    sed -n '3p' "$tmp/run/metrics.csv" | cut -d, -f12 >>"$tmp/r"
    sed -n 's/^epoch 2.*all-reduce \([0-9]*\)%.*/\1/p' "$tmp/out" >>"$tmp/c"
  done
  comm=$( [ -s "$tmp/c" ] && median <"$tmp/c" || echo 0); : >"$tmp/c"
  printf "ranks %2d x threads %2d: %8.1f img/s (epoch 2, median of %d), all-reduce %s%% of train time\n" "$np" "$th" \
    "$(median <"$tmp/r")" "$rounds" "$comm"
  np=$((np * 2))
done
