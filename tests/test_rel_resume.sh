#!/usr/bin/env bash
# --resume (issue 9, item 9): the run's whole configuration is stored in last.h5 and reused, options that
# contradict it are refused naming the option (last.h5 untouched), what may change changes (--epochs,
# --patience, --data by another path), stored states that make no sense for the run are refused, and
# --resume on a folder without last.h5 never starts a new run (--resume auto does, by choice).
# Usage: bash tests/test_rel_resume.sh XRAYDP SOURCE_DIR WORK_DIR
set -uo pipefail
X=$(realpath "$1"); SRC=$(realpath "$2"); W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
TOOL=$(dirname "$X")/test_rel_train_unit
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
W=$(pwd)
source "$SRC/tests/lib.sh"
[ -x "$TOOL" ] || { echo "FAIL: no $TOOL (built with the tests)"; exit 1; }

"$X" synth d.h5 --n 120 --size 16 --seed 3 >/dev/null
cp d.h5 copy.h5
"$X" synth d24.h5 --n 120 --size 24 --seed 3 >/dev/null
printf 'input 1x16x16\nconv 6 3x3 relu\nbatchnorm\nmaxpool 2x2\nflatten\ndropout 0.2\ndense 1 sigmoid\n' > tiny.model
# a dataset with other class names, same size
for s in train val test; do for c in healthy sick; do mkdir -p cls/$s/$c; done; done
for i in 1 2 3 4 5 6; do
  pgm cls/train/healthy/h$i.pgm 20 22 $i 0; pgm cls/train/sick/s$i.pgm 20 22 $((i + 50)) 90
done
for s in val test; do for i in 1 2; do
  pgm cls/$s/healthy/h$i.pgm 20 22 $((i + 100)) 0; pgm cls/$s/sick/s$i.pgm 20 22 $((i + 200)) 90
done; done
"$X" pack cls cls.h5 --size 16 --val-fraction 0 >/dev/null 2>&1 || bad "pack of the other-class dataset failed"

# every setting away from its default, so that forgetting any of them shows
A=(--data d.h5 --model tiny.model --batch 8 --epochs 4 --lr 3e-3 --optimizer adamw --weight-decay 1e-3
   --schedule cosine --warmup 1 --ema 0.9 --seed 7 --augment default --class-weight balanced --patience 0
   --monitor val_auc --sync-bn --init he --min-delta 0.001 --quiet)
"$X" train "${A[@]}" --out full || bad "the reference run failed"

# 1. resume with nothing but --out, from another folder: the run's own settings, bitwise
"$X" train "${A[@]}" --out part --max-steps 9 || bad "--max-steps run failed"
mkdir -p elsewhere
(cd elsewhere && "$X" train --out ../part --resume --quiet) && ok || bad "resume with only --out failed"
"$DIFF" full/last.h5 part/last.h5 0 --optim >/dev/null && ok || bad "resume with only --out differs from the uninterrupted run"
"$DIFF" full/best.h5 part/best.h5 0 >/dev/null && ok || bad "resumed best.h5 differs"
[ "$(cut -d, -f1-11 full/metrics.csv)" = "$(cut -d, -f1-11 part/metrics.csv)" ] && ok || bad "resumed metrics.csv rows differ"
grep -q "resumed" part/train.log && grep -q "^settings (stored in last.h5" part/train.log && ok ||
  bad "train.log does not record the resume and the settings"
cfg=$("$TOOL" get-str part/last.h5 train_config)
for kv in batch=8 epochs=4 optimizer=adamw schedule=cosine warmup=1 ema=0.90000000000000002 seed=7 init=he \
          augment=default class_weight=balanced patience=0 monitor=val_auc sync_bn=1 model=tiny.model \
          "data=$W/d.h5"; do
  grep -qxF -- "$kv" <<< "$cfg" && ok || bad "train_config lacks '$kv': $cfg"
done

