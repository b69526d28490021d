# Model descriptions from the command line (issue 9, items 3, 4 and 10): `--model FILE` of train and
# bench refuses FIFOs, directories, devices, huge files and NUL bytes without blocking; models whose
# parameters or workspace would not fit are refused before anything big is allocated (one line naming
# the file and the line, exit 1, within seconds, no run folder left behind); every word of a model file
# is understood or refused with its line; a CRLF file works. Checkpoints whose stored description is
# hostile (written by `test_rel_model --hostile-ckpt`) are refused the same way by info, eval, predict.
# Usage: bash test_rel_model_cli.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
set -u
X=$1
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$2/tests/lib.sh"
cd "$W" || exit 1
HOSTILE=$(dirname "$X")/test_rel_model

# fails_with, bounded in time: a command that blocks (a FIFO) is a failure, not a hung suite
refused() { # refused NAME_IN_MESSAGE DESCRIPTION -- command...
  local name=$1 what=$2; shift 3
  local t0=$SECONDS
  fails_with 1 "$name" "$what" -- timeout 60 "$@"
  [ $((SECONDS - t0)) -le 20 ] && ok || bad "$what: took $((SECONDS - t0)) s"
}

# nothing of a run left behind (the run folder itself and its lock are the run-folder code's business)
no_output() { # no_output DIR DESCRIPTION
  local left
  left=$(ls -A "$1" 2>/dev/null | grep -vx '.lock')
  [ -z "$left" ] && ok || bad "$2 left files in $1: $left"
}

"$X" synth d.h5 --n 40 --size 32 > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
TRAIN=("$X" train --data d.h5 --epochs 1 --batch 8 --quiet)
BENCH=("$X" bench --size 32 --batch 8 --steps 1 --warmup 0)

# item 4: non-regular files, refused before they are opened
mkfifo model.fifo
refused "model.fifo: not a regular file (a FIFO)" "bench --model FIFO" -- "${BENCH[@]}" --model model.fifo
refused "model.fifo: not a regular file (a FIFO)" "train --model FIFO" -- "${TRAIN[@]}" --model model.fifo --out r_fifo
no_output r_fifo "train --model FIFO"
mkdir adir
refused "adir: not a regular file (a directory)" "bench --model DIR" -- "${BENCH[@]}" --model adir
refused "/dev/zero: not a regular file (a character device)" "bench --model /dev/zero" -- "${BENCH[@]}" --model /dev/zero
head -c 2000000 /dev/zero | tr '\0' '\n' > huge.txt
refused "huge.txt: model description of 2000000 bytes, larger than the limit" "bench --model 2 MB file" -- \
  "${BENCH[@]}" --model huge.txt
printf 'input 1x32x32\nflatten\ndense 1 sig\0moid\n' > nul.txt
refused "nul.txt:3: NUL byte" "bench --model with a NUL byte" -- "${BENCH[@]}" --model nul.txt

# item 3: sizes refused before allocating, in 64 bits
printf 'input 1x32x32\nconv 16 3x3 relu\nflatten\ndense 1000000 relu\ndense 1 sigmoid\n' > dense1m.txt
refused "dense1m.txt:4: dense: 14401000000 parameters in this layer" "bench: dense 1000000" -- "${BENCH[@]}" --model dense1m.txt
refused "dense1m.txt:4: dense: 14401000000 parameters in this layer" "train: dense 1000000" -- \
  "${TRAIN[@]}" --model dense1m.txt --out r_dense
no_output r_dense "train with dense 1000000"
printf 'input 1x32x32\nconv 1000000 1x1\nglobalavgpool\ndense 1 sigmoid\n' > wide.txt
# (bench and train check the whole run up front, xd_model_check_train or their own sum; the workspace
# check of xd_workspace_alloc is the one below them, proved in test_rel_model)
refused "GiB, above the memory limit" "bench: a 1000000-filter conv" -- "${BENCH[@]}" --model wide.txt
grep -q "wide.txt" err.txt && ok || bad "bench: the memory message does not name wide.txt: $(cat err.txt)"
refused "GiB, above the memory limit" "train: a 1000000-filter conv" -- "${TRAIN[@]}" --model wide.txt --out r_wide
no_output r_wide "train with a huge workspace"
printf 'input 10000x10000x10000\nflatten\ndense 1 sigmoid\n' > input.txt
refused "input.txt:1: input 10000x10000x10000 has 1000000000000 values per image" "bench: huge input" -- \
  "${BENCH[@]}" --model input.txt
# the parameters alone over the limit (from RLIMIT_AS here: 1.1 GiB of arenas against about 0.9)
printf 'input 1x32x32\nconv 16 3x3 relu\nflatten\ndense 10000 relu\ndense 1 sigmoid\n' > arena.txt
refused "arena.txt:4: the model with its gradients (144020161 parameters, 144010000 in this layer) needs 1.1 GiB" \
  "bench: arenas above the memory limit" -- bash -c 'ulimit -v 900000; exec "$@"' _ "$X" bench --size 32 --model arena.txt
