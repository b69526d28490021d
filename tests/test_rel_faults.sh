#!/usr/bin/env bash
# Faults while training (issue 9): SIGKILL at random moments of a run that checkpoints all the time
# (every surviving last.h5 and best.h5 loads, a new start removes the dead writer's temporaries, the run
# resumed after all the kills ends bitwise equal to one never killed); one rank killed under mpirun -np 2
# (every rank ends, non-zero, within seconds; last.h5 intact; the folder is not left locked); a full disk
# (a small tmpfs, as root): whatever write fails, the run ends with exit 1 and one line with the reason,
# no temporaries, the last checkpoint intact; metrics.csv and train.log failures each made certain.
# Usage: bash tests/test_rel_faults.sh XRAYDP SOURCE_DIR WORK_DIR   (KILLS=N sets the kill count, default 40)
set -uo pipefail
X=$(realpath "$1"); SRC=$(realpath "$2"); W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
MPI=("$SRC/scripts/mpirun.sh")
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
W=$(pwd)
source "$SRC/tests/lib.sh"
export OMP_NUM_THREADS=1
MNT=""
cleanup() { [ -n "$MNT" ] && umount "$MNT" 2>/dev/null; }
trap cleanup EXIT
tmps() { find "$1" -name '*.tmp.*' 2>/dev/null | wc -l; }

"$X" synth d.h5 --n 60 --size 16 --seed 1 >/dev/null     # 42 train, 9 val
printf 'input 1x16x16\nconv 4 3x3 relu\nbatchnorm\nmaxpool 2x2\nflatten\ndense 1 sigmoid\n' > tiny.model

# ---- 1. kill -9 at random moments; one step per epoch, so checkpoints are written all the time
E=250
R=(--data d.h5 --model tiny.model --batch 40 --epochs $E --patience 0 --monitor last --augment default --quiet)
# the reference run also measures how long a start takes here: the kills land from just before the first
# checkpoint of a start to well after it, whatever the machine's speed
"$X" train "${R[@]}" --out ref &
pid=$!
t_start=$(date +%s.%N)
for _ in $(seq 1 1000); do [ -f ref/last.h5 ] && break; sleep 0.01; done
first=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
wait $pid || bad "reference run failed"
kills=${KILLS:-40} survived=0 left=0 done_runs=0 t0=$SECONDS
# a run that the kills let finish is checked and the next kills go to a new folder
check_run() { # check_run DIR: complete, bitwise the reference, no temporaries, each epoch once
  [ "$(tmps "$1")" -eq 0 ] && ok || bad "$1: temporaries left after a new start: $(find "$1" -name '*.tmp.*')"
  "$DIFF" ref/last.h5 "$1/last.h5" 0 --optim >/dev/null && ok || bad "$1: the run killed many times differs from the one never killed"
  "$DIFF" ref/best.h5 "$1/best.h5" 0 >/dev/null && ok || bad "$1: best.h5 after the kills differs"
  [ "$(tail -n +2 "$1/metrics.csv" | cut -d, -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 $E) " ] && ok ||
    bad "$1: metrics.csv after the kills does not hold epochs 1..$E once each"
}
k=k0
for i in $(seq 1 "$kills"); do
  # (an MPI singleton's helper complains on stderr when its process is killed: not this test's business)
  "$X" train "${R[@]}" --out $k --resume auto 2>/dev/null &
  pid=$!
  sleep "$(awk -v f="$first" -v r=$RANDOM 'BEGIN { printf "%.3f", f * (0.8 + 0.4 * r / 32768) + 0.3 * r / 32768 }')"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  left=$((left + $(tmps $k)))
  if [ -f $k/last.h5 ]; then
    survived=$((survived + 1))
    "$X" info $k/last.h5 >/dev/null 2>&1 && ok || bad "kill $i: last.h5 does not load: $("$X" info $k/last.h5 2>&1)"
    [ ! -f $k/best.h5 ] || "$X" info $k/best.h5 >/dev/null 2>&1 || bad "kill $i: best.h5 does not load"
    if "$X" info $k/last.h5 | grep -q "epoch $E,"; then
      "$X" train "${R[@]}" --out $k --resume auto 2>/dev/null # a new start: removes what the last kill left
      check_run $k
      done_runs=$((done_runs + 1))
      k=k$done_runs
    fi
  fi
