# The pack, synth and info commands end to end: help, usage errors (exit 2), skipped files reported on
# stderr, identical output for 1 and 2 threads, clean failure (exit 1, no file left), info output.
# Usage: bash test_pack.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
set -u
BIN=$1
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$2/tests/lib.sh"
expect_rc() { # expect_rc CODE DESCRIPTION -- command...
  local want=$1 what=$2; shift 3
  "$@" >"$W/out.txt" 2>"$W/err.txt"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "$what: exit $rc, expected $want; stderr: $(cat "$W/err.txt")"; fi
}
has() { # has FILE PATTERN DESCRIPTION
  if grep -q -- "$2" "$1"; then ok; else bad "$3: '$2' not in $1: $(head -c 600 "$1")"; fi
}

# binary PGM of constant value: pgm FILE W H VALUE
pgm() { { printf 'P5\n%d %d\n255\n' "$2" "$3"; head -c $(($2 * $3)) /dev/zero | tr '\0' "\\$(printf '%03o' "$4")"; } >"$1"; }

for c in pack synth info; do
  expect_rc 0 "$c --help" -- "$BIN" $c --help
  has "$W/out.txt" "usage: xray-dp $c" "$c --help"
done
has "$W/out.txt" "FILE.h5" "info --help"
"$BIN" pack --help >"$W/help.txt"
has "$W/help.txt" "fewer than 5%" "pack --help documents the tiny-val rule"
expect_rc 2 "pack without args" -- "$BIN" pack
has "$W/err.txt" "^xray-dp pack: " "usage error prefix"
expect_rc 2 "pack unknown option" -- "$BIN" pack a b --bogus
expect_rc 2 "pack bad size" -- "$BIN" pack a b --size x
expect_rc 2 "pack bad val fraction" -- "$BIN" pack a b --val-fraction 1.5
expect_rc 2 "pack missing value" -- "$BIN" pack a b --seed
expect_rc 2 "synth bad n" -- "$BIN" synth x.h5 --n 0
expect_rc 2 "info without file" -- "$BIN" info

# a small tree: 6 + 8 readable PGMs of odd sizes, and one bad file of each kind
S="$W/src"
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in 1 2 3 4 5 6; do pgm "$S/NORMAL/n$i.pgm" $((10 + i)) $((7 + 2 * i)) $((20 + i)); done
for i in 1 2 3 4 5 6 7 8; do pgm "$S/PNEUMONIA/p$i.pgm" $((30 - i)) $((9 + i)) $((200 + i)); done
: >"$S/NORMAL/zero.png"
echo "not an image" >"$S/PNEUMONIA/text.jpeg"
pgm "$W/full.pgm" 40 40 77
head -c 500 "$W/full.pgm" >"$S/NORMAL/trunc.pgm"
# PNG signature + IHDR claiming 100000 x 100000
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x00\x00\x00\x00\x00\x00\x00\x00' >"$S/PNEUMONIA/huge.png"
mkdir -p "$W/o1" "$W/o2"
expect_rc 0 "pack threads 1" -- "$BIN" pack "$S" "$W/o1/d.h5" --size 16 --val-fraction 0.25 --seed 3 --threads 1
cp "$W/err.txt" "$W/err1.txt"
expect_rc 0 "pack threads 2" -- "$BIN" pack "$S" "$W/o2/d.h5" --size 16 --val-fraction 0.25 --seed 3 --threads 2
if cmp -s "$W/o1/d.h5" "$W/o2/d.h5"; then ok; else bad "--threads 1 and 2 give different files"; fi
n_skip=$(grep -c '^skip ' "$W/err1.txt")
[ "$n_skip" -eq 4 ] && ok || bad "expected 4 skip lines, got $n_skip"
has "$W/err1.txt" "^skip $S/NORMAL/zero.png: zero-byte" "zero-byte reason"
has "$W/err1.txt" "^skip $S/PNEUMONIA/text.jpeg: not a supported image" "text reason"
has "$W/err1.txt" "^skip $S/NORMAL/trunc.pgm: truncated PNM" "truncated reason"
has "$W/err1.txt" "^skip $S/PNEUMONIA/huge.png: absurd dimensions 100000x100000" "huge reason"
has "$W/err1.txt" "14 images 16x16, 2 classes, 4 skipped" "summary"
if grep -q 'ETA' "$W/err1.txt"; then bad "progress line printed although stderr is not a terminal"; else ok; fi
[ "$(ls "$W/o1")" = "d.h5" ] && ok || bad "stray files next to the output: $(ls "$W/o1")"

expect_rc 0 "info" -- "$BIN" info "$W/o1/d.h5"
# val: round(0.25*6)=2 NORMAL (of 6 readable... carved on files: 8 NORMAL files -> 2) and round(0.25*10)=3 PNEUMONIA files
has "$W/out.txt" "classes: 0=NORMAL 1=PNEUMONIA" "info classes"
has "$W/out.txt" "images: 16x16" "info size"
tr_n=$(awk '$1=="train"{print $2}' "$W/out.txt")
va_n=$(awk '$1=="val"{print $2}' "$W/out.txt")
[ "$((tr_n + va_n))" -eq 14 ] && [ "$va_n" -ge 3 ] && ok || bad "info counts train=$tr_n val=$va_n"

# nothing readable: exit 1, one line, no output file
mkdir -p "$W/junk/A" "$W/o3"
: >"$W/junk/A/a.png"
echo hi >"$W/junk/A/b.jpg"
expect_rc 1 "pack nothing readable" -- "$BIN" pack "$W/junk" "$W/o3/x.h5"
has "$W/err.txt" "^xray-dp pack: .*no readable image" "nothing readable message"
[ -z "$(ls -A "$W/o3")" ] && ok || bad "output left after failure: $(ls -A "$W/o3")"
expect_rc 1 "pack missing SRC" -- "$BIN" pack "$W/nope" "$W/o3/x.h5"
has "$W/err.txt" "nope" "missing SRC named"
[ -z "$(ls -A "$W/o3")" ] && ok || bad "output left after failure"

# info errors
echo "text" >"$W/t.h5"
expect_rc 1 "info on text" -- "$BIN" info "$W/t.h5"
has "$W/err.txt" "not an HDF5 file" "info not-hdf5 message"
expect_rc 1 "info on missing" -- "$BIN" info "$W/missing.h5"
[ "$(wc -l <"$W/err.txt")" -eq 1 ] && ok || bad "info error is not one line: $(cat "$W/err.txt")"

# synth: reproducible, three balanced splits
expect_rc 0 "synth a" -- "$BIN" synth "$W/s1.h5" --n 60 --size 32 --seed 9
expect_rc 0 "synth b" -- "$BIN" synth "$W/s2.h5" --n 60 --size 32 --seed 9 --threads 1
if cmp -s "$W/s1.h5" "$W/s2.h5"; then ok; else bad "synth not reproducible"; fi
expect_rc 0 "info synth" -- "$BIN" info "$W/s1.h5"
has "$W/out.txt" "^train *42 *21 *21" "synth train split"
has "$W/out.txt" "^val *9 " "synth val split"
has "$W/out.txt" "^test *9 " "synth test split"
has "$W/out.txt" "source: synth seed=9 n=60" "synth source"

if command -v h5dump >/dev/null; then
  expect_rc 0 "h5dump" -- h5dump -H "$W/o1/d.h5"
  has "$W/out.txt" 'DATASET "images"' "h5dump header"
fi

finish test_pack.sh
