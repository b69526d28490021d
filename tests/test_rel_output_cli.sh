#!/usr/bin/env bash
# Issue 9, outputs of pack, synth, eval, predict and audit (items 2, 5, 11 and the hunt beyond them):
#  - file names with tabs, newlines, backslashes and bytes that are not UTF-8: --scores/predict TSV rows
#    keep 3 fields (escaped as documented), --json stays valid JSON (python3 -m json.tool and jq);
#  - a model giving NaN (finite weights of +-3e38): predict, eval and audit fail naming the image, and no
#    "nan" reaches any output;
#  - every output path that cannot be right fails with one line and exit 1 or 2, before any work and
#    without touching inputs: a directory, a missing folder, a device, the empty path, an input (pack
#    OUT = one of its images, eval --roc = --data / --ckpt), two outputs naming one file;
#  - /dev/full as an output or as stdout: exit 1, "No space left on device", nothing half-written;
#  - stale temporaries of dead writers (OUT.tmp.<pid>) are removed, a live writer's kept;
#  - an invalid --group-regex, over-long or control-character class names, --mem-limit.
# Usage: bash tests/test_rel_output_cli.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR   (needs jq and python3)
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$2
W=$3
TOOL=$(dirname "$BIN")/test_rel_output
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
command -v jq > /dev/null || { echo "FAIL: jq is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
command -v python3 > /dev/null || { echo "FAIL: python3 is needed" >&2; exit 1; }
[ -x "$TOOL" ] || { echo "FAIL: $TOOL not built" >&2; exit 1; }
cd "$W" || exit 1

# exit status, one stderr line holding every given string, nothing on stdout
expect() { # expect CODE WHAT STRING... -- command...
  local want=$1 what=$2; shift 2
  local names=() nm
  while [ "$1" != "--" ]; do names+=("$1"); shift; done
  shift
  run "$@"
  [ "$(rc)" -eq "$want" ] && ok || bad "$what: exit $(rc), expected $want: $(head -c 300 "$W/err.txt")"
  [ "$(wc -l < "$W/err.txt")" -eq 1 ] && ok || bad "$what: expected one stderr line, got: $(head -c 600 "$W/err.txt")"
  for nm in "${names[@]}"; do
    grep -qF -- "$nm" "$W/err.txt" && ok || bad "$what: message lacks '$nm': $(cat "$W/err.txt")"
  done
  [ ! -s "$W/out.txt" ] && ok || bad "$what: wrote to stdout on failure: $(head -c 300 "$W/out.txt")"
  ! grep -q '\.tmp\.' <(find "$W" -name '*.tmp.*' 2> /dev/null) && ok || bad "$what: temporary left: $(find "$W" -name '*.tmp.*')"
}
dead_pid() { echo $(($(cat /proc/sys/kernel/pid_max) + 1)); } # never a live process (pids wrap fast here)
valid_json() { python3 -m json.tool "$1" > /dev/null 2>&1 && jq -e . "$1" > /dev/null 2>&1; }

# ---- a data set with hostile file names ----
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in $(seq 1 8); do
  pgm "$S/NORMAL/n$i.pgm" $((20 + i)) $((18 + i)) "$i" 0
  pgm "$S/PNEUMONIA/p$i.pgm" $((30 - i)) $((16 + i)) $((100 + i)) $((20 + 10 * i))
done
mv "$S/NORMAL/n1.pgm" "$S/NORMAL/tab"$'\t'"name.pgm"
mv "$S/NORMAL/n2.pgm" "$S/NORMAL/new"$'\n'"line.pgm"
mv "$S/NORMAL/n3.pgm" "$S/NORMAL/back\\slash.pgm"
mv "$S/PNEUMONIA/p1.pgm" "$S/PNEUMONIA/bad"$'\xff\xfe'"utf8.pgm"
mv "$S/PNEUMONIA/p2.pgm" "$S/PNEUMONIA/quote\"and cr"$'\r'".pgm"
cat > tiny.txt << 'EOF'
input 1x16x16
conv 4 3x3 relu pad=same
batchnorm
maxpool 2x2
flatten
dense 1 sigmoid
EOF
run "$BIN" pack "$S" d.h5 --size 16 --val-fraction 0.25 --seed 3
[ "$(rc)" -eq 0 ] && ok || bad "pack of hostile names: exit $(rc): $(cat err.txt)"
run "$BIN" train --data d.h5 --model tiny.txt --epochs 2 --batch 4 --out run --quiet --threads 1
C=$W/run/best.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint ($(cat err.txt)); cannot go on" >&2; exit 1; }

# ---- --scores and predict: 3 fields per row, names recoverable; JSON valid ----
run "$BIN" eval --ckpt "$C" --data d.h5 --split train --scores scores.tsv --json
[ "$(rc)" -eq 0 ] && ok || bad "eval --scores: exit $(rc): $(cat err.txt)"
n=$(jq .n out.txt)
[ "$(wc -l < scores.tsv)" -eq "$n" ] && ok || bad "--scores has $(wc -l < scores.tsv) lines for $n images"
[ "$(awk -F'\t' 'NF != 3' scores.tsv | wc -l)" -eq 0 ] && ok || bad "--scores rows without 3 fields: $(awk -F'\t' 'NF != 3' scores.tsv)"
grep -qF 'NORMAL/tab\tname.pgm' scores.tsv && grep -qF 'NORMAL/new\nline.pgm' scores.tsv \
  && grep -qF 'NORMAL/back\\slash.pgm' scores.tsv && ok || bad "--scores escapes: $(cut -f1 scores.tsv | head -20)"
cp out.txt eval.json
valid_json eval.json && ok || bad "eval --json invalid"

imgs=("$S"/NORMAL/* "$S"/PNEUMONIA/*)
run "$BIN" predict --ckpt "$C" "${imgs[@]}"
[ "$(rc)" -eq 0 ] && ok || bad "predict hostile names: exit $(rc): $(cat err.txt)"
[ "$(wc -l < out.txt)" -eq 16 ] && [ "$(awk -F'\t' 'NF != 3' out.txt | wc -l)" -eq 0 ] && ok \
  || bad "predict TSV: $(wc -l < out.txt) lines, rows without 3 fields: $(awk -F'\t' 'NF != 3' out.txt)"
run "$BIN" predict --ckpt "$C" "${imgs[@]}" --json
cp out.txt p.json
[ "$(rc)" -eq 0 ] && valid_json p.json && ok || bad "predict --json with hostile names is not valid JSON: $(head -c 400 p.json)"
[ "$(jq '.predictions | length' p.json)" = 16 ] && ok || bad "predict --json: $(jq '.predictions | length' p.json) predictions"
jq -r '.predictions[].path' p.json | grep -q $'bad\xef\xbf\xbd\xef\xbf\xbdutf8' && ok || bad "invalid UTF-8 not U+FFFD"
jq -e --arg p "$S/NORMAL/new"$'\n'"line.pgm" '[.predictions[].path] | index($p) != null' p.json > /dev/null \
  && ok || bad "a newline in a path is not round-tripped through JSON"

# ---- NaN from a model: an error naming the image, never "nan" in an output ----
"$TOOL" --huge-weights "$C" nan.h5 2> err.txt || bad "making the NaN checkpoint: $(cat err.txt)"
run "$BIN" predict --ckpt nan.h5 "$S/NORMAL/n4.pgm" "$S/NORMAL/n5.pgm"
[ "$(rc)" -eq 1 ] && ok || bad "predict NaN: exit $(rc)"
[ "$(wc -l < err.txt)" -eq 2 ] && grep -q "n4.pgm: nan.h5 gives the probability nan" err.txt && grep -q "n5.pgm" err.txt \
  && ok || bad "predict NaN: one line per image naming it: $(cat err.txt)"
! grep -qi nan out.txt && ok || bad "predict printed nan: $(cat out.txt)"
run "$BIN" predict --ckpt nan.h5 "$S/NORMAL/n4.pgm" --json
cp out.txt pn.json
[ "$(rc)" -eq 1 ] && valid_json pn.json && [ "$(jq -r '.predictions[0].error' pn.json | grep -c 'n4.pgm')" = 1 ] \
  && ! grep -q '"probability"' pn.json && ok || bad "predict --json NaN: exit $(rc): $(cat pn.json)"
expect 1 "eval NaN" "d.h5 [train] image" "nan.h5 gives the probability nan" -- \
  "$BIN" eval --ckpt nan.h5 --data d.h5 --split train --scores sn.tsv --roc rn.tsv --json
[ ! -e sn.tsv ] && [ ! -e rn.tsv ] && ok || bad "eval NaN left outputs"
expect 1 "eval NaN auto threshold of --tta" "d.h5 [val] image" "nan.h5" -- \
  "$BIN" eval --ckpt nan.h5 --data d.h5 --tta --threshold auto
expect 1 "audit NaN" "nan.h5" "image" "probability nan" -- "$BIN" audit --ckpt nan.h5 --data d.h5 --split train --json

# a stored threshold of 2.0 (would call every case negative): refused, naming the checkpoint
"$TOOL" --set-threshold "$C" t2.h5 2.0 2> err.txt || bad "making the threshold-2 checkpoint: $(cat err.txt)"
expect 1 "eval threshold 2" "t2.h5" "threshold" -- "$BIN" eval --ckpt t2.h5 --data d.h5 --split train --threshold auto
expect 1 "predict threshold 2" "t2.h5" "threshold" -- "$BIN" predict --ckpt t2.h5 --threshold auto "$S/NORMAL/n4.pgm"
expect 1 "audit threshold 2" "t2.h5" "threshold" -- "$BIN" audit --ckpt t2.h5 --data d.h5

# ---- output paths that cannot be right ----
cp d.h5 d.copy && cp "$C" c.copy
mkdir -p adir
expect 1 "eval --roc DIR" "adir" "is a directory" -- "$BIN" eval --ckpt "$C" --data d.h5 --roc adir
expect 1 "eval --scores in a missing folder" "nodir/s.tsv" "No such file or directory" -- \
  "$BIN" eval --ckpt "$C" --data d.h5 --scores nodir/s.tsv
expect 2 "eval --roc ''" "--roc" -- "$BIN" eval --ckpt "$C" --data d.h5 --roc ""
expect 2 "eval --reliability ''" "--reliability" -- "$BIN" eval --ckpt "$C" --data d.h5 --reliability ""
expect 2 "eval --roc = --data" "--roc d.h5" "--data d.h5" -- "$BIN" eval --ckpt "$C" --data d.h5 --roc d.h5
expect 2 "eval --scores = --ckpt" "--scores" "--ckpt" -- "$BIN" eval --ckpt "$C" --data d.h5 --scores "$C"
ln -sf d.h5 dlink
expect 2 "eval --reliability = a link to --data" "dlink" "--data" -- "$BIN" eval --ckpt "$C" --data d.h5 --reliability dlink
expect 2 "eval --roc = --scores" "--scores x.tsv" "--roc x.tsv" -- "$BIN" eval --ckpt "$C" --data d.h5 --roc x.tsv --scores x.tsv
cmp -s d.h5 d.copy && cmp -s "$C" c.copy && [ -L dlink ] && ok || bad "an input was touched"
expect 1 "eval --roc /dev/full" "/dev/full" "No space left on device" -- "$BIN" eval --ckpt "$C" --data d.h5 --split train --roc /dev/full
# a later output failing: the earlier one is not created, an existing one kept
echo "old roc" > roc_old.tsv
expect 1 "eval --scores /dev/full after --roc" "/dev/full" "No space left on device" -- \
  "$BIN" eval --ckpt "$C" --data d.h5 --split train --roc roc_old.tsv --reliability rel_new.csv --scores /dev/full
[ "$(cat roc_old.tsv)" = "old roc" ] && [ ! -e rel_new.csv ] && ok || bad "a failed eval replaced or created outputs"
# (/dev/fd/2, not /dev/stderr: a binary with the old bug renamed its temporary over the /dev/stderr link)
run "$BIN" eval --ckpt "$C" --data d.h5 --split train --roc /dev/null --scores /dev/fd/2 --json
[ "$(rc)" -eq 0 ] && [ "$(wc -l < err.txt)" -eq "$n" ] && jq -e .n out.txt > /dev/null && [ -c /dev/null ] && ok \
  || bad "eval to /dev/null and /dev/fd/2: exit $(rc), $(wc -l < err.txt) stderr lines"
expect 1 "eval --json > /dev/full" "stdout" "No space left on device" -- sh -c '"$0" eval --ckpt "$1" --data d.h5 --split train --json > /dev/full' "$BIN" "$C"
expect 1 "predict > /dev/full" "stdout" "No space left on device" -- sh -c '"$0" predict --ckpt "$1" "$2" > /dev/full' "$BIN" "$C" "$S/NORMAL/n4.pgm"
expect 1 "audit > /dev/full" "stdout" "No space left on device" -- sh -c '"$0" audit --ckpt "$1" --data d.h5 --cam-images 2 > /dev/full' "$BIN" "$C"
expect 2 "predict --gradcam ''" "--gradcam" -- "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" --gradcam ""
expect 1 "predict --gradcam FILE" "d.copy" -- "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" --gradcam d.copy
# an overlay whose name is an input image gets another name; the input stays
run "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" --gradcam cams
ov=$(ls cams)
[ "$(rc)" -eq 0 ] && [ -n "$ov" ] && ok || bad "predict --gradcam: exit $(rc): $(cat err.txt)"
cp "cams/$ov" input.png && rm -rf cams && mkdir cams && cp input.png "cams/$ov"
run "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" "cams/$ov" --gradcam cams
[ "$(rc)" -eq 0 ] && cmp -s input.png "cams/$ov" && [ "$(ls cams | wc -l)" -eq 3 ] && ok \
  || bad "an overlay replaced an input image: exit $(rc), $(ls cams)"

# pack / synth
cp "$S/NORMAL/n4.pgm" n4.copy
expect 1 "pack OUT = an input image" "n4.pgm" "one of the input images" -- "$BIN" pack "$S" "$S/NORMAL/n4.pgm" --size 16
cmp -s n4.copy "$S/NORMAL/n4.pgm" && ok || bad "pack replaced an input image"
expect 1 "pack OUT = SRC" "is a directory" -- "$BIN" pack "$S" "$S" --size 16
expect 1 "pack OUT in a missing folder" "nodir/o.h5" "No such file or directory" -- "$BIN" pack "$S" nodir/o.h5 --size 16
expect 1 "pack OUT /dev/null" "/dev/null" "not a regular file" -- "$BIN" pack "$S" /dev/null --size 16
[ -c /dev/null ] && ok || bad "/dev/null replaced"
expect 2 "pack OUT ''" "OUT.h5" -- "$BIN" pack "$S" "" --size 16
expect 2 "pack SRC ''" "SRC" -- "$BIN" pack "" o.h5 --size 16
expect 2 "pack bad --group-regex" "--group-regex" "(" -- "$BIN" pack "$S" o.h5 --group-regex '('
[ ! -e o.h5 ] && ok || bad "a refused pack wrote its output"
expect 1 "pack --mem-limit" "o.h5" "memory limit" -- "$BIN" pack "$S" o.h5 --size 4096 --mem-limit 1M
expect 2 "pack --mem-limit bad" "--mem-limit" -- "$BIN" pack "$S" o.h5 --mem-limit lots
long=$(printf 'L%.0s' $(seq 1 70))
mkdir -p "lc/$long" lc/B && cp "$S/NORMAL/n4.pgm" "lc/$long/" && cp "$S/NORMAL/n5.pgm" lc/B/
expect 1 "pack class name over 63 bytes" "lc/$long" "longer than 63" -- "$BIN" pack lc o.h5 --size 16
mkdir -p "cc/A"$'\n'"B" cc/C && cp "$S/NORMAL/n4.pgm" "cc/A"$'\n'"B/" && cp "$S/NORMAL/n5.pgm" cc/C/
expect 1 "pack class name with a newline" "cc/A?B" "control characters" -- "$BIN" pack cc o.h5 --size 16
expect 2 "synth OUT ''" "OUT.h5" -- "$BIN" synth "" --n 10 --size 16
expect 1 "synth OUT DIR" "adir" "is a directory" -- "$BIN" synth adir --n 10 --size 16
expect 1 "synth --mem-limit" "s.h5" "memory limit" -- "$BIN" synth s.h5 --n 100 --size 4096 --mem-limit 1M
for c in eval audit; do
  expect 2 "$c --mem-limit bad" "--mem-limit" -- "$BIN" "$c" --ckpt "$C" --data d.h5 --mem-limit 0
done
expect 2 "predict --mem-limit bad" "--mem-limit" -- "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" --mem-limit 0
expect 2 "synth --mem-limit bad" "--mem-limit" -- "$BIN" synth s.h5 --mem-limit 12Q
# a symbolic link output: the link stays, its target is replaced
echo old > target.h5 && ln -sf target.h5 olink.h5
run "$BIN" synth olink.h5 --n 10 --size 16
[ "$(rc)" -eq 0 ] && [ -L olink.h5 ] && "$BIN" info target.h5 > /dev/null 2>&1 && ok || bad "synth through a symlink: exit $(rc) $(cat err.txt)"

# ---- stale temporaries of dead writers go, a live writer's stay ----
d1=$(dead_pid)
for f in s2.h5 p2.h5 roc2.tsv; do echo stale > "$f.tmp.$d1"; echo live > "$f.tmp.$$"; done
run "$BIN" synth s2.h5 --n 10 --size 16
run "$BIN" pack "$S" p2.h5 --size 16
run "$BIN" eval --ckpt "$C" --data d.h5 --split train --roc roc2.tsv
mkdir -p cams2 && echo stale > "cams2/old_p0.123.png.tmp.$d1" && echo live > "cams2/old_p0.123.png.tmp.$$"
run "$BIN" predict --ckpt "$C" "$S/NORMAL/n4.pgm" --gradcam cams2
[ "$(rc)" -eq 0 ] && [ ! -e "cams2/old_p0.123.png.tmp.$d1" ] && [ -e "cams2/old_p0.123.png.tmp.$$" ] && ok \
  || bad "predict --gradcam: stale PNG temporaries: $(ls cams2)"
rm -f "cams2/old_p0.123.png.tmp.$$"
for f in s2.h5 p2.h5 roc2.tsv; do
  [ -s "$f" ] && [ ! -e "$f.tmp.$d1" ] && [ "$(cat "$f.tmp.$$")" = live ] && ok || bad "$f: stale temporaries: $(ls "$f".tmp.* 2>&1)"
  rm -f "$f.tmp.$$"
done

finish rel_output_cli
