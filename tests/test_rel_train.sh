#!/usr/bin/env bash
# Training reliability (issue 9): the run folder's lock (two trainings at once, a folder holding a run,
# --overwrite, kill -9 of the holder), the val split (empty, one class, none), NaN/Inf (--detect-anomaly
# names the step and the layer; a non-finite loss or metric never decides anything and never reaches a
# checkpoint), option values (NaN, Inf, out of range, empty paths: exit 2 and nothing created),
# --mem-limit, --out naming a file or a read-only folder, SIGTERM/SIGINT in the first step.
# Usage: bash tests/test_rel_train.sh XRAYDP SOURCE_DIR WORK_DIR
set -uo pipefail
X=$(realpath "$1"); SRC=$(realpath "$2"); W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
TOOL=$(dirname "$X")/test_rel_train_unit
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
W=$(pwd)
source "$SRC/tests/lib.sh"
[ -x "$TOOL" ] || { echo "FAIL: no $TOOL (built with the tests)"; exit 1; }
no_tmp() { # no_tmp DIR WHAT: no temporary file of any writer left in DIR
  local left; left=$(find "$1" -name '*.tmp.*' 2>/dev/null)
  [ -z "$left" ] && ok || bad "$2: temporaries left: $left"
}
export OMP_NUM_THREADS=1

"$X" synth d.h5 --n 120 --size 16 --seed 3 >/dev/null
"$X" synth big.h5 --n 400 --size 48 --seed 5 >/dev/null
printf 'input 1x16x16\nconv 6 3x3 relu\nbatchnorm\nmaxpool 2x2\nflatten\ndense 1 sigmoid\n' > bn.model
T=(--data d.h5 --model bn.model --batch 8 --epochs 3 --patience 0 --quiet)
B=(--data big.h5 --model keras-seed --batch 16 --epochs 3 --patience 0 --quiet) # a few seconds

# ---- 1. two trainings into one folder at once: the second exits 1 naming the first, which goes on alone
"$X" train "${B[@]}" --out ref || bad "reference run failed"
"$X" train "${B[@]}" --epochs 200 --out L &
pid=$!
for _ in $(seq 1 200); do grep -q "^pid $pid " L/.lock 2>/dev/null && break; sleep 0.05; done
fails_with 1 "L: run folder is in use by another training (pid $pid on host $(hostname))" "second training" -- \
  "$X" train "${T[@]}" --out L
fails_with 1 "L: run folder is in use by another training (pid $pid" "--resume into a folder in use" -- \
  "$X" train --out L --resume
fails_with 1 "L: run folder is in use by another training (pid $pid" "--overwrite of a folder in use" -- \
  "$X" train "${T[@]}" --out L --overwrite
fails_with 1 "L: run folder is in use by another training (pid $pid" "--resume auto into a folder in use" -- \
  "$X" train "${T[@]}" --out L --resume auto
for _ in $(seq 1 400); do [ "$(wc -l < L/metrics.csv 2>/dev/null || echo 0)" -ge 2 ] && break; sleep 0.05; done
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] && ok || bad "the first training exited $rc"
n=$(($(wc -l < L/metrics.csv) - 1))
[ "$(tail -n +2 L/metrics.csv | cut -d, -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 $n) " ] && ok || bad "metrics.csv rows mixed: $(cat L/metrics.csv)"
[ "$(grep -c '^=== ' L/train.log)" -eq 1 ] && ok || bad "train.log holds more than one run"
"$X" info L/last.h5 | grep -q "command: train --data big.h5 --model keras-seed .* --out L$" && ok ||
  bad "last.h5 is not the first run's: $("$X" info L/last.h5 2>&1 | grep command)"
cp L/last.h5 L_last.h5; cp L/best.h5 L_best.h5

# ---- 2. a new run into a folder holding one is refused; --overwrite replaces it cleanly
fails_with 1 "L: already holds a run (last.h5, best.h5, metrics.csv with $n epoch" \
  "new run into a used folder" -- "$X" train "${T[@]}" --out L
