#!/usr/bin/env bash
# export: a checkpoint as ONNX. The files pass the ONNX checker (python3-onnx, full_check), run in
# onnxruntime (npm onnxruntime-node, tests/onnx/run.js) and give predict's probabilities to 1e-5 on the
# same images (at the model's size, and of other sizes that predict resizes), for a trained model with every layer kind and activation (standardize on 4-D and flat
# tensors, conv pad=same with the odd pixel bottom/right, pad=N, valid, bias=0, stride 2, both pools,
# batchnorm on 4-D and flat tensors, residual add with in=, dropout, flatten, globalavgpool, standalone
# activations), a 2-class softmax model, and the presets keras-seed and default (resnet-s) after one
# step from random initialisation; opset 13 and 17. The metadata holds the preprocessing, class names,
# threshold and checkpoint; input "image" [N,1,H,W] and output "probability" [N,K]. Bad usage exits 2,
# other errors 1 with one line naming the file, and leave no file behind.
# Usage: bash tests/test_export.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR   (test deps: scripts/deps.sh --test)
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
PY=/usr/bin/python3
NM=$SRC/tests/onnx/node_modules
$PY -c "import onnx" 2> /dev/null || { echo "FAIL: python3-onnx is needed (scripts/deps.sh --test)" >&2; exit 1; }
command -v node > /dev/null && [ -e "$NM/onnxruntime-node/package.json" ] ||
  { echo "FAIL: node and onnxruntime-node in $NM are needed (scripts/deps.sh --test)" >&2; exit 1; }
thr_of() { "$BIN" info "$1" 2> /dev/null | sed -n 's/.*threshold \([0-9.e+-]*\).*/\1/p' | head -1; }
ort() { NODE_PATH=$NM node "$SRC/tests/onnx/run.js" "$@"; }

# images at the model's input size (predict's resize is then the identity, so run.js feeds the same pixels)
mk_images() { # DIR SIZE
  mkdir -p "$1/NORMAL" "$1/PNEUMONIA"
  for i in $(seq 1 8); do
    pgm "$1/NORMAL/n$i.pgm" "$2" "$2" "$i" 0
    pgm "$1/PNEUMONIA/p$i.pgm" "$2" "$2" $((100 + i)) $((20 + 10 * i))
  done
}
mk_images "$W/i16" 16
mk_images "$W/i32" 32
"$BIN" pack "$W/i16" "$W/d16.h5" --size 16 --val-fraction 0.3 --seed 2 > /dev/null 2>&1 || bad "pack 16"
"$BIN" pack "$W/i32" "$W/d32.h5" --size 32 --val-fraction 0.3 --seed 2 > /dev/null 2>&1 || bad "pack 32"

cat > "$W/all.txt" << 'EOF'
input 1x16x16
standardize eps=0.01 name=s
conv 4 3x3 relu pad=same name=c1
conv 4 3x3 pad=1 bias=0
batchnorm leakyrelu
add c1 elu name=r
conv 4 1x1 in=s
add r
conv 4 2x2 pad=same
tanh
conv 5 2x2 stride=2 pad=valid
avgpool 2x2
relu
conv 6 3x3 sigmoid pad=same stride=2
maxpool 2x2 stride=1
conv 6 1x1 linear
batchnorm
globalavgpool
dense 8 relu
batchnorm
standardize
dropout 0.2
dense 6
softmax
dense 1 sigmoid
EOF
cat > "$W/soft.txt" << 'EOF'
input 1x16x16
conv 3 3x3 relu pad=same
maxpool 2x2
flatten
dropout 0.5
dense 2 softmax
EOF

