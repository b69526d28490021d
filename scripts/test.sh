#!/usr/bin/env bash
# One command: install what is missing, build, and run the whole test suite (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
scripts/build.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