cmp -s L/best.h5 L_best.h5 && cmp -s L/last.h5 L_last.h5 && ok || bad "a refused run changed best.h5/last.h5"
fails_with 1 "missing.h5" "--overwrite with a bad dataset" -- "$X" train "${T[@]}" --data missing.h5 --out L --overwrite
cmp -s L/last.h5 L_last.h5 && [ "$(grep -c '^=== ' L/train.log)" -eq 1 ] && ok ||
  bad "--overwrite that failed during setup removed the old run"
"$X" train "${T[@]}" --out L --overwrite && ok || bad "--overwrite failed"
"$X" train "${T[@]}" --out fresh || bad "fresh run failed"
"$DIFF" fresh/last.h5 L/last.h5 0 --optim >/dev/null &&
  [ "$(cut -d, -f1-11 fresh/metrics.csv)" = "$(cut -d, -f1-11 L/metrics.csv)" ] && ok ||
  bad "--overwrite did not give the same run as a fresh folder"
[ "$(grep -c '^=== ' L/train.log)" -eq 1 ] && ok || bad "--overwrite kept the old train.log"
mkdir -p plain; echo notes > plain/notes.txt
"$X" train "${T[@]}" --out plain && [ -f plain/notes.txt ] && ok || bad "a folder without a run was refused"

# ---- 3. kill -9 of the lock holder: no stale lock, --resume continues to the same weights (the lr is
# constant, so epoch N's weights do not depend on --epochs: compare with a reference of as many epochs)
"$X" train "${B[@]}" --epochs 200 --out K &
pid=$!
for _ in $(seq 1 400); do [ -f K/last.h5 ] && break; sleep 0.05; done
sleep 0.$((RANDOM % 3))
kill -9 $pid; wait $pid 2>/dev/null
done_epochs=$("$X" info K/last.h5 | sed -n 's/.*epoch \([0-9]*\), step.*/\1/p')
e2=$((done_epochs + 1))
"$X" train --out K --resume --epochs $e2 --quiet && ok || bad "--resume after kill -9 of the holder failed"
"$X" train "${B[@]}" --epochs $e2 --out ref$e2 || bad "reference run of $e2 epochs failed"
"$DIFF" ref$e2/last.h5 K/last.h5 0 --optim >/dev/null && ok || bad "killed and resumed run differs from the uninterrupted one"
no_tmp K "kill -9 then resume"

# ---- 4. the val split: empty or one class is refused at start (nothing created); none is said
cp d.h5 emptyval.h5; "$TOOL" set-rows emptyval.h5 val 0 || bad "cannot empty the val split"
fails_with 1 "emptyval.h5: the val split is empty" "empty val split" -- "$X" train "${T[@]}" --data emptyval.h5 --out v1
[ ! -e v1 ] && ok || bad "a refused start left v1 behind"
for s in train val test; do for c in NORMAL PNEUMONIA; do mkdir -p src/$s/$c; done; done
for i in 1 2 3 4 5 6 7 8; do pgm src/train/NORMAL/n$i.pgm 20 22 $i 0; pgm src/train/PNEUMONIA/p$i.pgm 20 22 $((i + 50)) 90; done
for i in 1 2 3; do
  pgm src/val/NORMAL/n$i.pgm 20 22 $((i + 100)) 0
  pgm src/test/NORMAL/n$i.pgm 20 22 $((i + 200)) 0; pgm src/test/PNEUMONIA/p$i.pgm 20 22 $((i + 300)) 90
done
"$X" pack src oneclass.h5 --size 16 --val-fraction 0 >/dev/null 2>&1 || bad "pack (one-class val) failed"
fails_with 1 "oneclass.h5: the val split has no PNEUMONIA images (3 images" "one-class val split" -- \
  "$X" train "${T[@]}" --data oneclass.h5 --out v2
