#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install what is missing, build, and train the default model
# on the built-in synthetic dataset (data/default.h5, created on first use) with 2 MPI ranks.
# The run directory is runs/quickstart (metrics.csv, train.log, best.h5, last.h5). Run again, it resumes
# that run (--resume auto: a finished run has nothing left to do; a larger EPOCHS extends it); remove
# runs/quickstart to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
scripts/mpirun.sh -np 2 build/xray-dp train --out runs/quickstart --resume auto --epochs "${EPOCHS:-10}" "$@"
echo "quickstart: evaluating runs/quickstart/best.h5 on the synthetic test split"
build/xray-dp eval --ckpt runs/quickstart/best.h5 --data data/default.h5 --split test --threshold auto
echo "quickstart: these numbers come from the synthetic test split, which training never saw; sensitivity and" \
  "specificity are at the threshold chosen on the validation split to catch >= 95% of pneumonia cases, so" \
  "specificity is the share of normal images cleared at that sensitivity (AUC: threshold-free, 0.5 = chance)."