refused "arena.txt:4: the model with its gradients" "train: arenas above the memory limit" -- \
  bash -c 'ulimit -v 900000; exec "$@"' _ "$X" train --data d.h5 --batch 8 --model arena.txt --out r_arena --quiet
no_output r_arena "train with arenas above the limit"

# item 10: every word understood or refused with its line
printf 'input 1x32x32\n# a comment\nconv 16 3x relu\nflatten\ndense 1 sigmoid\n' > k3x.txt
refused "k3x.txt:3: conv: bad kernel size '3x'" "bench: kernel 3x" -- "${BENCH[@]}" --model k3x.txt
printf 'input 1x32x32\nconv 16 xxx3 relu\nflatten\ndense 1 sigmoid\n' > kx3.txt
refused "kx3.txt:2: conv: bad kernel size 'xxx3'" "train: kernel xxx3" -- "${TRAIN[@]}" --model kx3.txt --out r_k
printf 'input 1x32x32\nconv 16 3x3 relu stride=1 bias=1 name=a in=input x x x x x x x x pad=same\nflatten\ndense 1 sigmoid\n' \
  > words.txt
refused "words.txt:2: more than 16 words on one line" "bench: pad=same as the 17th word" -- "${BENCH[@]}" --model words.txt
printf 'input 1x32x32\nconv 16 3x3 relu stride=0\nflatten\ndense 1 sigmoid\n' > s0.txt
refused "s0.txt:2: stride must be a positive integer" "bench: stride=0" -- "${BENCH[@]}" --model s0.txt
printf 'input 1x32x32\nflatten\ndropout 1.0\ndense 1 sigmoid\n' > d1.txt
refused "d1.txt:3: expected 'dropout RATE' with 0 <= RATE < 1, got '1.0'" "bench: dropout 1.0" -- "${BENCH[@]}" --model d1.txt
printf 'input 1x32x32\nconv 16 3x3 name=relu\nflatten\ndense 1 sigmoid\n' > kw.txt
refused "kw.txt:2: bad name 'relu'" "bench: a keyword as a name" -- "${BENCH[@]}" --model kw.txt
printf 'input 1x32x32\nconv 4 3x3 relu\xc2\xa0\nflatten\ndense 1 sigmoid\n' > nbsp.txt
refused "nbsp.txt:2: non-ASCII byte 0xc2 at column 16" "bench: a no-break space" -- "${BENCH[@]}" --model nbsp.txt
printf 'input 1x32x32\nflatten\ndense 1 sigmoid\ndropout 0\n' > last.txt
refused "last.txt:4: the last layer must be" "bench: not a logit producer last" -- "${BENCH[@]}" --model last.txt
printf 'input 1x32x32\n' > empty.txt
refused "empty.txt: no layers" "bench: no layers" -- "${BENCH[@]}" --model empty.txt

# a model file edited on Windows (CRLF, no final newline) is accepted
printf 'input 1x32x32\r\nconv 4 3x3 relu pad=same\r\n# comment\r\nflatten\r\ndense 1 sigmoid' > crlf.txt
run "${BENCH[@]}" --model crlf.txt
[ "$(rc)" -eq 0 ] && ok || bad "bench with a CRLF model file: exit $(rc): $(cat err.txt)"
run "${TRAIN[@]}" --model crlf.txt --out r_crlf --max-steps 1
[ "$(rc)" -eq 0 ] && [ -s r_crlf/last.h5 ] && ok || bad "train with a CRLF model file: exit $(rc): $(cat err.txt)"

# hostile descriptions stored in a checkpoint
pgm img.pgm 32 32 7 0
if [ -x "$HOSTILE" ]; then
  "$HOSTILE" --hostile-ckpt dense.h5 dense1m.txt 2> hostile_err.txt && ok || bad "writing a hostile checkpoint: $(tail -1 hostile_err.txt)"
  want="dense.h5 (stored model):4: dense: 14401000000 parameters in this layer"
  refused "$want" "info: a checkpoint with dense 1000000" -- "$X" info dense.h5
  refused "$want" "predict: a checkpoint with dense 1000000" -- "$X" predict --ckpt dense.h5 img.pgm
  refused "$want" "eval: a checkpoint with dense 1000000" -- "$X" eval --ckpt dense.h5 --data d.h5
  "$HOSTILE" --hostile-ckpt k3x.h5 k3x.txt 2> hostile_err.txt && ok || bad "writing a hostile checkpoint: $(tail -1 hostile_err.txt)"
  refused "k3x.h5 (stored model):3: conv: bad kernel size '3x'" "info: a checkpoint with kernel 3x" -- "$X" info k3x.h5
else
  bad "$HOSTILE is missing"
fi

finish rel_model_cli
