#!/usr/bin/env bash
# Distributed training under real Open MPI (issue 4): agreement across rank counts, --sync-bn, bitwise
# determinism for a fixed rank count, preemption by SIGUSR1 and resume (same and other rank count),
# early stopping, and a failing rank ending the job quickly.
set -euo pipefail
X=$1; SRC=$2; W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
MPI=("$SRC/scripts/mpirun.sh")
rm -rf "$W"; mkdir -p "$W"; cd "$W"
export OMP_NUM_THREADS=1
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

"$X" synth d.h5 --n 200 --size 32 --seed 3 >/dev/null   # train split: 140 images

# np 1, 2, 4: same global batch (the whole train split, in file order), 3 steps -> weights agree to 1e-5
for opt in sgd adam; do
  for np in 1 2 4; do
    "${MPI[@]}" -np $np "$X" train --data d.h5 --model keras-seed --batch 140 --no-shuffle --max-steps 3 \
      --optimizer $opt --out $opt$np --quiet
  done
  "$DIFF" ${opt}2/last.h5 ${opt}1/last.h5 1e-5 || fail "$opt: np 2 vs np 1 beyond 1e-5"
  "$DIFF" ${opt}4/last.h5 ${opt}1/last.h5 1e-5 || fail "$opt: np 4 vs np 1 beyond 1e-5"
done
ok "np 1, 2, 4 agree to 1e-5 after 3 full-batch steps (SGD and Adam, dropout active)"

# batchnorm: --sync-bn makes the statistics global, so np 2 matches np 1; without it they differ
for np in 1 2; do
  for bn in sync local; do
    extra=(); [ $bn = sync ] && extra=(--sync-bn)
    "${MPI[@]}" -np $np "$X" train --data d.h5 --model petre-bn --batch 140 --no-shuffle --max-steps 3 \
      --optimizer sgd --out bn$bn$np --quiet "${extra[@]}"
  done
done
"$DIFF" bnsync2/last.h5 bnsync1/last.h5 1e-5 || fail "--sync-bn: np 2 vs np 1 beyond 1e-5"
! "$DIFF" bnlocal2/last.h5 bnlocal1/last.h5 1e-5 >/dev/null || fail "local batchnorm statistics should differ across np"
ok "--sync-bn: np 2 = np 1 to 1e-5 (weights and running statistics); local statistics differ as they should"

# the default model (residual graph, sync-bn, AdamW, EMA, augmentation and dropout on): np 2 = np 1
for np in 1 2; do
  "${MPI[@]}" -np $np "$X" train --data d.h5 --model default --batch 140 --no-shuffle --max-steps 3 --out res$np --quiet
done
"$DIFF" res2/last.h5 res1/last.h5 1e-5 || fail "default recipe: np 2 vs np 1 weights beyond 1e-5"
"$DIFF" res2/last.h5 res1/last.h5 5e-5 --optim || fail "default recipe: np 2 vs np 1 moments/EMA beyond 5e-5"
ok "default recipe (resnet-s, sync-bn, AdamW, EMA, augmentation, dropout): np 2 = np 1, weights to 1e-5, moments and EMA to 5e-5"

# fixed rank count -> bitwise identical (shuffles, augmentation, dropout all active)
T=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 3 --patience 0 --augment default --quiet)
"${MPI[@]}" -np 2 "${T[@]}" --out r1
"${MPI[@]}" -np 2 "${T[@]}" --out r2
"$DIFF" r1/last.h5 r2/last.h5 0 --optim >/dev/null || fail "np 2 runs with identical command lines differ"
"${MPI[@]}" -np 2 "${T[@]}" --out r3 --mem-cap 0
"$DIFF" r1/last.h5 r3/last.h5 0 --optim >/dev/null || fail "np 2 streamed shards differ from in-memory shards"
ok "np 2, identical command lines: bitwise identical weights and optimizer state, streamed or in memory"

# preemption: SIGUSR1 to mpirun (what SLURM's --signal sends) -> all ranks stop at a step boundary, exit 0
"$X" synth big.h5 --n 600 --size 64 --seed 5 >/dev/null
S=("$X" train --data big.h5 --model keras-seed --batch 16 --epochs 10 --patience 0)
"${MPI[@]}" -np 2 "${S[@]}" --out full --quiet
"${MPI[@]}" -np 2 "${S[@]}" --out pre > pre.out 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f pre/metrics.csv ] && [ "$(wc -l < pre/metrics.csv)" -ge 2 ] && break
  sleep 0.05
done
t0=$(date +%s)
kill -USR1 $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || { cat pre.out; fail "SIGUSR1: mpirun exit status $rc, expected 0"; }
grep -q interrupted pre.out || { cat pre.out; fail "SIGUSR1: no 'interrupted' message"; }
rows=$(($(wc -l < pre/metrics.csv) - 1))
[ "$rows" -lt 10 ] || fail "the signal arrived after the run finished"
cp -r pre pre_np1
"${MPI[@]}" -np 2 "${S[@]}" --out pre --resume --quiet
"$DIFF" full/last.h5 pre/last.h5 0 --optim || fail "np 2 run preempted and resumed differs from the uninterrupted one"
ok "SIGUSR1 after $rows epochs: exit 0 in $(($(date +%s) - t0)) s, resume ends bitwise identical"