[ ! -e v2 ] && ok || bad "a refused start left v2 behind"
rm -rf src/val
"$X" pack src noval.h5 --size 16 --val-fraction 0 >/dev/null 2>&1 || bad "pack (no val) failed"
run "$X" train --data noval.h5 --model bn.model --batch 8 --epochs 2 --out v3
[ "$(rc)" -eq 0 ] && grep -q "no val split" "$W/out.txt" && grep -q "threshold 0.5, not chosen: no val split" "$W/out.txt" &&
  grep -q "no val split" v3/train.log && ok || bad "training without a val split does not say so: $(cat "$W/out.txt" "$W/err.txt")"
grep -q "for >= 95% sensitivity" "$W/out.txt" && bad "without a val split the threshold is claimed to be chosen" || ok
# ... and the checkpoint knows: --threshold auto refuses the unchosen 0.5, info says so, --threshold T works
fails_with 1 "v3/best.h5: its threshold 0.5 was not chosen (the run had no val split)" "eval --threshold auto, no val" -- \
  "$X" eval --ckpt v3/best.h5 --data noval.h5 --split train --threshold auto
"$X" info v3/best.h5 2>&1 | grep -q "threshold 0.5000 (not chosen: no val split)" && ok || bad "info does not say the threshold was not chosen"
fails_with 1 "v3/best.h5: its threshold 0.5 was not chosen" "predict --threshold auto, no val" -- \
  "$X" predict --ckpt v3/best.h5 --threshold auto src/test/NORMAL/n1.pgm
fails_with 1 "v3/best.h5: its threshold 0.5 was not chosen" "serve, no val" -- \
  "$X" serve --ckpt v3/best.h5 --port 0
run "$X" eval --ckpt v3/best.h5 --data noval.h5 --split train --threshold 0.5
[ "$(rc)" -eq 0 ] && ok || bad "eval --threshold 0.5 of a run without val: exit $(rc): $(cat "$W/err.txt")"

# ---- 5. NaN/Inf: --detect-anomaly names the step and the layer; no NaN decision, no NaN checkpoint
fails_with 1 "" "--detect-anomaly" -- "$X" train "${T[@]}" --epochs 6 --optimizer sgd --lr 10 --out n1 --detect-anomaly
msg=$(cat "$W/err.txt")
grep -Eq "^xray-dp train: step [0-9]+: non-finite (activation in the forward pass, in|gradient in|weight in) layer [0-9]+ \((conv|batchnorm|maxpool|flatten|dense), line [0-9]+ of the model\).*; stopped, n1/last.h5 keeps epoch [0-9]+, step [0-9]+$" <<< "$msg" &&
  ok || bad "--detect-anomaly message: $msg"
kept=$(sed -n 's/.*keeps epoch \([0-9]*\), step \([0-9]*\)$/epoch \1, step \2/p' <<< "$msg")
"$X" info n1/last.h5 | grep -q "$kept," && ok || bad "last.h5 after the anomaly is not the one named ($kept)"
no_tmp n1 "anomaly"
fails_with 1 "training diverged: loss is" "divergence" -- "$X" train "${T[@]}" --epochs 6 --optimizer sgd --lr 10 --out n2
"$X" info n2/last.h5 >/dev/null && ok || bad "last.h5 after divergence does not load"
# train loss finite, val loss NaN (weight decay blows the batchnorm statistics up): never a decision,
# never a checkpoint of it
fails_with 1 "" "NaN validation metric" -- "$X" train "${T[@]}" --epochs 5 --optimizer sgd --lr 10 --weight-decay 10 --out n3
grep -Eq "epoch [0-9]+: val_loss is -?nan; stopped|training diverged|non-finite" "$W/err.txt" && ok ||
  bad "NaN metric: $(cat "$W/err.txt")"
for f in n3/best.h5 n3/last.h5; do [ ! -e "$f" ] || "$X" info "$f" >/dev/null || bad "$f does not load"; done
ok

