#!/usr/bin/env bash
# Hostile dataset files through `xray-dp info` (issue 9, items 3 and 4 for readers): every crafted file of
# tests/test_rel_dataset.c --make (10^10 images declared in a few KB, missing chunks, counts that disagree,
# labels out of range, geometry attributes vs the images, overlong class names, links and external raw
# data on a FIFO, a flipped byte under Fletcher-32, ...) exits 1 with one line naming the file and the
# problem and nothing on stdout, in well under a second; FIFO/directory/device paths are refused at once;
# --mem-limit refuses labels and chunks above it; --verify reads every image and reports a checksum
# mismatch; a packed dataset still reads.
# Usage: bash tests/test_rel_dataset_cli.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR  (the crafting helper
# test_rel_dataset is built next to CKPT_DIFF's ckpt_diff)
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
TOOLS=$(dirname "${CKPT_DIFF:-$(dirname "$BIN")/ckpt_diff}")
MAKE=$TOOLS/test_rel_dataset
[ -x "$MAKE" ] || { echo "FAIL: $MAKE is missing (built with the tests)" >&2; exit 1; }
D=$W/d
mkdir -p "$D"
"$MAKE" --make "$D" || { echo "FAIL: test_rel_dataset --make" >&2; exit 1; }

ms() { date +%s%N | cut -c1-13; }
n=0
while IFS=$'\t' read -r name words; do
  n=$((n + 1))
  t0=$(ms)
  fails_with 1 "$name" "info $name" -- timeout 30 "$BIN" info "$D/$name"
  dt=$(($(ms) - t0))
  grep -qF -- "$words" "$W/err.txt" && ok || bad "info $name: expected '$words', got: $(cat "$W/err.txt")"
  [ "$dt" -lt 1000 ] && ok || bad "info $name took $dt ms"
done < "$D/bad.tsv"
[ "$n" -ge 19 ] && ok || bad "only $n crafted dataset files"
size=$(stat -c %s "$D/bad_images_1e10_contiguous.h5")
[ "$size" -lt 16384 ] && ok || bad "the 10^10-image file is $size bytes"
echo "info refused $n crafted dataset files (the 10^10-image one is $size bytes)"

# not regular files
mkfifo "$W/fifo.h5"
fails_with 1 "not a regular file (a FIFO)" "info on a FIFO" -- timeout 10 "$BIN" info "$W/fifo.h5"
fails_with 1 "not a regular file (a directory)" "info on a directory" -- "$BIN" info "$D"
fails_with 1 "not a regular file (a character device)" "info on /dev/zero" -- timeout 10 "$BIN" info /dev/zero

# the memory budget
fails_with 1 "big_labels.h5: /train/labels (2000000 labels) needs" "info --mem-limit 1M, 2M labels" -- \
  "$BIN" info "$D/big_labels.h5" --mem-limit 1M
grep -q "above the memory limit of 1.0 MiB (--mem-limit)" "$W/err.txt" && ok || bad "no memory limit in: $(cat "$W/err.txt")"
fails_with 1 "big_chunks.h5: /train/images has chunks of 1310720 bytes" "info --mem-limit 1M, big chunks" -- \
  "$BIN" info "$D/big_chunks.h5" --mem-limit 1M
fails_with 2 "--mem-limit" "info --mem-limit 12Q" -- "$BIN" info "$D/fletcher.h5" --mem-limit 12Q

# checksums: info reports them, --verify reads every image
run "$BIN" info "$D/fletcher.h5" --verify
[ "$(rc)" -eq 0 ] && grep -q "checksums: Fletcher-32 on images and labels (all verified)" "$W/out.txt" && ok ||
  bad "info --verify fletcher.h5: exit $(rc): $(cat "$W/out.txt" "$W/err.txt")"
run "$BIN" info "$D/flip_images.h5"
[ "$(rc)" -eq 0 ] && ok || bad "info without --verify reads no image, yet: $(cat "$W/err.txt")"
fails_with 1 "flip_images.h5: checksum mismatch in /train/images (file corrupted" "info --verify, flipped image byte" -- \
  "$BIN" info "$D/flip_images.h5" --verify