# 2. options that contradict the run: exit 1, one line naming the option, last.h5 untouched
"$X" train "${A[@]}" --out mid --max-steps 9 || bad "--max-steps run failed"
cp mid/last.h5 mid.ref; cp mid/metrics.csv mid.csv
for o in "--batch 16" "--seed 8" "--optimizer adam" "--lr 1e-3" "--augment none" "--schedule constant" \
         "--warmup 0" "--ema 0" "--class-weight none" "--monitor val_loss" "--no-sync-bn" "--no-shuffle" \
         "--weight-decay 0" "--init torch" "--momentum 0.5"; do
  read -r -a oo <<< "$o"
  fails_with 1 "${oo[0]}" "resume with $o" -- "$X" train --out mid --resume "${oo[@]}"
  grep -q "^xray-dp train: ${oo[0]}[ :].*the run in mid/last.h5 was started with" "$W/err.txt" && ok ||
    bad "resume with $o: $(cat "$W/err.txt")"
done
fails_with 1 "--model keras-seed: not the network of the run in mid/last.h5" "resume with another --model" -- \
  "$X" train --out mid --resume --model keras-seed
fails_with 1 "--data d24.h5: images are 1x24x24" "resume with a dataset of another size" -- \
  "$X" train --out mid --resume --data d24.h5
fails_with 1 "--data cls.h5: classes healthy,sick" "resume with a dataset of other classes" -- \
  "$X" train --out mid --resume --data cls.h5
cmp -s mid/last.h5 mid.ref && ok || bad "a refused resume changed last.h5"
cmp -s mid/metrics.csv mid.csv && ok || bad "a refused resume changed metrics.csv"

# 3. what may change: the same dataset by another path (bitwise), more epochs, fewer is refused
"$X" train --out mid --resume --data copy.h5 --threads 1 --quiet && ok || bad "resume with a copy of the dataset failed"
"$DIFF" full/last.h5 mid/last.h5 0 --optim >/dev/null && ok || bad "resume from a copy of the dataset differs"
"$X" train --out mid --resume --epochs 5 > ext.out 2>&1 && ok || bad "extending --epochs failed: $(cat ext.out)"
[ "$(($(wc -l < mid/metrics.csv) - 1))" -eq 5 ] && ok || bad "--epochs 5 did not add epoch 5"
grep -q "resuming with --epochs 5 (the run had 4)" ext.out mid/train.log && ok || bad "the extension is not reported"
"$TOOL" get-str mid/last.h5 train_config | grep -qx "epochs=5" && ok || bad "last.h5 does not record epochs=5"
fails_with 1 "--epochs 3: the run in mid/last.h5 has already completed 5 epochs" "fewer epochs than done" -- \
  "$X" train --out mid --resume --epochs 3
run "$X" train --out mid --resume
[ "$(rc)" -eq 0 ] && grep -q "already finished its 5 epochs" "$W/out.txt" && ok || bad "resume of a finished run: $(cat "$W/out.txt" "$W/err.txt")"

# 4. nothing to resume: exit 1, nothing created; --resume auto starts (and resumes) by choice
mkdir empty
fails_with 1 "empty: nothing to resume (no last.h5)" "--resume on an empty folder" -- "$X" train --out empty --resume
fails_with 1 "typo: nothing to resume (no last.h5)" "--resume on a mistyped folder" -- "$X" train --out typo --resume
[ ! -e typo ] && [ -z "$(ls -A empty)" ] && ok || bad "--resume without a run left files behind"
"$X" train "${A[@]}" --out auto --resume auto --max-steps 9 && [ -f auto/last.h5 ] && ok || bad "--resume auto did not start a run"
"$X" train --out auto --resume auto --quiet && ok || bad "--resume auto did not resume"
"$DIFF" full/last.h5 auto/last.h5 0 --optim >/dev/null && ok || bad "--resume auto run differs from the uninterrupted one"
# leftovers of a run killed before its first last.h5 (a row and best.h5 written, last.h5 not): --resume
# finds nothing, a new run is refused, --resume auto (a requeued job) starts the run again
"$X" train "${A[@]}" --out left --epochs 1 || bad "one-epoch run failed"
rm left/last.h5
fails_with 1 "left: nothing to resume (no last.h5)" "--resume on leftovers" -- "$X" train --out left --resume
fails_with 1 "left: already holds a run (best.h5, metrics.csv with 1 epoch)" "new run on leftovers" -- \
  "$X" train "${A[@]}" --out left
