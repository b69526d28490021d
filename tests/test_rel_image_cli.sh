#!/usr/bin/env bash
# Issue 9 item 7 (and 4, 11 for images) end to end: `pack` of a folder holding damaged JPEGs/PNGs gives
# the same bytes on every run and with 1 or 2 threads, skipping each damaged file with one printable
# line naming it and the damage; `predict` refuses a cut or corrupt JPEG, a header claiming 65535x65535,
# a FIFO (without blocking), a directory and a file whose name holds a newline, each with exit 1, one
# stderr line naming the file, nothing on stdout for it, within seconds, and still answers for the
# good images given with them.
# Usage: bash tests/test_rel_image_cli.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
C=$SRC/tests/fuzz/corpus/image
S=$W/src
pgm_classes "$S" 10
cp "$C/gray.jpg" "$S/NORMAL/ok.jpg"
cp "$C/prog.jpg" "$S/PNEUMONIA/ok_prog.jpg"
head -c 300 "$C/gray.jpg" > "$S/NORMAL/cut.jpg"
head -c 400 "$C/prog.jpg" > "$S/PNEUMONIA/cut_prog.jpg"
head -c 80 "$C/gray8.png" > "$S/NORMAL/cut.png"
# garbage (a stray restart marker, a bogus table) over the entropy-coded data near the end
g=$(($(stat -c %s "$C/gray.jpg") - 25))
{ head -c $g "$C/gray.jpg"; printf '\xff\xff\xff\xd3\x00\x17\xff\xc4\x00\x01\x9a'; tail -c +$((g + 12)) "$C/gray.jpg"; } > "$S/PNEUMONIA/garbled.jpg"
# the marker after the JFIF header damaged (byte 20): stb_image decoded these from undefined memory,
# so pack wrote different bytes on each run
flip() { # flip SRC DST OFFSET BYTE: a copy with the byte at OFFSET replaced
  cp "$1" "$2" && printf "$4" | dd of="$2" bs=1 seek="$3" conv=notrunc status=none
}
flip "$C/gray.jpg" "$S/NORMAL/dqt.jpg" 20 '\xfe'
flip "$C/prog.jpg" "$S/PNEUMONIA/dqt_prog.jpg" 20 '\x00'
flip "$C/ycc420.jpg" "$S/PNEUMONIA/dqt_420.jpg" 20 '\xef'
# a SOF claiming 65535x65535 (offset of the SOF0 marker found in the file)
sof=$(LC_ALL=C grep -obUaP '\xff\xc0' "$C/gray.jpg" | head -1 | cut -d: -f1)
{ head -c $((sof + 5)) "$C/gray.jpg"; printf '\xff\xff\xff\xff'; tail -c +$((sof + 10)) "$C/gray.jpg"; } > "$W/huge.jpg"
cp "$W/huge.jpg" "$S/NORMAL/huge.jpg"
mkfifo "$S/NORMAL/pipe.jpg"

# pack: three runs (1, 2, 1 threads) give the same bytes; every damaged file skipped with its reason
for r in 1 2 3; do
  t=$((r == 2 ? 2 : 1))
  start=$(date +%s)
  timeout 120 "$BIN" pack "$S" "$W/d$r.h5" --size 16 --val-fraction 0.3 --seed 3 --threads $t > /dev/null 2> "$W/pack$r.err"
  rc=$?
  [ "$rc" -eq 0 ] && ok || bad "pack run $r: exit $rc: $(cat "$W/pack$r.err")"
  [ $(($(date +%s) - start)) -lt 60 ] && ok || bad "pack run $r took $(($(date +%s) - start)) s"
done
cmp -s "$W/d1.h5" "$W/d2.h5" && ok || bad "pack with 1 and 2 threads gave different files"
cmp -s "$W/d1.h5" "$W/d3.h5" && ok || bad "two pack runs gave different files"
E=$W/pack1.err
for f in "NORMAL/cut.jpg: truncated JPEG file (premature end of data)" \
  "PNEUMONIA/cut_prog.jpg: truncated JPEG file (premature end of data)" \
  "NORMAL/cut.png: corrupt PNG (truncated: premature end of data)" \
  "PNEUMONIA/garbled.jpg: corrupt JPEG (premature end of data segment)" \
  "NORMAL/huge.jpg: absurd dimensions 65535x65535" \
  "NORMAL/dqt.jpg: corrupt JPEG (69 extraneous bytes before marker 0xc0)" \
  "PNEUMONIA/dqt_prog.jpg: corrupt JPEG (" "PNEUMONIA/dqt_420.jpg: corrupt JPEG ("; do
  grep -qF -- "skip $S/$f" "$E" && ok || bad "pack: no 'skip $S/$f' in: $(cat "$E")"
