#!/usr/bin/env bash
# Checked checkpoints through the CLI (issue 9, items 5 and 6):
#  - `info` on a good checkpoint says it is checksummed and verified, on a version 1 fixture "none";
#  - every crafted bad checkpoint (tests/test_rel_ckpt.c --make: NaN/Inf weights, negative Adam v or
#    running variance, threshold NaN or 2, negative counters, wrong types and shapes, links and external
#    storage on a FIFO, ...) makes `info` exit 1 with one line naming the file and the problem, within
#    seconds (a FIFO must not block); `predict` refuses the weight and attribute ones the same way;
#  - FIFO, directory and device paths are refused at once; `info --mem-limit` parses like everywhere;
#  - a checkpoint written by `train`: h5py reads it (when installed) and finds Fletcher-32 on every
#    tensor; 60 seeded single-bit flips across last.h5 and best.h5 are each refused by `info`/`predict`
#    with exit 1 and one line, or give byte-identical output.
# Usage: bash tests/test_rel_ckpt_cli.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR  (CKPT_DIFF: the ckpt_diff tool; the
# crafting helper test_rel_ckpt is built next to it)
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
TOOLS=$(dirname "${CKPT_DIFF:-$(dirname "$BIN")/ckpt_diff}")
MAKE=$TOOLS/test_rel_ckpt
[ -x "$MAKE" ] || { echo "FAIL: $MAKE is missing (built with the tests)" >&2; exit 1; }
C=$W/c
mkdir -p "$C"
"$MAKE" --make "$C" || { echo "FAIL: test_rel_ckpt --make" >&2; exit 1; }
pgm "$W/a.pgm" 21 19 3 0
pgm "$W/b.pgm" 17 23 5 40

# ---- good files ----
run "$BIN" info "$C/good_last.h5"
[ "$(rc)" -eq 0 ] && ok || bad "info good_last.h5: exit $(rc): $(cat "$W/err.txt")"
grep -q "checksums: Fletcher-32 on every tensor, checksummed metadata (all verified)" "$W/out.txt" && ok ||
  bad "info does not report the checksums: $(cat "$W/out.txt")"
grep -q "optimizer: adam, step 37, weight EMA" "$W/out.txt" && ok || bad "info does not report the optimizer"
run "$BIN" info "$SRC/tests/fixtures/torch_mixed.h5"
[ "$(rc)" -eq 0 ] && grep -q "checksums: none (a version 1 checkpoint" "$W/out.txt" && ok ||
  bad "info on a version 1 checkpoint: exit $(rc): $(cat "$W/out.txt" "$W/err.txt")"

# ---- crafted bad files: exit 1, one line naming the file and the problem ----
n=0
while IFS=$'\t' read -r name optim words; do
  n=$((n + 1))
  t0=$(date +%s)
  fails_with 1 "$name" "info $name" -- timeout 30 "$BIN" info "$C/$name"
  grep -qF -- "$words" "$W/err.txt" && ok || bad "info $name: expected '$words', got: $(cat "$W/err.txt")"
  [ $(($(date +%s) - t0)) -le 10 ] && ok || bad "info $name took $(($(date +%s) - t0)) s"
  if [ "$optim" = 0 ]; then
    fails_with 1 "$name" "predict $name" -- timeout 30 "$BIN" predict --ckpt "$C/$name" "$W/a.pgm"
    grep -qF -- "$words" "$W/err.txt" && ok || bad "predict $name: expected '$words', got: $(cat "$W/err.txt")"
  fi
done < "$C/bad.tsv"
[ "$n" -ge 40 ] && ok || bad "only $n crafted checkpoints"

# ---- not regular files, options ----
mkfifo "$W/fifo.h5"
fails_with 1 "not a regular file (a FIFO)" "info on a FIFO" -- timeout 10 "$BIN" info "$W/fifo.h5"
fails_with 1 "not a regular file (a FIFO)" "predict --ckpt FIFO" -- timeout 10 "$BIN" predict --ckpt "$W/fifo.h5" "$W/a.pgm"
fails_with 1 "not a regular file (a directory)" "info on a directory" -- "$BIN" info "$W"
fails_with 1 "not a regular file (a character device)" "info on /dev/zero" -- timeout 10 "$BIN" info /dev/zero
fails_with 2 "--mem-limit" "info --mem-limit bogus" -- "$BIN" info "$C/good_last.h5" --mem-limit bogus
fails_with 2 "--mem-limit" "info --mem-limit without value" -- "$BIN" info "$C/good_last.h5" --mem-limit
run "$BIN" info --mem-limit 64M "$C/good_last.h5"
[ "$(rc)" -eq 0 ] && ok || bad "info --mem-limit 64M: exit $(rc): $(cat "$W/err.txt")"

# ---- a checkpoint written by train ----
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in 1 2 3 4 5 6; do
  pgm "$S/NORMAL/n$i.pgm" $((18 + i)) $((20 + i)) "$i" 0
  pgm "$S/PNEUMONIA/p$i.pgm" $((24 - i)) $((17 + i)) $((50 + i)) 60
