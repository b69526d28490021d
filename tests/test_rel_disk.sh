#!/usr/bin/env bash
# Issue 9, item 2: full disks, file size limits and read-only folders for every command that writes
# (train's checkpoints and metrics.csv are tests/test_rel_train's): synth, pack, eval --roc / --scores /
# --reliability / --json (stdout), predict --gradcam / stdout / --json, audit stdout, and
# scripts/plot_eval.sh's PNGs. Each output goes to
# a small tmpfs (mount -t tmpfs -o size=...) that fills at several different points (during creation,
# the first split, the last close; the first, second or third PNG; the first or a later page of a text
# file; an already full disk). Every case asserts: exit 1 (not a signal), exactly one stderr line holding
# "No space left on device" (or "File too large" under ulimit -f, "Read-only file system") and the
# output's path, nothing on stdout, no output file left under the name (or the old file unchanged when
# there was one), no *.tmp.* left. A roomy tmpfs checks that the same commands succeed there.
# Needs root (mount); CI runs the suite as root. Without root this test FAILS, on purpose: it must not
# pass silently.
# Usage: bash tests/test_rel_disk.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$2
W=$3
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: test_rel_disk needs root to mount small tmpfs file systems (CI runs as root)" >&2
  exit 1
fi
mounts=()
cleanup() { for m in "${mounts[@]}"; do umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null; done; }
trap cleanup EXIT
[ -d "$W" ] && for m in "$W"/m.*; do mountpoint -q "$m" 2> /dev/null && umount "$m"; done
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
cd "$W" || exit 1

# fresh SIZE [ro]: a new tmpfs of SIZE bytes (k/m suffix) at $M
fresh() {
  M=$(mktemp -d "$W/m.XXXXXX")
  mount -t tmpfs -o "size=$1${2:+,$2}" tmpfs "$M" || { echo "FAIL: mount -t tmpfs size=$1 failed" >&2; exit 1; }
  mounts+=("$M")
}
# fill the tmpfs at $M completely (0 bytes left)
fill() { dd if=/dev/zero of="$M/fill" bs=4096 > /dev/null 2>&1; sync; }