# a checkpoint does not depend on the rank count: resume the preempted run with one rank
"$X" train --data big.h5 --model keras-seed --batch 16 --epochs 10 --patience 0 --out pre_np1 --resume --quiet
[ "$(($(wc -l < pre_np1/metrics.csv) - 1))" -eq 10 ] || fail "resume with np 1 did not finish all epochs"
# (not bitwise: the remaining epochs shuffle one shard instead of two)
steps=$("$X" info full/last.h5 | sed -n 's/.*epoch 10, step \([0-9]*\).*/\1/p')
"$X" info pre_np1/last.h5 | grep -q "epoch 10, step $steps" || fail "resume with np 1 did not end at epoch 10, step $steps"
ok "resume with another rank count (2 -> 1) finishes the run at the same epoch and step"

# early stopping under MPI: lr drops to ~0 after 2 epochs
P=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 20 --patience 2 --min-delta 1e-4 --quiet
   --schedule step:2:1e-12 --lr 3e-3)
"${MPI[@]}" -np 2 "${P[@]}" --out es
rows=$(($(wc -l < es/metrics.csv) - 1))
best=$("$X" info es/best.h5 | sed -n 's/.*best epoch \([0-9]*\).*/\1/p')
[ "$rows" -lt 20 ] && [ "$rows" -eq $((best + 2)) ] || fail "early stopping: $rows epochs, best $best"
"${MPI[@]}" -np 2 "${P[@]}" --out es_ref --epochs "$best" --patience 0
"$DIFF" es/best.h5 es_ref/last.h5 0 >/dev/null || fail "best.h5 does not hold epoch $best's weights"
ok "np 2 early stopping after $rows epochs, best.h5 = epoch $best (bitwise)"

# a rank that cannot read its shard ends the whole job, non-zero, in seconds (MPMD: rank 1 gets a broken file)
head -c 20000 big.h5 > broken.h5
t0=$(date +%s)
rc=0
timeout 60 "${MPI[@]}" -np 1 "$X" train --data big.h5 --model keras-seed --batch 16 --epochs 50 --out f --quiet : \
  -np 1 "$X" train --data broken.h5 --model keras-seed --batch 16 --epochs 50 --out f --quiet > fail.out 2>&1 || rc=$?
dt=$(($(date +%s) - t0))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat fail.out; fail "failing rank: exit status $rc (124 = hung)"; }
grep -q "broken.h5" fail.out || { cat fail.out; fail "failing rank's message does not name the file"; }
[ $dt -le 30 ] || fail "failing rank took $dt s to end the job"
ok "a rank failing to read its data ends the job with status $rc in ${dt} s, naming the file"

# usage: global batch not divisible by the rank count
rc=0; "${MPI[@]}" -np 2 "$X" train --data d.h5 --batch 15 --out u --quiet > u.out 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "divisible" u.out || { cat u.out; fail "indivisible batch: status $rc"; }
ok "indivisible --batch is refused"

# the run folder under MPI (issue 9): rank 0 takes the lock, every rank exits 1, one line; the same for an
# option contradicting the run being resumed
"$X" train --data big.h5 --model keras-seed --batch 16 --epochs 100 --patience 0 --quiet --out busy &
bp=$!
for _ in $(seq 1 200); do grep -q "^pid $bp " busy/.lock 2>/dev/null && break; sleep 0.05; done
rc=0; timeout 60 "${MPI[@]}" -np 2 "$X" train --data d.h5 --batch 16 --out busy --quiet > busy.out 2>&1 || rc=$?
[ $rc -eq 1 ] || { cat busy.out; fail "np 2 into a folder in use: exit $rc, expected 1"; }
[ "$(grep -c '^xray-dp' busy.out)" -eq 1 ] && grep -q "^xray-dp train: busy: run folder is in use by another training (pid $bp on host" busy.out ||
  { cat busy.out; fail "np 2 into a folder in use: not exactly one line naming the holder"; }
kill -TERM $bp; wait $bp || fail "the lock holder did not stop cleanly on SIGTERM"
rc=0; timeout 60 "${MPI[@]}" -np 2 "$X" train --out busy --resume --batch 32 --quiet > busy.out 2>&1 || rc=$?
[ $rc -eq 1 ] && [ "$(grep -c '^xray-dp' busy.out)" -eq 1 ] && grep -q -- "--batch 32: the run in busy/last.h5 was started with --batch 16" busy.out ||
  { cat busy.out; fail "np 2 resume with a contradicting --batch: exit $rc"; }
"${MPI[@]}" -np 2 "$X" train --out busy --resume --max-steps 1 --quiet || fail "np 2 resume of a 1-rank run failed"
ok "run folder under np 2: a folder in use and a contradicting option end every rank with status 1 and one line"

echo "dist: $pass passed, 0 failed"