# compare MODEL.onnx in onnxruntime with predict of CKPT on the images of DIR; COL = ORT column of P(class 1)
# [PRED_DIR]: predict reads the images there instead (the originals of DIR's already resized pixels)
compare() { # NAME CKPT ONNX DIR COL [PRED_DIR]
  local name=$1 pd=${6:-$4}
  ort "$3" "$4"/*/*.pgm > "$W/$name.ort" 2> "$W/$name.orterr" && ok || bad "$name: onnxruntime: $(cat "$W/$name.orterr")"
  "$BIN" predict --ckpt "$2" "$pd"/*/*.pgm > "$W/$name.pred" 2> /dev/null && ok || bad "$name: predict failed"
  local res
  res=$(paste "$W/$name.ort" "$W/$name.pred" | awk -F'\t' -v c="$5" -v od="$4/" -v pd="$pd/" '
    { n++; a = $1; b = $(c + 1); sub(od, "", a); sub(pd, "", b); if (a != b) bad = 1; d = $c - $(c + 2); if (d < 0) d = -d; if (d > m) m = d
      if ($c < 0 || $c > 1 || $c == "") bad = 1; s += $c; ss += $c * $c }
    END { printf "%d %s %.3g %.3g\n", n, bad ? "misaligned" : "ok", m, ss / n - (s / n) ^ 2 }')
  read -r n align maxd var <<< "$res"
  [ "$n" = 16 ] && [ "$align" = ok ] && ok || bad "$name: $n rows, $align"
  awk -v d="$maxd" 'BEGIN { exit !(d <= 1e-5) }' && ok || bad "$name: onnxruntime vs predict differ by $maxd"
  echo "$name: max |onnxruntime - predict| = $maxd over $n images"
  # the images must not all get the same probability (else the comparison proves little)
  awk -v v="$var" 'BEGIN { exit !(v > 0) }' && ok || bad "$name: every image got the same probability"
}
check() { # ONNX: checker + metadata/IO; prints nothing on success
  $PY - "$@" << 'EOF' 2> "$W/check.err"
import json, sys
import onnx
path, opset, k, h, w, classes, thr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
m = onnx.load(path)
onnx.checker.check_model(m, full_check=True)
assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset], m.opset_import
g = m.graph
assert [i.name for i in g.input] == ["image"] and [o.name for o in g.output] == ["probability"], (g.input, g.output)
def dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
assert dims(g.input[0]) == ["N", 1, h, w], dims(g.input[0])
assert dims(g.output[0]) == ["N", k], dims(g.output[0])
assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
md = {p.key: p.value for p in m.metadata_props}
assert json.loads(md["class_names"]) == classes.split(","), md["class_names"]
if k == 1:
    assert abs(float(md["threshold"]) - float(thr)) < 1e-4, (md["threshold"], thr)
assert "x = uint8 / 255" in md["preprocessing"] and "grayscale" in md["preprocessing"], md["preprocessing"]
assert f"resize to {h}x{w}" in md["preprocessing"] and md["preprocessing.scale"] == "x = uint8 / 255"
assert md["opset"] == str(opset) and md["checkpoint"] and "checkpoint.step" in md and "\ninput " in "\n" + md["model"]
assert all(n.op_type != "Pad" and not any(a.name == "auto_pad" for a in n.attribute) for n in g.node)
EOF
}

# ---- every layer kind, trained a few steps ----
"$BIN" train --data "$W/d16.h5" --model "$W/all.txt" --epochs 2 --batch 4 --out "$W/run-all" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train all"
for opset in 17 13; do
  run "$BIN" export --ckpt "$W/run-all/best.h5" --onnx "$W/all$opset.onnx" --opset $opset
  [ "$(rc)" = 0 ] && [ ! -s "$W/err.txt" ] && grep -q "opset $opset" "$W/out.txt" && ok || bad "export all opset $opset: $(cat "$W/err.txt")"
  check "$W/all$opset.onnx" $opset 1 16 16 NORMAL,PNEUMONIA "$(thr_of "$W/run-all/best.h5")" && ok || bad "all opset $opset: $(tail -3 "$W/check.err")"
  compare "all-opset$opset" "$W/run-all/best.h5" "$W/all$opset.onnx" "$W/i16" 2