# disk WHAT REASON PATH [OLD] -- command...: the checks of the header. PATH is the output named in the
# message; OLD, when given, the content PATH had before (it must still have it), else PATH must not exist.
disk() {
  local what=$1 reason=$2 path=$3 old=
  shift 3
  if [ "$1" != "--" ]; then old=$1; shift; fi
  shift
  run "$@"
  local r
  r=$(rc)
  [ "$r" -eq 1 ] && ok || bad "$what: exit $r (expected 1$([ "$r" -gt 128 ] && echo ", signal $((r - 128))"))"
  [ "$(wc -l < "$W/err.txt")" -eq 1 ] && ok || bad "$what: expected one stderr line, got: $(head -c 800 "$W/err.txt")"
  grep -qF -- "$reason" "$W/err.txt" && grep -qF -- "$path" "$W/err.txt" && ok \
    || bad "$what: message lacks '$reason' or '$path': $(cat "$W/err.txt")"
  [ ! -s "$W/out.txt" ] && ok || bad "$what: wrote to stdout: $(head -c 200 "$W/out.txt")"
  if [ -n "$old" ]; then
    [ "$(cat "$path" 2> /dev/null)" = "$old" ] && ok || bad "$what: the old $path changed"
  else
    [ ! -e "$path" ] && ok || bad "$what: $path left behind ($(stat -c %s "$path" 2> /dev/null) bytes)"
  fi
  [ -z "$(find "$W" -name '*.tmp.*' 2> /dev/null)" ] && ok || bad "$what: temporaries left: $(find "$W" -name '*.tmp.*')"
}
# every PNG in DIR complete (ends with the IEND chunk)
pngs_whole() {
  local f
  for f in "$1"/*.png; do
    [ -e "$f" ] || continue
    [ "$(tail -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = "49454e44ae426082" ] || { echo "$f"; return 1; }
  done
}

# ---- inputs (on the ordinary disk) ----
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in $(seq 1 20); do
  pgm "$S/NORMAL/n$i.pgm" $((40 + i)) $((38 + i)) "$i" 0
  pgm "$S/PNEUMONIA/p$i.pgm" $((50 - i)) $((36 + i)) $((100 + i)) $((20 + 5 * i))
done
cat > tiny.txt << 'EOF'
input 1x16x16
conv 4 3x3 relu pad=same
batchnorm
maxpool 2x2
flatten
dense 1 sigmoid
EOF
"$BIN" synth d.h5 --n 400 --size 16 > /dev/null 2>&1 || bad "synth d.h5"
"$BIN" train --data d.h5 --model tiny.txt --epochs 1 --batch 16 --out run --quiet --threads 1 > /dev/null 2>&1
C=$W/run/best.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint; cannot go on" >&2; exit 1; }
IMGS=("$S/NORMAL/n1.pgm" "$S/NORMAL/n2.pgm" "$S/PNEUMONIA/p3.pgm")

# ---- synth (about 290 KB): full at creation, in the first split, later, at the close ----
for size in 4k 12k 40k 160k 270k; do
  fresh $size
  disk "synth on a ${size} disk" "No space left on device" "$M/s.h5" -- "$BIN" synth "$M/s.h5" --n 200 --size 32
done
fresh 160k
echo "old dataset" > "$M/s.h5"
disk "synth over an old file on a full disk" "No space left on device" "$M/s.h5" "old dataset" -- \
  "$BIN" synth "$M/s.h5" --n 200 --size 32
fresh 2m
run "$BIN" synth "$M/s.h5" --n 200 --size 32
[ "$(rc)" -eq 0 ] && "$BIN" info "$M/s.h5" > /dev/null 2>&1 && ok || bad "synth on a roomy disk: exit $(rc): $(cat err.txt)"

# ---- pack (40 images at 64x64, about 180 KB) ----
for size in 4k 16k 64k 128k; do
  fresh $size
  disk "pack on a ${size} disk" "No space left on device" "$M/p.h5" -- "$BIN" pack "$S" "$M/p.h5" --size 64
done
fresh 64k
echo "old pack" > "$M/p.h5"
disk "pack over an old file on a full disk" "No space left on device" "$M/p.h5" "old pack" -- "$BIN" pack "$S" "$M/p.h5" --size 64
fresh 2m
run "$BIN" pack "$S" "$M/p.h5" --size 64
[ "$(rc)" -eq 0 ] && ok || bad "pack on a roomy disk: exit $(rc): $(cat err.txt)"

# ---- eval outputs (train split: 280 rows; --scores ~15 KB, --roc ~11 KB, --reliability 200 B) ----
E=("$BIN" eval --ckpt "$C" --data d.h5 --split train)
for size in 4k 8k; do
  fresh $size
  disk "eval --scores on a ${size} disk" "No space left on device" "$M/s.tsv" -- "${E[@]}" --scores "$M/s.tsv"
  disk "eval --roc on a ${size} disk" "No space left on device" "$M/roc.tsv" -- "${E[@]}" --roc "$M/roc.tsv"
done
fresh 8k
fill
disk "eval --reliability on a full disk" "No space left on device" "$M/rel.csv" -- "${E[@]}" --reliability "$M/rel.csv"
fresh 12k
echo "old roc" > "$M/roc.tsv"
disk "eval --roc over an old file" "No space left on device" "$M/roc.tsv" "old roc" -- "${E[@]}" --roc "$M/roc.tsv"
# a full disk for the last output: the others are not left either, nor replaced
fresh 16k
echo "old rel" > "$M/rel.csv"
disk "eval: --scores fills the disk after --roc and --reliability" "No space left on device" "$M/s.tsv" -- \
  "${E[@]}" --roc "$M/roc.tsv" --reliability "$M/rel.csv" --scores "$M/s.tsv"
[ ! -e "$M/roc.tsv" ] && [ "$(cat "$M/rel.csv")" = "old rel" ] && ok || bad "eval: earlier outputs left or replaced"
fresh 8k
fill
run sh -c '"$@" --json > "'"$M"'/e.json"' sh "${E[@]}"
[ "$(rc)" -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "stdout ($M/e.json): cannot write: No space left on device" err.txt \
  && ok || bad "eval --json > full disk: exit $(rc): $(cat err.txt)"
fresh 1m
run "${E[@]}" --roc "$M/roc.tsv" --scores "$M/s.tsv" --reliability "$M/rel.csv"
[ "$(rc)" -eq 0 ] && [ -s "$M/roc.tsv" ] && [ -s "$M/s.tsv" ] && [ -s "$M/rel.csv" ] && ok || bad "eval on a roomy disk: exit $(rc): $(cat err.txt)"

# ---- predict: Grad-CAM PNGs (~170 KB each) fill the disk at the first, second and third ----
for size in 100k 260k 430k; do
  fresh $size
  run "$BIN" predict --ckpt "$C" "${IMGS[@]}" --gradcam "$M/cams"
  [ "$(rc)" -eq 1 ] && ok || bad "predict --gradcam on a $size disk: exit $(rc)"
  [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "$M/cams/.*\.png: cannot write: No space left on device" err.txt && ok \
    || bad "predict --gradcam on a $size disk: $(cat err.txt)"
  [ ! -s out.txt ] && ok || bad "predict --gradcam on a $size disk printed results"
  bad_png=$(pngs_whole "$M/cams") && ok || bad "predict --gradcam on a $size disk left a truncated $bad_png"
  [ -z "$(find "$M" -name '*.tmp.*')" ] && ok || bad "predict --gradcam on a $size disk left $(find "$M" -name '*.tmp.*')"
  [ -z "$(find "$M/cams" -name '*.png' -size 0)" ] && ok || bad "predict --gradcam on a $size disk left an empty PNG"
done
fresh 4m
run "$BIN" predict --ckpt "$C" "${IMGS[@]}" --gradcam "$M/cams"
[ "$(rc)" -eq 0 ] && [ "$(ls "$M/cams" | wc -l)" -eq 3 ] && pngs_whole "$M/cams" > /dev/null && ok \
  || bad "predict --gradcam on a roomy disk: exit $(rc): $(cat err.txt)"
for j in "" --json; do
  fresh 4k
  fill
  run sh -c '"$@" > "'"$M"'/p.out"' sh "$BIN" predict --ckpt "$C" "${IMGS[@]}" $j
  [ "$(rc)" -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "stdout ($M/p.out): cannot write: No space left on device" err.txt \
    && ok || bad "predict $j > full disk: exit $(rc): $(cat err.txt)"
done

# ---- audit stdout ----
for j in "" --json; do
  fresh 4k
  fill
  run sh -c '"$@" > "'"$M"'/a.out"' sh "$BIN" audit --ckpt "$C" --data d.h5 --cam-images 4 $j
  [ "$(rc)" -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "stdout ($M/a.out): cannot write: No space left on device" err.txt \
    && ok || bad "audit $j > full disk: exit $(rc): $(cat err.txt)"
done

# ---- scripts/plot_eval.sh: the three PNGs (~180 KB) all or nothing ----
if command -v gnuplot > /dev/null; then
  mkdir -p ev
  "${E[@]}" --json --roc ev/roc.tsv --reliability ev/reliability.csv > ev/eval.json 2> /dev/null || bad "eval for plot_eval"
  for size in 40k 100k 150k; do
    fresh $size
    mkdir -p "$M/out" && echo "old png" > "$M/out/roc.png"
    run bash "$SRC/scripts/plot_eval.sh" ev "$M/out"
    [ "$(rc)" -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "$M/out/.*No space left on device" err.txt && ok \
      || bad "plot_eval.sh on a $size disk: exit $(rc): $(cat err.txt)"
    [ "$(cat "$M/out/roc.png")" = "old png" ] && [ "$(ls -A "$M/out")" = roc.png ] && ok \
      || bad "plot_eval.sh on a $size disk left: $(ls -A "$M/out")"
  done
else
  bad "gnuplot is needed for the plot_eval.sh case (scripts/deps.sh --test installs it)"
fi

# ---- ulimit -f: "File too large", never SIGXFSZ ----
mkdir -p lim
disk_lim() { # disk_lim KB WHAT PATH -- command...
  local kb=$1 what=$2 path=$3
  shift 4
  run sh -c 'ulimit -f "$0"; exec "$@"' "$kb" "$@"
  [ "$(rc)" -eq 1 ] && ok || bad "$what under ulimit -f $kb: exit $(rc)"
  [ "$(wc -l < err.txt)" -eq 1 ] && grep -qF "File too large" err.txt && grep -qF "$path" err.txt && ok \
    || bad "$what under ulimit -f $kb: $(cat err.txt)"
  [ -z "$(find lim -type f)" ] && ok || bad "$what under ulimit -f $kb: left $(find lim -type f)"
}
disk_lim 16 "synth" lim/s.h5 -- "$BIN" synth lim/s.h5 --n 200 --size 32
disk_lim 32 "pack" lim/p.h5 -- "$BIN" pack "$S" lim/p.h5 --size 64
disk_lim 100 "predict --gradcam" lim/cams/ -- "$BIN" predict --ckpt "$C" "${IMGS[@]}" --gradcam lim/cams
rm -rf lim/cams
# (eval is not run under a tiny ulimit -f: MPI_Init's singleton PMIx server writes shared-memory files
# larger than that and dies of SIGXFSZ itself; eval's writes go through xd_tmp_write, whose behaviour under
# RLIMIT_FSIZE test_rel_output checks)

# ---- a read-only file system: refused before any work, with the reason ----
fresh 1m ro
disk "synth on a read-only disk" "Read-only file system" "$M/s.h5" -- "$BIN" synth "$M/s.h5" --n 200 --size 32
disk "pack on a read-only disk" "Read-only file system" "$M/p.h5" -- "$BIN" pack "$S" "$M/p.h5" --size 64
disk "eval --roc on a read-only disk" "Read-only file system" "$M/roc.tsv" -- "${E[@]}" --roc "$M/roc.tsv"
disk "predict --gradcam on a read-only disk" "Read-only file system" "$M/cams" -- "$BIN" predict --ckpt "$C" "${IMGS[@]}" --gradcam "$M/cams"

finish rel_disk
