#!/usr/bin/env bash
# Regenerates the committed seed corpora in tests/fuzz/corpus/ (keep them small: < 2 MB in all) with a
# built tree: images and model texts from fuzz_make_corpus, datasets and checkpoints from xray-dp itself.
# Usage: tests/fuzz/make_corpus.sh   (env BUILD_DIR, default build)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${BUILD_DIR:-build}
C=tests/fuzz/corpus
rm -rf "$C"
mkdir -p "$C/image" "$C/model" "$C/dataset" "$C/checkpoint"
"$B/fuzz_make_corpus" "$C/image" "$C/model"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# datasets: the synthetic one at 16 px (train/val/test), and a pack of a few odd-sized images at 8 px
"$B/xray-dp" synth "$C/dataset/synth16.h5" --n 10 --size 16 --threads 1 > /dev/null
mkdir -p "$T/src/NORMAL" "$T/src/PNEUMONIA"
cp "$C/image/gray.pgm" "$T/src/NORMAL/a.pgm"
cp "$C/image/gray8.png" "$T/src/NORMAL/b.png"
cp "$C/image/gray.jpg" "$T/src/PNEUMONIA/c.jpg"
cp "$C/image/rgb24.bmp" "$T/src/PNEUMONIA/d.bmp"
"$B/xray-dp" pack "$T/src" "$C/dataset/pack8.h5" --size 8 --val-fraction 0 > /dev/null 2>&1
# checkpoints: a tiny model trained one epoch: best.h5 (weights) and last.h5 (AdamW moments and an EMA)
printf 'input 1x16x16\nconv 2 3x3 relu pad=same bias=0\nbatchnorm\nmaxpool 2x2\nflatten\ndense 4 relu\ndropout 0.1\ndense 1 sigmoid\n' > "$T/m.txt"
"$B/xray-dp" train --data "$C/dataset/synth16.h5" --model "$T/m.txt" --epochs 1 --batch 4 --threads 1 --quiet \
  --optimizer adamw --ema 0.9 --out "$T/run" > /dev/null
cp "$T/run/best.h5" "$C/checkpoint/best.h5"
cp "$T/run/last.h5" "$C/checkpoint/last.h5"
printf 'input 1x16x16\nstandardize\nconv 2 3x3 pad=1 name=a\nconv 2 3x3 pad=1\nadd a relu\nglobalavgpool\ndense 2 softmax\n' > "$T/g.txt"
"$B/xray-dp" train --data "$C/dataset/synth16.h5" --model "$T/g.txt" --epochs 1 --batch 4 --threads 1 --quiet \
  --out "$T/run2" > /dev/null
cp "$T/run2/last.h5" "$C/checkpoint/graph_softmax_last.h5"
du -sh "$C" "$C"/*