done
[ "$(grep -c '^skip ' "$E")" -eq 8 ] && ok || bad "pack: expected 8 skip lines: $(cat "$E")"
LC_ALL=C grep -q '[^ -~]' "$E" && bad "pack: non-printable bytes on stderr: $(cat -v "$E")" || ok
grep -q '()' "$E" && bad "pack: an empty reason: $(cat "$E")" || ok
grep -q "22 images 16x16" "$E" && ok || bad "pack: expected 22 images packed: $(cat "$E")"

# a tiny model for predict
printf 'input 1x16x16\nconv 2 3x3 relu pad=same\nflatten\ndense 1 sigmoid\n' > "$W/tiny.txt"
"$BIN" train --data "$W/d1.h5" --model "$W/tiny.txt" --epochs 1 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2> "$W/train.err" || bad "train: $(cat "$W/train.err")"
K=$W/run/best.h5
[ -f "$K" ] || { bad "no checkpoint; cannot go on"; finish test_rel_image_cli.sh; exit 1; }

one_fail() { # one_fail FILE REASON DESCRIPTION: predict exits 1 within 20 s, one stderr line naming FILE
  local f=$1 why=$2 what=$3 t0
  t0=$(date +%s)
  run timeout 20 "$BIN" predict --ckpt "$K" "$f"
  [ "$(rc)" -eq 1 ] && ok || bad "$what: exit $(rc), expected 1 (124: it blocked)"
  [ "$(wc -l < "$W/err.txt")" -eq 1 ] && ok || bad "$what: expected one stderr line: $(cat -v "$W/err.txt")"
  grep -qF -- "$why" "$W/err.txt" && ok || bad "$what: '$why' not in: $(cat -v "$W/err.txt")"
  [ ! -s "$W/out.txt" ] && ok || bad "$what: printed a prediction: $(cat "$W/out.txt")"
  [ $(($(date +%s) - t0)) -lt 15 ] && ok || bad "$what: took $(($(date +%s) - t0)) s"
}
one_fail "$S/NORMAL/cut.jpg" "$S/NORMAL/cut.jpg: truncated JPEG file (premature end of data)" "predict cut JPEG"
one_fail "$S/PNEUMONIA/cut_prog.jpg" "cut_prog.jpg: truncated JPEG file" "predict cut progressive JPEG"
one_fail "$S/PNEUMONIA/garbled.jpg" "garbled.jpg: corrupt JPEG (" "predict garbled JPEG"
one_fail "$W/huge.jpg" "huge.jpg: absurd dimensions 65535x65535" "predict 65535x65535 JPEG"
one_fail "$S/NORMAL/dqt.jpg" "dqt.jpg: corrupt JPEG (69 extraneous bytes before marker 0xc0)" \
  "predict JPEG with a damaged marker"
one_fail "$S/NORMAL/pipe.jpg" "pipe.jpg: not a regular file (a FIFO)" "predict FIFO"
one_fail "$S/NORMAL" "NORMAL: not a regular file (a directory)" "predict directory"
nl="$W/bad
name.jpg"
cp "$S/NORMAL/cut.jpg" "$nl"
one_fail "$nl" 'bad\x0aname.jpg: truncated JPEG file' "predict name with a newline"
# good and bad together: the good ones are answered, the bad one named, exit 1
run timeout 20 "$BIN" predict --ckpt "$K" "$S/NORMAL/ok.jpg" "$S/NORMAL/cut.jpg" "$S/PNEUMONIA/ok_prog.jpg"
[ "$(rc)" -eq 1 ] && ok || bad "predict good+bad: exit $(rc)"
[ "$(wc -l < "$W/out.txt")" -eq 2 ] && grep -q "ok.jpg" "$W/out.txt" && grep -q "ok_prog.jpg" "$W/out.txt" && ok ||
  bad "predict good+bad: expected the two good predictions: $(cat "$W/out.txt")"
[ "$(wc -l < "$W/err.txt")" -eq 1 ] && grep -q "cut.jpg: truncated JPEG" "$W/err.txt" && ok ||
  bad "predict good+bad: stderr: $(cat "$W/err.txt")"
# the same good JPEG twice: the same probability (decoding is deterministic)
run "$BIN" predict --ckpt "$K" "$S/NORMAL/ok.jpg" "$S/NORMAL/ok.jpg"
[ "$(cut -f2 "$W/out.txt" | sort -u | wc -l)" -eq 1 ] && ok || bad "predict twice: $(cat "$W/out.txt")"
finish test_rel_image_cli.sh
