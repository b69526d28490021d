#!/usr/bin/env bash
# Single-process training behaviour (issue 3): bitwise determinism (same command; 1 vs 2 threads),
# resume equals an uninterrupted run (after --max-steps and after SIGTERM), early stopping on a crafted
# plateau with best.h5 = the best epoch's weights, --max-steps 0, learning on the synthetic set,
# and clear errors for bad input.
set -euo pipefail
X=$1; SRC=$2; W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
rm -rf "$W"; mkdir -p "$W"; cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

"$X" synth d.h5 --n 200 --size 32 --seed 3 >/dev/null
T=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 3 --patience 0 --quiet --augment default)

# same command line -> bitwise identical weights and optimizer state
"${T[@]}" --out a
"${T[@]}" --out b
"$DIFF" a/last.h5 b/last.h5 0 --optim >/dev/null || fail "two identical runs differ"
ok "identical command lines give bitwise-identical last.h5 (weights and Adam moments)"

# 1 vs 2 OpenMP threads -> bitwise identical
"${T[@]}" --out t1 --threads 1
"${T[@]}" --out t2 --threads 2
"$DIFF" t1/last.h5 t2/last.h5 0 --optim || fail "1 and 2 threads differ"
ok "1 and 2 threads give bitwise-identical weights"

# stop mid-epoch with --max-steps, resume: same as uninterrupted, metrics rows equal except timings
"${T[@]}" --out c --max-steps 13
test -f c/last.h5 || fail "--max-steps did not write last.h5"
"${T[@]}" --out c --resume
"$DIFF" a/last.h5 c/last.h5 0 --optim || fail "resumed run differs from the uninterrupted one"
cut -d, -f1-11 a/metrics.csv > a.cols; cut -d, -f1-11 c/metrics.csv > c.cols
cmp -s a.cols c.cols || { diff a.cols c.cols; fail "resumed metrics.csv differs"; }
ok "--max-steps + --resume ends bitwise identical to an uninterrupted run, same metrics rows"

# the default model and its recipe (residual graph, standardize, AdamW, warm-up + cosine per step, EMA,
# shortcut augmentation, balanced classes): bitwise across thread counts, and resume (EMA included)
R=("$X" train --data d.h5 --model default --batch 16 --epochs 2 --quiet)
"${R[@]}" --out ra --threads 1
"${R[@]}" --out rb --threads 2
"$DIFF" ra/last.h5 rb/last.h5 0 --optim || fail "default recipe: 1 and 2 threads differ"
"${R[@]}" --out rc --max-steps 11 --threads 2
"${R[@]}" --out rc --resume --threads 2
"$DIFF" ra/last.h5 rc/last.h5 0 --optim || fail "default recipe: resumed run differs from the uninterrupted one"
"$DIFF" ra/best.h5 rc/best.h5 0 || fail "default recipe: resumed best.h5 differs"
grep -q "recipe of the preset" ra/train.log || fail "train.log does not record the recipe"
h5dump -a /optim/ema_decay ra/last.h5 | grep -q "0.998" || fail "last.h5 does not record the EMA decay"
ok "default recipe (resnet-s, AdamW, EMA, augmentation): 1 vs 2 threads and --max-steps + --resume bitwise (weights, moments, EMA)"

# the recipe is only a default: an option on the command line overrides it
"$X" train --data d.h5 --model default --batch 16 --epochs 1 --optimizer adam --ema 0 --out ro --quiet
grep -q "optimizer adam lr 0.002 .*EMA 0;" ro/train.log || { cat ro/train.log; fail "options did not override the recipe"; }
ok "command-line options override the default recipe"

# a shard over --mem-cap is streamed from the file with a prefetch thread: same weights, bit for bit,
# also when stopped mid-epoch and resumed
"${T[@]}" --out s --mem-cap 0 --max-steps 13
"${T[@]}" --out s --mem-cap 0 --resume
"$DIFF" a/last.h5 s/last.h5 0 --optim || fail "streamed training differs from in-memory training"
ok "streaming (--mem-cap 0) + resume = in-memory run, bitwise"

# SIGTERM: finish the step, write last.h5, exit 0; --resume continues to the same weights
"$X" synth big.h5 --n 600 --size 64 --seed 5 >/dev/null
S=("$X" train --data big.h5 --model keras-seed --batch 16 --epochs 12 --patience 0 --threads 1)
"${S[@]}" --out full --quiet
"${S[@]}" --out sig > sig.out 2>&1 &
pid=$!
for _ in $(seq 1 400); do
  [ -f sig/metrics.csv ] && [ "$(wc -l < sig/metrics.csv)" -ge 2 ] && break
  sleep 0.05