done
# pad=same is explicit, the odd pixel bottom/right (2x2 on 16x16, 3x3 stride 2 on 4x4: top/left 0, bottom/right 1)
$PY -c "
import onnx, sys
g = onnx.load(sys.argv[1]).graph
pads = [list(a.ints) for n in g.node if n.op_type == 'Conv' for a in n.attribute if a.name == 'pads']
assert pads == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], pads
ops = {n.op_type for n in g.node}
need = {'Conv', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'BatchNormalization', 'Flatten', 'Gemm', 'Add', 'Relu',
        'LeakyRelu', 'Elu', 'Sigmoid', 'Tanh', 'Softmax', 'ReduceMean', 'Sub', 'Mul', 'Sqrt', 'Max', 'Div'}
assert need <= ops, need - ops
" "$W/all17.onnx" 2> "$W/pads.err" && ok || bad "all: pads/ops: $(tail -2 "$W/pads.err")"

# ---- real images of other sizes: predict decodes and resizes them (area average, bilinear when enlarging);
# onnxruntime gets the same pixels from `pack` (the same preprocessing code), read back with h5py ----
mkdir -p "$W/odd/NORMAL" "$W/odd/PNEUMONIA"
sizes=(23x19 41x37 11x9 16x33 64x48 17x17 9x30 100x90)
for i in $(seq 0 7); do
  IFS=x read -r ow oh <<< "${sizes[$i]}"
  pgm "$W/odd/NORMAL/n$i.pgm" "$ow" "$oh" $((7 + i)) 0
  pgm "$W/odd/PNEUMONIA/p$i.pgm" "$oh" "$ow" $((50 + i)) 60
done
"$BIN" pack "$W/odd" "$W/odd.h5" --size 16 --val-fraction 0 > /dev/null 2>&1 && ok || bad "pack odd"
$PY - "$W/odd.h5" "$W/oddpx" << 'EOF' 2> "$W/h5.err" && ok || bad "pixels of odd.h5: $(tail -2 "$W/h5.err")"
import os, sys
import h5py
f = h5py.File(sys.argv[1], "r")
n = 0
for p, im in zip(f["/train/paths"][:], f["/train/images"][:]):
    out = os.path.join(sys.argv[2], p.decode())
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as o:
        o.write(b"P5\n%d %d\n255\n" % (im.shape[1], im.shape[0]) + im.tobytes())
    n += 1
assert n == 16, n
EOF
compare all-resized "$W/run-all/best.h5" "$W/all17.onnx" "$W/oddpx" 2 "$W/odd"

# ---- softmax head (K = 2): column 3 of run.js is P(class 1) ----
"$BIN" train --data "$W/d16.h5" --model "$W/soft.txt" --epochs 1 --batch 4 --out "$W/run-soft" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train soft"
run "$BIN" export --ckpt "$W/run-soft/best.h5" --onnx "$W/soft.onnx"
[ "$(rc)" = 0 ] && ok || bad "export soft: $(cat "$W/err.txt")"
check "$W/soft.onnx" 17 2 16 16 NORMAL,PNEUMONIA 0.5 && ok || bad "soft: $(tail -3 "$W/check.err")"
compare soft "$W/run-soft/best.h5" "$W/soft.onnx" "$W/i16" 3
awk -F'\t' '{ d = $2 + $3 - 1; if (d < 0) d = -d; if (d > 1e-6) exit 1 }' "$W/soft.ort" && ok || bad "soft: rows do not sum to 1"

# ---- presets after one step from random initialisation (last.h5: full training state) ----
for p in keras-seed default; do
  "$BIN" train --data "$W/d32.h5" --model $p --max-steps 1 --batch 4 --out "$W/run-$p" --quiet --threads 1 \
    > /dev/null 2>&1 || bad "train $p"
  run "$BIN" export --ckpt "$W/run-$p/last.h5" --onnx "$W/$p.onnx"
  [ "$(rc)" = 0 ] && ok || bad "export $p: $(cat "$W/err.txt")"
  check "$W/$p.onnx" 17 1 32 32 NORMAL,PNEUMONIA "$(thr_of "$W/run-$p/last.h5")" && ok || bad "$p: $(tail -3 "$W/check.err")"
  compare "$p" "$W/run-$p/last.h5" "$W/$p.onnx" "$W/i32" 2
