#!/usr/bin/env bash
# pack's validation carve-out never splits a group between train and val: byte-identical files always
# form a group, and --group-regex groups files by a match on their names (one patient's images).
set -euo pipefail
X=$1; SRC=$2; W=$3
rm -rf "$W"; mkdir -p "$W"; cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

# 2 classes x 12 patients x 3 images of 8x8 (ASCII PGM, distinct content), plus byte-identical copies
for c in NORMAL PNEUMONIA; do
  mkdir -p src/$c
  for p in $(seq 1 12); do
    for k in 1 2 3; do
      # binary PGM (stb_image reads P5, not P2); bytes 1..255 so that awk never has to print a NUL
      LC_ALL=C awk -v seed=$(( (${#c} * 1000 + p) * 10 + k )) 'BEGIN { srand(seed); printf "P5\n8 8\n255\n";
        for (i = 0; i < 64; i++) printf "%c", 1 + int(rand() * 255) }' > src/$c/person${p}_$k.pgm
    done
  done
  for p in 1 2 3 4 5 6; do cp src/$c/person${p}_1.pgm src/$c/copy_of_person${p}.pgm; done
done
paths() { h5dump -y -d "/$2/paths" "$1" | grep -o '"[^"]*"' | tr -d '"'; }

split_of_copies() { # every copy_of_personN must be in the same split as personN_1
  local f=$1
  for c in NORMAL PNEUMONIA; do
    for p in 1 2 3 4 5 6; do
      local a b
      a=$(paths "$f" val | grep -c "^$c/person${p}_1.pgm$" || true)
      b=$(paths "$f" val | grep -c "^$c/copy_of_person${p}.pgm$" || true)
      [ "$a" = "$b" ] || fail "$f: $c/person${p}_1.pgm and its byte-identical copy are in different splits"
    done
  done
}

for seed in 1 2 3; do
  "$X" pack src plain$seed.h5 --size 8 --val-fraction 0.3 --seed $seed --group-regex none 2>/dev/null
  split_of_copies plain$seed.h5
done
ok "byte-identical files stay in one split (3 seeds)"

straddle=0
for seed in 1 2 3; do
  "$X" pack src g$seed.h5 --size 8 --val-fraction 0.3 --seed $seed --group-regex '^(person[0-9]+)' 2>/dev/null
  split_of_copies g$seed.h5
  tr=$(paths g$seed.h5 train | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
  va=$(paths g$seed.h5 val | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
  both=$(comm -12 <(echo "$tr") <(echo "$va") | wc -l)
  [ "$both" -eq 0 ] || fail "seed $seed: $both patients have images in both train and val"
  n=$(paths g$seed.h5 val | wc -l)
  [ "$n" -ge 16 ] && [ "$n" -le 30 ] || fail "seed $seed: val has $n of 84 images, expected about 25"
  # without grouping the same carve-out does split patients (so the check above means something)
  tr=$(paths plain$seed.h5 train | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
  va=$(paths plain$seed.h5 val | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
  straddle=$((straddle + $(comm -12 <(echo "$tr") <(echo "$va") | wc -l)))
done
[ "$straddle" -gt 0 ] || fail "image-level carve-outs never split a patient: the grouping test proves nothing"
ok "--group-regex keeps every patient in one split (3 seeds); with --group-regex none $straddle patients were split"
# the default groups by the Kaggle patient id: same split as an explicit regex for these names
"$X" pack src def.h5 --size 8 --val-fraction 0.3 --seed 1 2>/dev/null
dtr=$(paths def.h5 train | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
dva=$(paths def.h5 val | sed -n 's|^\([A-Z]*\)/\(person[0-9]*\)_.*|\1/\2|p' | sort -u)
[ -n "$dva" ] && [ "$(comm -12 <(echo "$dtr") <(echo "$dva") | wc -l)" -eq 0 ] || fail "default pack split a patient"
ok "pack groups by the Kaggle patient id by default"

rc=0; "$X" pack src bad.h5 --group-regex '(' 2> err.txt || rc=$?
[ $rc -eq 2 ] && grep -q "group-regex" err.txt && [ ! -e bad.h5 ] || { cat err.txt; fail "bad regex: status $rc"; }
ok "an invalid --group-regex is a one-line error and leaves no file"
echo "pack_groups: $pass passed, 0 failed"
