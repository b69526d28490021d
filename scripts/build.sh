#!/usr/bin/env bash
# Configures and builds xray-dp into a build directory (default build/, Release). Extra arguments go to
# cmake's configure step, e.g. scripts/build.sh -DXD_NATIVE=ON. Incremental: fast when nothing changed.
# A failed compile fails this script (with the compiler's messages), so nothing runs a stale binary.
# env: BUILD_DIR (default build), BUILD_TYPE (default Release)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@" >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cmake --build "$dir" -j"$(nproc)" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build.sh: the build in $dir failed" >&2
  exit 1
fi
grep -E 'warning|error' "$log" || true
test -x "$dir/xray-dp"