done

# ---- bad input ----
C=$W/run-soft/best.h5
fails_with 2 "--ckpt" "no options" -- "$BIN" export
fails_with 2 "--onnx" "no --onnx" -- "$BIN" export --ckpt "$C"
fails_with 2 "--opset" "opset 12" -- "$BIN" export --ckpt "$C" --onnx "$W/x.onnx" --opset 12
fails_with 2 "--opset" "opset 18" -- "$BIN" export --ckpt "$C" --onnx "$W/x.onnx" --opset 18
fails_with 2 "--bogus" "unknown option" -- "$BIN" export --ckpt "$C" --onnx "$W/x.onnx" --bogus
fails_with 2 "--onnx" "--onnx without value" -- "$BIN" export --ckpt "$C" --onnx
fails_with 1 "$W/missing.h5" "missing checkpoint" -- "$BIN" export --ckpt "$W/missing.h5" --onnx "$W/x.onnx"
fails_with 1 "$W/i16/NORMAL/n1.pgm" "not a checkpoint" -- "$BIN" export --ckpt "$W/i16/NORMAL/n1.pgm" --onnx "$W/x.onnx"
fails_with 1 "$W/d16.h5" "a dataset, not a checkpoint" -- "$BIN" export --ckpt "$W/d16.h5" --onnx "$W/x.onnx"
fails_with 1 "$W/nodir/x.onnx" "missing output folder" -- "$BIN" export --ckpt "$C" --onnx "$W/nodir/x.onnx"
fails_with 1 "$W" "output is a folder" -- "$BIN" export --ckpt "$C" --onnx "$W"
cp "$C" "$W/same.h5"
fails_with 1 "$W/same.h5" "output is the checkpoint" -- "$BIN" export --ckpt "$W/same.h5" --onnx "$W/same.h5"
cmp -s "$C" "$W/same.h5" && ok || bad "the checkpoint was changed"
head -c 3000 "$C" > "$W/trunc.h5"
fails_with 1 "$W/trunc.h5" "truncated checkpoint" -- "$BIN" export --ckpt "$W/trunc.h5" --onnx "$W/x.onnx"
[ ! -e "$W/x.onnx" ] && ok || bad "a failed export left $W/x.onnx"
ls "$W" | grep -q '\.tmp' && bad "temporaries left: $(ls "$W" | grep '\.tmp')" || ok
# a full disk: the old file stays whole, no temporary left
if [ -w /dev/full ] && mkdir -p "$W/ro" && cp "$W/soft.onnx" "$W/ro/keep.onnx"; then
  (ulimit -f 4; "$BIN" export --ckpt "$W/run-all/best.h5" --onnx "$W/ro/keep.onnx" > "$W/out.txt" 2> "$W/err.txt"); r=$?
  [ "$r" = 1 ] && [ "$(wc -l < "$W/err.txt")" = 1 ] && grep -qF "$W/ro/keep.onnx" "$W/err.txt" && ok ||
    bad "file size limit: exit $r: $(cat "$W/err.txt")"
  cmp -s "$W/soft.onnx" "$W/ro/keep.onnx" && ok || bad "file size limit: the old file was changed"
  [ "$(ls "$W/ro")" = keep.onnx ] && ok || bad "file size limit: left $(ls "$W/ro")"
fi
# overwriting an existing export works and gives the same bytes (deterministic)
"$BIN" export --ckpt "$C" --onnx "$W/soft2.onnx" > /dev/null && "$BIN" export --ckpt "$C" --onnx "$W/soft2.onnx" > /dev/null &&
  cmp -s "$W/soft.onnx" "$W/soft2.onnx" && ok || bad "export is not deterministic"
finish test_export