# a packed dataset still reads, with and without --verify
S=$W/src
mkdir -p "$S/NORMAL" "$S/PNEUMONIA"
for i in 1 2 3 4; do
  pgm "$S/NORMAL/n$i.pgm" $((18 + i)) $((20 + i)) "$i" 0
  pgm "$S/PNEUMONIA/p$i.pgm" $((24 - i)) $((17 + i)) $((50 + i)) 60
done
"$BIN" pack "$S" "$W/p.h5" --size 16 > /dev/null 2> "$W/pack.err" || bad "pack: $(cat "$W/pack.err")"
run "$BIN" info "$W/p.h5" --verify
[ "$(rc)" -eq 0 ] && grep -q "^train" "$W/out.txt" && ok || bad "info --verify on a packed file: $(cat "$W/err.txt")"
# a path whose stored length field says 4 GiB (found by the fuzzer): refused from the raw references at
# open, before HDF5 allocates anything (it used to allocate 4 GiB per path: 8.4 GB RSS)
F4G=$SRC/tests/fuzz/regress/dataset/dataset_vlen_4g.h5
t0=$(ms)
fails_with 1 "dataset_vlen_4g.h5: /train/paths[0] declares a path of 4294967280 bytes" "4 GiB path length" -- \
  "$BIN" info "$F4G" --mem-limit 256M
[ $(( $(ms) - t0 )) -lt 5000 ] && ok || bad "the 4 GiB path length took $(( $(ms) - t0 )) ms"
# the paths' global heap (no checksum in any HDF5 format): a corrupt object size or index is refused
# before libhdf5 reads it (1.10.8 copied past its buffer or looped forever on such files)
"$BIN" synth "$W/gh.h5" --n 12 --size 16 > /dev/null 2>&1 || bad "synth gh.h5"
for mut in size:4096 size:0 index:0 index:9999; do
  python3 - "$W/gh.h5" "$W/gh_mut.h5" "$mut" <<'PY'
import sys, struct
src, dst, mut = sys.argv[1], sys.argv[2], sys.argv[3]
b = bytearray(open(src, "rb").read())
a = b.index(b"GCOL")
first = a + 16                      # first object: index (2), refcount (2), reserved (4), size (8)
field, val = mut.split(":")
if field == "size":
    b[first + 8:first + 16] = struct.pack("<Q", int(val))
else:
    b[first:first + 2] = struct.pack("<H", int(val))
open(dst, "wb").write(bytes(b))
PY
  t0=$(ms)
  rc=0; timeout 20 "$BIN" info "$W/gh_mut.h5" > /dev/null 2> "$W/err.txt" || rc=$?
  [ "$rc" -eq 1 ] && [ "$(wc -l < "$W/err.txt")" -eq 1 ] && grep -q "gh_mut.h5: /train/paths\[.*(file corrupt?)" "$W/err.txt" &&
    [ $(( $(ms) - t0 )) -lt 5000 ] && ok || bad "heap $mut: exit $rc: $(cat "$W/err.txt")"
done
# ... but a collection whose last bytes are too few for an object header is valid (libhdf5 reads them
# as free space; pack of 400 real X-rays at 128 px writes one): accepted, paths readable
python3 - "$W/gh.h5" "$W/gh_tail.h5" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
a = b.index(b"GCOL")
p, last = a + 16, None
while True:
    idx, _, _, osz = struct.unpack("<HHIQ", b[p:p + 16])
    if idx == 0:
        free = osz
        break
    last = (p, idx, osz)
    p += 16 + (osz + 7) // 8 * 8
lp, lidx, losz = last
new = (losz + 7) // 8 * 8 + free - 8          # the last object grows into the free space, leaving 8 bytes
b[lp + 8:lp + 16] = struct.pack("<Q", new)
r = b.index(struct.pack("<IQI", losz, a, lidx))  # its reference in the raw (unfiltered) paths chunk
b[r:r + 4] = struct.pack("<I", new)
open(sys.argv[2], "wb").write(bytes(b))
PY
run "$BIN" info "$W/gh_tail.h5"
[ "$(rc)" -eq 0 ] && grep -q "^train" "$W/out.txt" && ok || bad "an 8-byte heap tail refused: $(cat "$W/err.txt")"

finish rel_dataset_cli
