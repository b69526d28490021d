#!/usr/bin/env bash
# Training UX as people run it (issue 11, part 4): Ctrl-C (one: finish the step, save, say how to resume,
# exit 0; two: stop at once, exit 130, last.h5 intact), alone and under scripts/mpirun.sh -np 2; the
# progress bar (--progress into a file: validation and a whole-run ETA, printed once under np 2);
# --schedule plateau (the lr drops, bad values exit 2, --resume continues it bitwise); the quickstart's
# closing sentence.
set -euo pipefail
X=$1; SRC=$2; W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
MPI=("$SRC/scripts/mpirun.sh")
rm -rf "$W"; mkdir -p "$W"; cd "$W"
export OMP_NUM_THREADS=1
set -m # background jobs in their own process group, SIGINT not ignored: what a terminal's Ctrl-C reaches
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

"$X" synth d.h5 --n 600 --size 64 --seed 5 >/dev/null  # 420 train / 90 val, 26 steps of 16
"$X" synth s.h5 --n 300 --size 128 --seed 5 >/dev/null # slow steps (batch 128 at 128 px)
T=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 10 --patience 0)

# waits until DIR/metrics.csv has N epoch rows (or DIR/last.h5 exists with N=0)
wait_rows() {
  for _ in $(seq 1 1200); do
    if [ "$2" -eq 0 ]; then [ -f "$1/last.h5" ] && return 0
    else [ -f "$1/metrics.csv" ] && [ "$(wc -l < "$1/metrics.csv")" -gt "$2" ] && return 0; fi
    sleep 0.05
  done
  fail "$1: no progress"
}
# ctrl_c PGID: what a terminal does (SIGINT to the foreground process group)
ctrl_c() { kill -INT -- "-$1"; }

# --- one Ctrl-C, one process: exit 0, a message on the spot, the resume command, last.h5 mid-epoch
"${T[@]}" --out c1 > c1.out 2>&1 &
p=$!
wait_rows c1 1
ctrl_c $p
rc=0; wait $p || rc=$?
[ $rc -eq 0 ] || { cat c1.out; fail "Ctrl-C: exit $rc, expected 0"; }
grep -q "Ctrl-C: finishing this step and saving last.h5 (Ctrl-C again to stop at once)" c1.out ||
  { cat c1.out; fail "Ctrl-C: no message saying what happens"; }
grep -q "^xray-dp: to continue: xray-dp train --out c1 --resume$" c1.out || { cat c1.out; fail "Ctrl-C: no resume command"; }
"$X" info c1/last.h5 > /dev/null || fail "Ctrl-C: last.h5 unreadable"
"${T[@]}" --out c1 --resume --quiet
"${T[@]}" --out c1ref --quiet
"$DIFF" c1ref/last.h5 c1/last.h5 0 --optim > /dev/null || fail "Ctrl-C then the printed resume command: not bitwise the uninterrupted run"
ok "one Ctrl-C: exit 0, says what happens and how to resume; resuming ends bitwise as the uninterrupted run"

# --- two Ctrl-C, one process: exit 130 at once, last.h5 as last written (readable, a complete epoch)
"$X" train --data s.h5 --model keras-seed --batch 128 --epochs 50 --patience 0 --out c2 > c2.out 2>&1 &
p=$!
wait_rows c2 1
ctrl_c $p; sleep 0.2; ctrl_c $p
rc=0; wait $p || rc=$?
[ $rc -eq 130 ] || { cat c2.out; fail "two Ctrl-C: exit $rc, expected 130"; }
grep -q "interrupted twice: stopping now" c2.out || { cat c2.out; fail "two Ctrl-C: no message"; }
"$X" info c2/last.h5 > /dev/null || fail "two Ctrl-C: last.h5 unreadable"
ls c2 | grep -q tmp && fail "two Ctrl-C: a temporary left in the run folder"  # (the next run would clean it too)
ok "two Ctrl-C: exit 130 at once, last.h5 intact"

# --- under scripts/mpirun.sh -np 2 (Open MPI's mpirun kills the ranks 2 s after SIGINT: the wrapper turns the
# first Ctrl-C into SIGUSR1, which mpirun forwards)
"${MPI[@]}" -np 2 "${T[@]}" --out m1 > m1.out 2>&1 &
p=$!
wait_rows m1 1
ctrl_c $p
rc=0; wait $p || rc=$?
[ $rc -eq 0 ] || { cat m1.out; fail "np 2 Ctrl-C: exit $rc, expected 0"; }
grep -q "^xray-dp: to continue: mpirun -np 2 xray-dp train --out m1 --resume$" m1.out ||
  { cat m1.out; fail "np 2 Ctrl-C: no resume command"; }
"${MPI[@]}" -np 2 "${T[@]}" --out m1 --resume --quiet
"${MPI[@]}" -np 2 "${T[@]}" --out m1ref --quiet
"$DIFF" m1ref/last.h5 m1/last.h5 0 --optim > /dev/null || fail "np 2 Ctrl-C then resume: not bitwise the uninterrupted run"
"${MPI[@]}" -np 2 "$X" train --data s.h5 --model keras-seed --batch 128 --epochs 50 --patience 0 --out m2 > m2.out 2>&1 &
p=$!
wait_rows m2 1
ctrl_c $p; sleep 0.2; ctrl_c $p
t0=$(date +%s)
rc=0; wait $p || rc=$?
[ $rc -eq 130 ] || { cat m2.out; fail "np 2 two Ctrl-C: exit $rc, expected 130"; }
[ $(($(date +%s) - t0)) -le 10 ] || fail "np 2 two Ctrl-C: took over 10 s"
"$X" info m2/last.h5 > /dev/null || fail "np 2 two Ctrl-C: last.h5 unreadable"
ok "np 2 under scripts/mpirun.sh: one Ctrl-C exits 0 and resumes bitwise; two exit 130 at once, last.h5 intact"

