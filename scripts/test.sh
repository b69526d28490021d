#!/usr/bin/env bash
# One command: install what is missing, build, and run the whole test suite (ctest), the unit tests again
# under ASan+UBSan and a short run of every fuzz target (tests/fuzz/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 900 "$@"
# The C unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (any finding fails).
# Leak checking is off: it needs ptrace, which containers often refuse.
if [ $# -eq 0 ]; then
  BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/build.sh -DXD_NATIVE=OFF \
    -DCMAKE_C_FLAGS="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -L unit --output-on-failure --timeout 900
  # Fuzz smoke run: the libFuzzer targets (image decoding, model parser, dataset validator, checkpoint
  # loader) built with clang, ASan and UBSan, each FUZZ_SECONDS (default 50), two at a time.
  tests/fuzz/run.sh
fi
