#!/usr/bin/env bash
# How much a packed validation split overlaps train: val images byte-identical to a train image, and val
# images whose group (a match of REGEX on the file name, e.g. the patient id) also has images in train.
# usage: scripts/split_leak.sh SRC FILE.h5 [REGEX]
#   SRC    the folder FILE.h5 was packed from (paths in the file are relative to it)
#   REGEX  POSIX extended, first capture group = the group (default: the Kaggle set's patient ids)
set -euo pipefail
src=$1 file=$2 re=${3:-'^(person[0-9]+|IM-[0-9]+|NORMAL2-IM-[0-9]+)'}
[ -d "$src" ] && [ -f "$file" ] || { echo "usage: scripts/split_leak.sh SRC FILE.h5 [REGEX]" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for sp in train val; do
  h5dump -y -d "/$sp/paths" "$file" | sed -n '/DATA {/,/^ *}/p' | grep -o '"[^"]*"' | tr -d '"' > "$tmp/$sp"
  (cd "$src" && tr '\n' '\0' < "$tmp/$sp" | xargs -0 md5sum) | awk '{print $1}' | sort -u > "$tmp/$sp.md5"
  # group = first capture of REGEX on the file name; unmatched names are their own group
  while IFS= read -r p; do
    n=${p##*/}
    if [[ $n =~ $re ]]; then echo "${BASH_REMATCH[1]:-${BASH_REMATCH[0]}}"; else echo "file:$p"; fi
  done < "$tmp/$sp" > "$tmp/$sp.grp"
done
nval=$(wc -l < "$tmp/val")
dup=$( (cd "$src" && tr '\n' '\0' < "$tmp/val" | xargs -0 md5sum) | awk '{print $1}' | grep -cxFf "$tmp/train.md5" || true)
sort -u "$tmp/train.grp" > "$tmp/train.grpu"
grp=$(grep -cxFf "$tmp/train.grpu" "$tmp/val.grp" || true)
echo "$file: $nval val images; byte-identical to a train image: $dup; from a group (regex '$re') also in train: $grp"