# --- the progress bar: --progress into a file shows the steps, the validation and the ETA of the epoch and the
# whole run; under np 2 rank 0 alone draws it (each epoch's first step once); without it (not a terminal) the
# plain epoch lines, no escape sequences
P=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 2 --patience 0)
"${P[@]}" --out b1 --progress > b1.out
"${MPI[@]}" -np 2 "${P[@]}" --out b2 --progress > b2.out
for f in b1 b2; do
  tr '\r' '\n' < $f.out > $f.lines
  grep -q "^.\[Kepoch 1/2 \[=*>*\.*\] [0-9]*/26  .*ETA epoch [0-9]*:[0-9][0-9], run [0-9]*:[0-9][0-9]" $f.lines ||
    { cat $f.lines; fail "$f: no step bar with the ETA of the epoch and the run"; }
  grep -q "^.\[Kepoch 2/2 validating \[========================\] 90/90  ETA run 0:00" $f.lines ||
    { cat $f.lines; fail "$f: no validation bar"; }
  [ "$(grep -c "\] 1/26 " $f.lines)" -eq 2 ] || { cat $f.lines; fail "$f: each epoch's first step not drawn exactly once"; }
  [ "$(grep -c "epoch 2/2: loss" $f.lines)" -eq 1 ] || fail "$f: epoch line not printed once"
done
"${MPI[@]}" -np 2 "${P[@]}" --out b3 > b3.out
! grep -q "ETA\|$(printf '\033')" b3.out || { cat -A b3.out; fail "np 2 into a file without --progress: a bar or escapes"; }
[ "$(grep -c "^epoch [12]/2: loss" b3.out)" -eq 2 ] || { cat b3.out; fail "np 2 into a file: not the 2 plain epoch lines"; }
ok "--progress: steps, validation, ETA of epoch and run, once under np 2; into a file without it: plain epoch lines"

# --- --schedule plateau: patience 1, factor 0.5: the lr column halves after an epoch without val_loss
# improvement; --resume from last.h5 mid-epoch (before and after a drop) ends bitwise as the whole run
Q=("$X" train --data d.h5 --model keras-seed --batch 16 --epochs 6 --patience 0 --lr 3e-3 --schedule plateau:0.5:1 --quiet)
"${Q[@]}" --out q
lrs=$(cut -d, -f11 q/metrics.csv | tail -n +2 | tr '\n' ' ')
[ "$(head -1 q/metrics.csv | cut -d, -f11)" = lr ] || fail "metrics.csv: column 11 is not lr"
[ "$(cut -d, -f11 q/metrics.csv | tail -n +2 | sort -u | wc -l)" -ge 2 ] || fail "plateau: the lr never dropped ($lrs)"
prev=""; bad=0
while IFS=, read -r ep tl ta vl rest; do
  lr=$(cut -d, -f11 <<< "$ep,$tl,$ta,$vl,$rest")
  if [ -n "$prev" ]; then
    awk -v a="$prev" -v b="$lr" 'BEGIN { exit !(b == a || (b > 0.49 * a && b < 0.51 * a)) }' || bad=1
  fi
  prev=$lr
done < <(tail -n +2 q/metrics.csv)
[ $bad -eq 0 ] || fail "plateau: the lr changed by something other than x 0.5 ($lrs)"
for ms in 60 140; do
  "${Q[@]}" --out q$ms --max-steps $ms
  "${Q[@]}" --out q$ms --resume
  "$DIFF" q/last.h5 q$ms/last.h5 0 --optim > /dev/null || fail "plateau: stopped at step $ms and resumed: not bitwise the whole run"
  cmp -s <(cut -d, -f1-11 q/metrics.csv) <(cut -d, -f1-11 q$ms/metrics.csv) || fail "plateau: resumed at step $ms: metrics differ"
done
for v in plateau:1:2 plateau:0:2 plateau:0.5 plateau:0.5:0 plateau:0.5:x plateau:nan:2 plateaux plateau: plateau:0.5:2:1; do
  rc=0; "$X" train --data d.h5 --schedule "$v" --out qbad --quiet > qbad.out 2>&1 || rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l < qbad.out)" -eq 1 ] && grep -q "^xray-dp train: --schedule: expected .*plateau\[:FACTOR:PATIENCE\].*got '$v'" qbad.out ||
    { cat qbad.out; fail "--schedule $v: exit $rc"; }
  [ ! -e qbad ] || fail "--schedule $v: left a run folder"
done
ok "--schedule plateau: lr $lrs; resumed before and after a drop: bitwise; 9 bad values exit 2 with one line"

# --- the quickstart ends, after eval, with the sentence that says what the numbers mean
tail -4 "$SRC/scripts/quickstart.sh" | head -1 | grep -q "eval .*--split test --threshold auto" || fail "quickstart: eval is not the last step before the sentence"
msg=$(bash -c "$(tail -3 "$SRC/scripts/quickstart.sh")")
grep -q "test split, which training never saw" <<< "$msg" && grep -q "threshold chosen on the validation split to catch >= 95%" <<< "$msg" ||
  fail "quickstart: no closing sentence ($msg)"
ok "quickstart: ends with what the numbers mean"

echo "ux: $pass passed, 0 failed"
