#!/usr/bin/env bash
# Configures and builds xray-dp (Release) into build/. Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DXD_NATIVE=ON. Incremental: fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^(Consolidate|Scanning)' || true
test -x build/xray-dp