done
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || { cat sig.out; fail "SIGTERM: exit status $rc, expected 0"; }
grep -q "interrupted" sig.out || { cat sig.out; fail "SIGTERM: no 'interrupted' message"; }
rows=$(($(wc -l < sig/metrics.csv) - 1))
[ "$rows" -lt 12 ] || fail "SIGTERM arrived after the run finished; test needs a longer run"
"${S[@]}" --out sig --resume --quiet
"$DIFF" full/last.h5 sig/last.h5 0 --optim || fail "run interrupted by SIGTERM and resumed differs"
ok "SIGTERM after $rows epochs: exit 0, resume ends bitwise identical"

# early stopping on a crafted plateau: the lr drops to ~0 after 2 epochs, so val_loss stops moving
P=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 20 --patience 2 --min-delta 1e-4 --quiet
   --schedule step:2:1e-12 --lr 3e-3)
"${P[@]}" --out es
rows=$(($(wc -l < es/metrics.csv) - 1))
best=$("$X" info es/best.h5 | sed -n 's/.*best epoch \([0-9]*\).*/\1/p')
# expected best: the epoch with the lowest val_loss among those that improved by more than min-delta
exp=$(awk -F, 'NR>1 { if (b == "" || $4 < bl - 1e-4) { b = $1; bl = $4 } } END { print b }' es/metrics.csv)
[ "$rows" -lt 20 ] || fail "early stopping did not fire ($rows epochs)"
[ "$best" = "$exp" ] || fail "best.h5 says best epoch $best, metrics.csv says $exp"
[ "$rows" -eq $((best + 2)) ] || fail "stopped after $rows epochs, expected best ($best) + patience (2)"
"${P[@]}" --out es_ref --epochs "$best" --patience 0
"$DIFF" es/best.h5 es_ref/last.h5 0 || fail "best.h5 does not hold the weights of epoch $best"
ok "early stopping after $rows epochs; best.h5 = weights of epoch $best (bitwise)"

# --max-steps 0 writes the initial weights: seeded, and not trained
"$X" train --data d.h5 --model keras-seed --max-steps 0 --out z1 --quiet
"$X" train --data d.h5 --model keras-seed --max-steps 0 --out z2 --quiet
"$X" train --data d.h5 --model keras-seed --max-steps 0 --out z3 --quiet --seed 2
"$DIFF" z1/last.h5 z2/last.h5 0 >/dev/null || fail "--max-steps 0 is not reproducible"
! "$DIFF" z1/last.h5 z3/last.h5 0 >/dev/null || fail "--seed does not change the initial weights"
"$X" info z1/last.h5 | grep -q "epoch 0, step 0" || fail "--max-steps 0 checkpoint is not at step 0"
ok "--max-steps 0 writes seeded initial weights at step 0"

# bad input: one line naming the problem, exit 1 (runtime) or 2 (usage), no crash
expect() { # expect STATUS PATTERN CMD...
  local want=$1 pat=$2; shift 2
  local rc=0; "$@" > out.txt 2> err.txt || rc=$?
  [ $rc -eq "$want" ] || { cat err.txt; fail "'$*' exit $rc, expected $want"; }
  [ "$(wc -l < err.txt)" -eq 1 ] || { cat err.txt; fail "'$*' printed $(wc -l < err.txt) error lines"; }
  grep -q -- "$pat" err.txt || { cat err.txt; fail "'$*' error does not mention '$pat'"; }
}
expect 1 "missing.h5" "$X" train --data missing.h5 --out e1 --quiet
printf 'input 1x32x32\nconv 8 3x3 relu\ndense 1 sigmoid\n' > bad.model
expect 1 "bad.model:3" "$X" train --data d.h5 --model bad.model --out e2 --quiet
printf 'input 1x32x32\nconv 8 40x40 relu\nflatten\ndense 1 sigmoid\n' > big.model
expect 1 "larger than" "$X" train --data d.h5 --model big.model --out e3 --quiet
expect 2 "--frobnicate" "$X" train --frobnicate
expect 2 "--lr" "$X" train --lr abc
expect 1 "--optimizer sgd: the run in a/last.h5 was started with --optimizer adam" "$X" train --data d.h5 --out a --resume --quiet --batch 16 --epochs 4 --optimizer sgd
expect 1 "--model petre-bn: not the network of the run in a/last.h5" "$X" train --data d.h5 --model petre-bn --out a --resume --quiet
ok "bad input gives one-line errors and the documented exit status"

echo "train: $pass passed, 0 failed"