run "$X" train "${A[@]}" --out left --resume auto
[ "$(rc)" -eq 0 ] && "$DIFF" full/last.h5 left/last.h5 0 --optim >/dev/null && [ "$(grep -c '^=== ' left/train.log)" -eq 1 ] &&
  grep -q "starting the run again" left/train.log && ok || bad "--resume auto on leftovers: $(cat "$W/err.txt")"
fails_with 2 "--overwrite" "--resume with --overwrite" -- "$X" train --out auto --resume --overwrite
fails_with 2 "--resume needs --out" "--resume without --out" -- "$X" train --resume

# 5. stored states that make no sense for this run: one line naming last.h5, nothing written
"$X" train "${A[@]}" --out mid0 --max-steps 9 || bad "--max-steps run failed"
for bad_state in "step_in_epoch 99" "step -5" "epoch 9" "best_epoch 7" "bad_epochs -1" "epoch -1"; do
  rm -rf s; cp -r mid0 s
  read -r -a kv <<< "$bad_state"
  "$TOOL" set-int s/last.h5 "${kv[0]}" "${kv[1]}" || bad "cannot set ${kv[0]}"
  cp s/last.h5 s.ref
  fails_with 1 "s/last.h5" "stored $bad_state" -- "$X" train --out s --resume
  cmp -s s/last.h5 s.ref && ok || bad "stored $bad_state: last.h5 changed"
done
grep -q "past the epoch's" <(rm -rf s; cp -r mid0 s; "$TOOL" set-int s/last.h5 step_in_epoch 99;
  "$X" train --out s --resume 2>&1) && ok || bad "step_in_epoch past the epoch is not named"

# 6. damaged stored settings: refused naming the file and the setting; none at all: the options given
for cfg in $'version=1\nbatch=abc' $'version=1\nfrobnicate=3' $'version=2\nbatch=8' $'version=1\nschedule=step:1:nan'; do
  rm -rf s; cp -r mid0 s
  "$TOOL" set-str s/last.h5 train_config "$cfg"
  fails_with 1 "s/last.h5" "stored train_config '${cfg//$'\n'/ }'" -- "$X" train --out s --resume
done
rm -rf s; cp -r mid0 s
"$TOOL" set-str s/last.h5 train_config ""
run "$X" train "${A[@]}" --out s --resume --quiet
[ "$(rc)" -eq 0 ] && "$DIFF" full/last.h5 s/last.h5 0 --optim >/dev/null && ok ||
  bad "a last.h5 without stored settings did not resume with the options given: $(cat "$W/err.txt")"
grep -q "records no settings" s/train.log && ok || bad "resume without stored settings is not noted"

# 7. the run's dataset is gone: say so, do not fall back to anything
rm -rf s; cp -r mid0 s
mv d.h5 d.moved
fails_with 1 "the run's dataset $W/d.h5 is missing" "resume with the dataset gone" -- "$X" train --out s --resume
"$X" train --out s --resume --data d.moved --quiet && ok || bad "resume with --data at the new place failed"
mv d.moved d.h5

# 8. early stopping: a larger --patience continues a stopped run, the same patience leaves it stopped
P=(--data d.h5 --model tiny.model --batch 8 --epochs 8 --patience 1 --min-delta 1e-4 --schedule step:1:1e-12
   --lr 3e-3 --quiet)
"$X" train "${P[@]}" --out es || bad "early stopping run failed"
rows=$(($(wc -l < es/metrics.csv) - 1))
[ "$rows" -lt 8 ] && ok || bad "early stopping did not fire ($rows epochs)"
run "$X" train --out es --resume
grep -q "early stopping already ended this run" "$W/out.txt" && [ "$(($(wc -l < es/metrics.csv) - 1))" -eq "$rows" ] &&
  ok || bad "resume of a stopped run did not stay stopped"
"$X" train --out es --resume --patience 0 --quiet && [ "$(($(wc -l < es/metrics.csv) - 1))" -eq 8 ] && ok ||
  bad "--patience 0 did not continue the stopped run to 8 epochs"

finish rel_resume