done
run "$X" train "${R[@]}" --out $k --resume auto
[ "$(rc)" -eq 0 ] && ok || bad "resume after the kills failed: $(cat "$W/err.txt")"
check_run $k
[ "$survived" -ge 10 ] && ok || bad "only $survived of $kills kills came after the first checkpoint: the case tests little"
echo "kill -9: $kills kills in $((SECONDS - t0)) s over $((done_runs + 1)) runs (a start takes ${first} s to its first checkpoint), $survived with a last.h5 (all loaded), $left temporaries seen right after a kill, none after the next start"

# ---- 2. one rank killed under mpirun -np 2: all ranks end non-zero within seconds, last.h5 intact
"$X" synth big.h5 --n 400 --size 48 --seed 5 >/dev/null
"${MPI[@]}" -np 2 "$X" train --data big.h5 --model keras-seed --batch 16 --epochs 100 --patience 0 --quiet \
  --out mp > mp.out 2>&1 &
mp=$!
for _ in $(seq 1 600); do [ -f mp/last.h5 ] && break; sleep 0.05; done
rank1="" rank0=""
# scripts/mpirun.sh runs mpirun as its child (in a session of its own): look at grandchildren too
kids=$(ps -o pid= --ppid $mp)
for p in $kids $(for k in $kids; do ps -o pid= --ppid "$k"; done); do
  [ "$(readlink /proc/$p/exe 2>/dev/null)" = "$X" ] || continue
  r=$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  [ "$r" = 1 ] && rank1=$p
  [ "$r" = 0 ] && rank0=$p
done
if [ -n "$rank1" ] && [ -n "$rank0" ] && [ -f mp/last.h5 ]; then
  t1=$SECONDS
  kill -9 "$rank1"
  rc=0
  for _ in $(seq 1 600); do kill -0 $mp 2>/dev/null || break; sleep 0.05; done
  wait $mp || rc=$?
  dt=$((SECONDS - t1))
  [ $rc -ne 0 ] && ok || bad "mpirun exited 0 after a rank was killed"
  [ $dt -le 30 ] && ok || bad "the job took $dt s to end after a rank was killed"
  gone=0
  for _ in $(seq 1 100); do
    st=$(ps -o stat= -p "$rank0" 2>/dev/null)
    case $st in ''|Z*) gone=1; break ;; esac
    sleep 0.05
  done
  [ $gone -eq 1 ] && ok || bad "rank 0 still runs after rank 1 was killed"
  "$X" info mp/last.h5 >/dev/null && ok || bad "last.h5 after a rank was killed does not load"
  "$X" train --out mp --resume --epochs 2 --quiet && ok || bad "resume after a killed rank failed (stale lock?)"
  [ "$(tmps mp)" -eq 0 ] && ok || bad "temporaries left after the resume"
  echo "mpirun -np 2: rank 1 killed, job ended with status $rc in $dt s"
else
  bad "could not find the ranks of mpirun (pid $mp): $(ps -o pid=,args= --ppid $mp)"
  kill $mp 2>/dev/null; wait $mp 2>/dev/null
fi

# ---- 3. a full disk (tmpfs; needs root)
if [ "$(id -u)" -ne 0 ] || ! { mkdir -p mnt && mount -t tmpfs -o size=96k tmpfs mnt 2>/dev/null; }; then
  echo "note: not root or no tmpfs: the full-disk cases are not run"
  finish rel_faults
  exit