# ---- 6. option values: exit 2, one line naming the option, nothing created
i=0
while IFS='|' read -r opt val name <&3; do
  i=$((i + 1))
  fails_with 2 "${name:-$opt}" "$opt '$val'" -- "$X" train "${T[@]}" --out u$i "$opt" "$val"
  [ ! -e u$i ] && ok || bad "$opt '$val' created u$i"
done 3<<'EOF'
--schedule|step:1:nan
--schedule|step:1:inf
--schedule|step:1:-0.5
--schedule|step:1:2
--schedule|step:0:0.5
--schedule|step:99999999999:0.5
--schedule|cosine:nan
--schedule|cosine:2
--schedule|cosine:
--lr|nan
--lr|inf
--lr|-1
--ema|nan
--ema|1
--weight-decay|inf
--momentum|nan
--min-delta|nan
--class-weight|inf,1
--class-weight|1,nan
--class-weight|1,
--augment|rot=nan
--augment|zoom=inf
--epochs|0
--batch|0
--seed|-1
--threads|0
--mem-cap|nan
--max-steps|-1
--mem-limit|abc
--mem-limit|1K
--out||--out: expected a folder
--data||--data: expected a path
--model||--model
EOF
fails_with 2 "--resume and --overwrite" "--resume --overwrite" -- "$X" train "${T[@]}" --out u0 --resume --overwrite
fails_with 2 "--mem-limit" "bench --mem-limit abc" -- "$X" bench --mem-limit abc
fails_with 1 "keras-seed" "bench above --mem-limit" -- "$X" bench --model keras-seed --mem-limit 1M --steps 1 --warmup 0

# ---- 7. --mem-limit below the run's needs: one line naming the dataset, nothing created
fails_with 1 "big.h5: training with a local batch of 16" "train above --mem-limit" -- \
  "$X" train "${B[@]}" --out m1 --mem-limit 2M
[ ! -e m1 ] && ok || bad "a run refused for memory left m1 behind"

# ---- 8. --out that is a file, or a read-only folder
echo precious > afile
fails_with 1 "afile: --out exists and is not a folder" "--out a file" -- "$X" train "${T[@]}" --out afile
[ "$(cat afile)" = precious ] && ok || bad "--out a file changed it"
if [ "$(id -u)" -eq 0 ] && mkdir -p ro && mount -t tmpfs -o ro,size=1m tmpfs ro 2>/dev/null; then
  fails_with 1 "Read-only file system" "--out on a read-only file system" -- "$X" train "${T[@]}" --out ro/run
  umount ro
else
  echo "note: not root or no tmpfs: the read-only folder case is not run"
fi

# ---- 9. stdout closed by its reader (`| head`): progress lines are lost, the run is not
"$X" train --data d.h5 --model bn.model --batch 8 --epochs 3 --patience 0 --out piped | head -c 1 >/dev/null
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && [ "$(($(wc -l < piped/metrics.csv) - 1))" -eq 3 ] && ok || bad "train | head: exit $rc, $(cat piped/metrics.csv)"

# ---- 10. SIGTERM and SIGINT in the very first step: checkpoint, exit 0, resume to the same weights
for sig in TERM INT; do
  "$X" train "${B[@]}" --out S$sig > s.out 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do grep -q "^pid $pid " S$sig/.lock 2>/dev/null && break; sleep 0.02; done
  kill -$sig $pid
  rc=0; wait $pid || rc=$?
  [ $rc -eq 0 ] && grep -q "interrupted by a signal at epoch 1" S$sig/train.log && ok ||
    bad "SIG$sig early: exit $rc: $(cat s.out S$sig/train.log)"
  "$X" train --out S$sig --resume --quiet && "$DIFF" ref/last.h5 S$sig/last.h5 0 --optim >/dev/null && ok ||
    bad "SIG$sig in the first step: resumed run differs"
done

finish rel_train
