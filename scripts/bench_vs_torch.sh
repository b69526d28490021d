#!/usr/bin/env bash
# Side-by-side training throughput of xray-dp and PyTorch (random data), interleaved on the
# same machine so that background load hits both alike; prints medians, the ratio ours/PyTorch in
# images/s, and GFLOP/s as a share of the machine's measured FMA peak (scripts/peak_flops.c, built here
# with -march=native, best of 5, same thread count).
#
# usage: scripts/bench_vs_torch.sh [XRAYDP_BINARY]
# env:   THREADS="1 2" ROUNDS=5 BATCH=32 SIZE=128 STEPS=30 MODEL=keras-seed
#        MODEL=keras-seed compares with ../shared/bench/torch_reference.py; any other preset (default,
#        resnet-s, ...) with scripts/torch_twin_bench.py, the same network rebuilt in PyTorch from an
#        xray-dp checkpoint by scripts/to_torch.py. Peak RSS of both is reported (median).
#        TORCH_REF=path/to/torch_reference.py (default: ../shared/bench/ next to the repository)
#        PYTHON=/usr/bin/python3, XD_ISA=sse2|avx2|avx512 (passed through to xray-dp)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/xray-dp}
ref=${TORCH_REF:-$root/../shared/bench/torch_reference.py}
py=${PYTHON:-/usr/bin/python3}
rounds=${ROUNDS:-5} batch=${BATCH:-32} size=${SIZE:-128} steps=${STEPS:-30} model=${MODEL:-keras-seed}
[ -x "$bin" ] || { echo "bench_vs_torch: no xray-dp binary at $bin (pass it as the first argument)" >&2; exit 2; }
[ -f "$ref" ] || { echo "bench_vs_torch: no torch_reference.py at $ref (set TORCH_REF)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -march=native -ffp-contract=fast -fopenmp "$root/scripts/peak_flops.c" -o "$tmp/peak"

field() { sed -n "s/.*\"$1\": *\([0-9.eE+-]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for t in ${THREADS:-1 2}; do
  : >"$tmp/ours" && : >"$tmp/torch" && : >"$tmp/ours_gf" && : >"$tmp/torch_gf" && : >"$tmp/ours_rss" && : >"$tmp/torch_rss"
  for r in $(seq "$rounds"); do
    o=$("$bin" bench --json --model "$model" --batch "$batch" --size "$size" --steps "$steps" --threads "$t")
    if [ "$model" = keras-seed ]; then
      p=$("$py" "$ref" bench --json --batch "$batch" --size "$size" --steps "$steps" --threads "$t")
    else
      fpi=$(echo "$o" | awk '{ if (match($0, /"images_per_s": *[0-9.eE+-]+/)) { i = substr($0, RSTART, RLENGTH); sub(/.*: */, "", i) }
                               if (match($0, /"gflops": *[0-9.eE+-]+/)) { g = substr($0, RSTART, RLENGTH); sub(/.*: */, "", g) }
                               printf "%.6g", g * 1e9 / i }')
      p=$("$py" "$root/scripts/torch_twin_bench.py" --json --xray-dp "$bin" --model "$model" --batch "$batch" \
          --size "$size" --steps "$steps" --threads "$t" --flops-per-image "$fpi")
    fi
    echo "$o" | field images_per_s >>"$tmp/ours"; echo "$o" | field gflops >>"$tmp/ours_gf"
    echo "$p" | field images_per_s >>"$tmp/torch"; echo "$p" | field gflops >>"$tmp/torch_gf"
    echo "$o" | field peak_rss_mb >>"$tmp/ours_rss"; echo "$p" | field peak_rss_mb >>"$tmp/torch_rss"
    echo "  threads=$t round $r: xray-dp $(tail -1 "$tmp/ours") img/s, pytorch $(tail -1 "$tmp/torch") img/s" >&2
  done
  peak=$("$tmp/peak" "$t" | field peak_gflops)
  mo=$(median <"$tmp/ours") mp=$(median <"$tmp/torch") go=$(median <"$tmp/ours_gf") gp=$(median <"$tmp/torch_gf")
  ro=$(median <"$tmp/ours_rss") rp=$(median <"$tmp/torch_rss")
  awk -v t="$t" -v mo="$mo" -v mp="$mp" -v go="$go" -v gp="$gp" -v pk="$peak" -v n="$rounds" -v m="$model" \
      -v ro="$ro" -v rp="$rp" 'BEGIN {
    printf "%s threads=%d rounds=%d  xray-dp %.1f img/s (%.1f GFLOP/s, %.1f%% of peak, %.0f MB)  pytorch %.1f img/s (%.1f GFLOP/s, %.1f%% of peak, %.0f MB)  ratio %.2fx  peak %.1f GFLOP/s\n",
      m, t, n, mo, go, 100 * go / pk, ro, mp, gp, 100 * gp / pk, rp, mo / mp, pk }'
done
