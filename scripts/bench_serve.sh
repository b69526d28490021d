#!/usr/bin/env bash
# Throughput and latency of `xray-dp serve` on 127.0.0.1 only, with a bounded number of requests:
# requests/s and p50/p99 latency at 1, 4 and 16 concurrent clients (persistent HTTP/1.1 connections,
# Python's http.client, one thread per client), with and without ?gradcam=1, for the keras-seed and the
# default model; the median of RUNS runs per cell; the server's peak RSS (VmHWM) per model.
# Speed does not depend on the weights, so each model gets a checkpoint from a 1-epoch training on a
# small synthetic set (seconds). The image is a real X-ray from ../shared/data when the checkout has one
# (a full-resolution JPEG: decoding it is part of the cost), else a fixture JPEG.
# Usage: scripts/bench_serve.sh [XRAYDP_BINARY]   env: N (requests per run, default 120), RUNS (3),
#        THREADS (server workers, default 2), MODELS ("keras-seed default")
# Prints a Markdown table (the one in docs/deploy.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${1:-$ROOT/build/xray-dp}")
N=${N:-120}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
MODELS=${MODELS:-keras-seed default}
[ "$N" -le 2000 ] || { echo "bench_serve.sh: N is capped at 2000 requests per run" >&2; exit 2; }
W=$(mktemp -d /tmp/bench_serve.XXXXXX)
SPID=
trap '[ -n "$SPID" ] && kill -9 $SPID 2> /dev/null; rm -rf "$W"' EXIT
. "$ROOT/tests/lib.sh"

IMG=$(ls "$ROOT"/../shared/data/chest_xray_fullres/PNEUMONIA/*.jpeg 2> /dev/null | head -1 || true)
[ -n "$IMG" ] || IMG=$ROOT/tests/fuzz/corpus/image/ycc420.jpg
mkdir -p "$W/src/NORMAL" "$W/src/PNEUMONIA"
for i in $(seq 1 12); do
  pgm "$W/src/NORMAL/n$i.pgm" $((40 + i)) $((38 + 2 * i)) "$i" 0
  pgm "$W/src/PNEUMONIA/p$i.pgm" $((50 - i)) $((36 + i)) $((100 + i)) $((20 + 10 * i))
done
"$BIN" pack "$W/src" "$W/d.h5" --val-fraction 0.25 --seed 1 > /dev/null 2>&1

cat > "$W/load.py" << 'EOF'
import http.client, sys, threading, time
port, path, body_file, n, c = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
body = open(body_file, "rb").read()
lat, bad, lock = [], [0], threading.Lock()
counter = iter(range(n))
def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            break
        t = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        r.read()
        dt = time.perf_counter() - t
        with lock:
            lat.append(dt)
            if r.status != 200:
                bad[0] += 1
    conn.close()
t0 = time.perf_counter()
ts = [threading.Thread(target=client) for _ in range(c)]
for t in ts: t.start()
for t in ts: t.join()
wall = time.perf_counter() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("%.2f %.1f %.1f %d" % (n / wall, 1000 * q(0.50), 1000 * q(0.99), bad[0]))
EOF

med() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "| model | Grad-CAM | clients | requests/s | p50 ms | p99 ms | errors |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
rss_lines=()
for model in $MODELS; do
  "$BIN" train --data "$W/d.h5" --model "$model" --epochs 1 --batch 8 --out "$W/run_$model" --quiet --threads 1 \
    > /dev/null 2>&1 || { echo "bench_serve.sh: training $model failed" >&2; exit 1; }
  "$BIN" serve --ckpt "$W/run_$model/best.h5" --port 0 --threads "$THREADS" --queue 64 --no-val > "$W/serve.out" 2>&1 &
  SPID=$!
  port=
  for _ in $(seq 1 100); do
    port=$(sed -n 's|^xray-dp serve: listening on http://[^ ]*:\([0-9]*\)/ .*|\1|p' "$W/serve.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "bench_serve.sh: serve did not start: $(cat "$W/serve.out")" >&2; exit 1; }
  /usr/bin/python3 "$W/load.py" "$port" /v1/predict "$IMG" 20 4 > /dev/null # warm-up
  for gc in no yes; do
    path=/v1/predict
    [ $gc = yes ] && path="/v1/predict?gradcam=1"
    for c in 1 4 16; do
      : > "$W/runs"
      for r in $(seq 1 "$RUNS"); do /usr/bin/python3 "$W/load.py" "$port" "$path" "$IMG" "$N" "$c" >> "$W/runs"; done
      rps=$(cut -d' ' -f1 "$W/runs" | med)
      p50=$(cut -d' ' -f2 "$W/runs" | med)
      p99=$(cut -d' ' -f3 "$W/runs" | med)
      errs=$(awk '{ s += $4 } END { print s }' "$W/runs")
      echo "| $model | $gc | $c | $rps | $p50 | $p99 | $errs |"
    done
  done
  rss_lines+=("$model: peak RSS $(awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' /proc/$SPID/status) ($THREADS workers)")
  kill -TERM "$SPID"
  wait "$SPID" || true
  SPID=
done
echo
printf '%s\n' "${rss_lines[@]}"
echo "image: $(basename "$IMG") ($(stat -c %s "$IMG") bytes); $N requests per run, median of $RUNS runs; server --threads $THREADS"
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