fi
MNT=$W/mnt
F=(--data d.h5 --model tiny.model --batch 8 --epochs 100 --patience 0 --monitor last --quiet)
# a. whatever write fails first, at several disk sizes
failed=0
sizes="12k 20k 28k 36k 44k 52k 60k 68k 76k 84k 100k 200k"
for size in $sizes; do
  umount "$MNT"; mount -t tmpfs -o size=$size tmpfs "$MNT" || { bad "mount size=$size"; continue; }
  run "$X" train "${F[@]}" --out "$MNT/r"
  case $(rc) in
    0) ;;
    1) failed=$((failed + 1))
       [ "$(wc -l < "$W/err.txt")" -eq 1 ] && grep -q "$MNT/r/.*: .*No space left on device" "$W/err.txt" && ok ||
         bad "size $size: message: $(cat "$W/err.txt")"
       [ ! -s "$W/out.txt" ] && ok || bad "size $size: stdout on failure" ;;
    *) bad "size $size: exit $(rc): $(cat "$W/err.txt")" ;;
  esac
  [ "$(tmps "$MNT/r")" -eq 0 ] && ok || bad "size $size: temporaries left: $(ls -a "$MNT/r")"
  [ ! -f "$MNT/r/last.h5" ] || "$X" info "$MNT/r/last.h5" >/dev/null && ok || bad "size $size: last.h5 does not load"
  [ ! -f "$MNT/r/best.h5" ] || "$X" info "$MNT/r/best.h5" >/dev/null && ok || bad "size $size: best.h5 does not load"
  rows=$(($(wc -l < "$MNT/r/metrics.csv" 2>/dev/null || echo 1) - 1))
  [ "$(tail -c 1 "$MNT/r/metrics.csv" 2>/dev/null | od -An -c | tr -d ' ')" = '\n' ] && ok || bad "size $size: metrics.csv ends mid-row"
  echo "full disk at $size: exit $(rc), $rows epochs in metrics.csv $(sed -n 's|.*/mnt/r/\([^:]*\):.*|(\1 failed)|p' "$W/err.txt")"
done
[ $failed -ge 6 ] && ok || bad "only $failed of 12 disk sizes ran out of space: the case tests little"

# b. metrics.csv: one epoch done, the disk filled up; the next epoch's row cannot be written
umount "$MNT"; mount -t tmpfs -o size=256k tmpfs "$MNT" || bad "mount"
"$X" train "${F[@]}" --epochs 1 --out "$MNT/c" || bad "first epoch on tmpfs failed"
cp "$MNT/c/last.h5" c_last.h5; cp "$MNT/c/metrics.csv" c_metrics.csv
dd if=/dev/zero of="$MNT/fill" bs=4k 2>/dev/null
fails_with 1 "$MNT/c/metrics.csv: cannot write: No space left on device" "metrics.csv on a full disk" -- \
  "$X" train --out "$MNT/c" --resume --epochs 2 --quiet
cmp -s "$MNT/c/last.h5" c_last.h5 && cmp -s "$MNT/c/metrics.csv" c_metrics.csv && ok ||
  bad "metrics.csv failure changed last.h5 or metrics.csv"
[ "$(tmps "$MNT/c")" -eq 0 ] && ok || bad "metrics.csv failure left temporaries"

# c. train.log: its next byte needs a new block of the full disk
size=$(stat -c %s "$MNT/c/train.log")
truncate -s $(((size / 4096 + 1) * 4096)) "$MNT/c/train.log"
fails_with 1 "$MNT/c/train.log: cannot write: No space left on device" "train.log on a full disk" -- \
  "$X" train --out "$MNT/c" --resume --epochs 2 --quiet
cmp -s "$MNT/c/last.h5" c_last.h5 && ok || bad "train.log failure changed last.h5"
rm -f "$MNT/fill"
"$X" train --out "$MNT/c" --resume --epochs 2 --quiet && ok || bad "resume once the disk has room failed"
[ "$(($(wc -l < "$MNT/c/metrics.csv") - 1))" -eq 2 ] && ok || bad "metrics.csv after the disk had room again"

finish rel_faults