done
cat > "$W/tiny.txt" << 'EOF'
input 1x16x16
conv 4 3x3 relu pad=same
batchnorm
maxpool 2x2
conv 6 3x3 relu
flatten
dense 1 sigmoid
EOF
"$BIN" pack "$S" "$W/d.h5" --size 16 --val-fraction 0.34 --seed 1 > /dev/null 2> "$W/pack.err" || bad "pack: $(cat "$W/pack.err")"
"$BIN" train --data "$W/d.h5" --model "$W/tiny.txt" --epochs 2 --batch 4 --out "$W/run" --quiet --threads 1 --ema 0.9 \
  > /dev/null 2> "$W/train.err" || bad "train: $(cat "$W/train.err")"
for f in last best; do
  [ -f "$W/run/$f.h5" ] && ok || { bad "train wrote no $f.h5"; finish rel_ckpt_cli; exit; }
done
run "$BIN" info "$W/run/last.h5"
[ "$(rc)" -eq 0 ] && grep -q "checksums: Fletcher-32" "$W/out.txt" && ok || bad "info run/last.h5: $(cat "$W/out.txt" "$W/err.txt")"
"$CKPT_DIFF" "$W/run/last.h5" "$W/run/last.h5" --optim > /dev/null && ok || bad "ckpt_diff cannot read last.h5"

# h5py (and scripts/to_torch.py when torch is there) read the files
PY=/usr/bin/python3
if [ -x "$PY" ] && "$PY" -c 'import h5py' 2> /dev/null; then
  "$PY" - "$W/run/last.h5" "$W/run/best.h5" > "$W/py.txt" 2>&1 << 'EOF' && ok || bad "h5py: $(cat "$W/py.txt")"
import sys, h5py, numpy as np
for p in sys.argv[1:]:
    with h5py.File(p, "r") as f:
        a = f.attrs
        model = a["model"].decode() if isinstance(a["model"], bytes) else a["model"]
        assert model.startswith("input 1x16x16"), model
        assert 0 <= float(a["threshold"]) <= 1
        assert [c.decode() if isinstance(c, bytes) else c for c in a["class_names"]] == ["NORMAL", "PNEUMONIA"]
        n = 0
        def visit(name, o):
            global n
            if isinstance(o, h5py.Dataset):
                assert o.fletcher32, name + " has no Fletcher-32"
                assert np.isfinite(o[...]).all(), name
                n += 1
        f.visititems(visit)
        assert n > 0
print("ok")
EOF
  if "$PY" -c 'import torch' 2> /dev/null; then
    "$PY" "$SRC/scripts/to_torch.py" "$W/run/best.h5" --check "$W/a.pgm" "$W/b.pgm" --xray-dp "$BIN" > "$W/tt.txt" 2>&1 && ok ||
      bad "scripts/to_torch.py --check: $(tail -5 "$W/tt.txt")"
  else
    echo "SKIP scripts/to_torch.py: torch is not installed"
  fi
else
  echo "SKIP h5py check: /usr/bin/python3 has no h5py"
fi

# ---- bit flips through the CLI: refused in one line, or the same output ----
flip() { # flip SRC DST OFFSET BIT
  cp "$1" "$2"
  local b
  b=$(od -An -tu1 -j "$3" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ (1 << $4))))" | dd of="$2" bs=1 seek="$3" conv=notrunc 2> /dev/null
}
refused=0 same=0
for f in last best; do
  "$BIN" predict --ckpt "$W/run/$f.h5" "$W/a.pgm" "$W/b.pgm" > "$W/ref_$f.txt" 2>&1 || bad "predict $f.h5"
  size=$(stat -c %s "$W/run/$f.h5")
  seed=$([ $f = last ] && echo 7 || echo 11)
  for k in $(seq 1 30); do
    seed=$(((seed * 1103515245 + 12345) % 2147483648))
    off=$((seed % size))
    bit=$(((seed / 7) % 8))
    flip "$W/run/$f.h5" "$W/flip.h5" "$off" "$bit"
    cmp -s "$W/run/$f.h5" "$W/flip.h5" && { bad "flip at $off did not change the file"; continue; }
    run timeout 30 "$BIN" predict --ckpt "$W/flip.h5" "$W/a.pgm" "$W/b.pgm"
    if [ "$(rc)" -eq 0 ]; then
      sed "s#$W/flip.h5#$W/run/$f.h5#g" "$W/out.txt" | cmp -s - "$W/ref_$f.txt" && ok ||
        bad "$f.h5 flipped at byte $off bit $bit: exit 0 with other predictions"
      same=$((same + 1))
    else
      [ "$(rc)" -eq 1 ] && [ "$(wc -l < "$W/err.txt")" -eq 1 ] && grep -q "flip.h5" "$W/err.txt" && ok ||
        bad "$f.h5 flipped at byte $off bit $bit: exit $(rc): $(cat "$W/err.txt")"
      refused=$((refused + 1))
      run timeout 30 "$BIN" info "$W/flip.h5"
      [ "$(rc)" -eq 1 ] && [ "$(wc -l < "$W/err.txt")" -eq 1 ] && ok ||
        bad "info on $f.h5 flipped at byte $off bit $bit: exit $(rc): $(cat "$W/err.txt")"
    fi
  done
done
echo "CLI bit flips: $refused refused, $same with identical predictions"
finish rel_ckpt_cli
