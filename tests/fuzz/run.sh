#!/usr/bin/env bash
# Fuzz smoke run: builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and UBSan into
# build-fuzz/, then runs each for FUZZ_SECONDS on a scratch copy of its committed seed corpus, FUZZ_JOBS
# at a time. Any crash, sanitizer report, leak, timeout, out-of-memory, broken message or HDF5 object
# left open fails the script; the input is kept under build-fuzz/artifacts/ with the command that
# replays it. A crash input becomes a regression test by committing it to tests/fuzz/regress/<target>/
# (ctest's fuzz_replay_<target> replays it in every build).
# env: BUILD_DIR (build-fuzz), FUZZ_SECONDS (50), FUZZ_JOBS (2), FUZZ_SEED (1; 0 = random),
#      FUZZ_TARGETS ("image model dataset checkpoint")
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${BUILD_DIR:-build-fuzz}
secs=${FUZZ_SECONDS:-50}
jobs=${FUZZ_JOBS:-2}
seed=${FUZZ_SEED:-1}
targets=${FUZZ_TARGETS:-image model dataset checkpoint}
command -v clang > /dev/null || { echo "fuzz: clang is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
flags="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DXD_TESTS=OFF -DXD_FUZZ=ON -DXD_NATIVE=OFF \
  -DCMAKE_C_FLAGS="$flags" > /dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
names=()
for t in $targets; do names+=("fuzz_$t"); done
if ! cmake --build "$dir" -j"$jobs" --target "${names[@]}" > "$log" 2>&1; then
  cat "$log" >&2
  echo "fuzz: the build in $dir failed" >&2
  exit 1
fi
rm -rf "$dir/artifacts" && mkdir -p "$dir/artifacts"
# LeakSanitizer needs ptrace, which some containers refuse: then leaks are not checked (said once).
leaks=1
first=$(set -- $targets; echo "$1")
if ASAN_OPTIONS=detect_leaks=1 "$dir/fuzz_$first" -runs=1 "tests/fuzz/corpus/$first" 2>&1 |
  grep -q "LeakSanitizer has encountered a fatal error"; then
  leaks=0
  echo "fuzz: LeakSanitizer cannot run here (ptrace refused?): leaks are not checked"
fi
# The HDF5 targets run in fork mode, where a timeout does not end the run: libhdf5 1.10's own decoders
# loop forever on some damaged files (its global heap reader, H5HG), which the project cannot fix. Each
# such input is replayed afterwards and excused only if the stack at the timeout is inside libhdf5.
hdf5_target() { [ "$1" = dataset ] || [ "$1" = checkpoint ]; }
run_one() { # run_one TARGET: exit status of the fuzzer
  local t=$1 work=$dir/corpus/$1 extra=()
  rm -rf "$work" && mkdir -p "$work"
  [ -f "tests/fuzz/$t.dict" ] && extra+=("-dict=tests/fuzz/$t.dict")
  if hdf5_target "$t"; then extra+=(-fork=1 -ignore_timeouts=1 -ignore_ooms=0 -ignore_crashes=0 -timeout=3)
  else extra+=(-timeout=30 -print_final_stats=1); fi
  ASAN_OPTIONS=detect_leaks=$leaks:allocator_may_return_null=1 LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp \
    UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=1 \
    "$dir/fuzz_$t" -max_total_time="$secs" -seed="$seed" -rss_limit_mb=2048 -max_len=131072 \
    -artifact_prefix="$dir/artifacts/$t-" "${extra[@]}" "$work" "tests/fuzz/corpus/$t" > "$dir/fuzz_$t.log" 2>&1
}
fail=0
declare -A pid_of
for t in $targets; do
  run_one "$t" &
  pid_of[$t]=$!
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
done
for t in $targets; do
  rc=0
  wait "${pid_of[$t]}" || rc=$?
  st=ok
  excused=0
  if [ "$rc" -ne 0 ]; then
    st=FAILED
    others=0 # artifacts other than timeouts (crash, leak, oom)
    for a in "$dir/artifacts/$t-"*; do [ -e "$a" ] && [[ "$a" != *-timeout-* ]] && others=1; done
    if hdf5_target "$t" && [ "$rc" -eq 70 ] && [ "$others" -eq 0 ]; then
      st=ok
      k=0
      for a in "$dir/artifacts/$t-timeout-"*; do
        k=$((k + 1))
        if [ "$k" -gt 10 ]; then # bounded time: the first ten are replayed
          echo "fuzz $t: $a not replayed (more than ten timeouts)"
          continue
        fi
        ASAN_OPTIONS=detect_leaks=0 "$dir/fuzz_$t" -timeout=3 -runs=1 "$a" > "$dir/replay.log" 2>&1 || true
        # the first frame below libFuzzer's alarm handler and the signal trampoline
        top=$(awk '/^ +#[0-9]+ / && !/__sanitizer|fuzzer::|libc\.so/ { print; exit }' "$dir/replay.log")
        if [[ "$top" == *libhdf5* ]]; then
          excused=$((excused + 1))
        else
          st=FAILED
          echo "fuzz $t: $a times out outside libhdf5:" >&2
          grep -A12 "ERROR: libFuzzer: timeout" "$dir/replay.log" >&2 || true
        fi
      done
    fi
  fi
  [ "$st" = ok ] || fail=1
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/fuzz_$t.log" | grep -o '[0-9]*$' ||
    grep -o '^#[0-9]*' "$dir/fuzz_$t.log" | tail -1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]*' "$dir/fuzz_$t.log" | tail -1 | grep -o '[0-9]*' || echo "?")
  corp=$(ls "$dir/corpus/$t" | wc -l)
  echo "fuzz $t: $st, ${execs:-?} executions in ${secs} s, coverage ${cov} edges, $corp new corpus inputs"
  [ "$excused" -gt 0 ] && echo "fuzz $t: $excused input(s) hang inside libhdf5 itself (not counted as failures):" \
    $(ls "$dir/artifacts/$t-timeout-"*)
  if [ "$st" = FAILED ]; then
    grep -E "ERROR:|SUMMARY:|runtime error|#[0-9]+ 0x| in |message breaks|left open|Test unit written" \
      "$dir/fuzz_$t.log" | awk 'NR <= 40' >&2 || true
    for a in "$dir/artifacts/$t-"*; do
      [ -e "$a" ] && echo "fuzz $t: input kept in $a; replay: $dir/fuzz_$t $a; keep it as a regression test in tests/fuzz/regress/$t/" >&2
    done
  fi
done
[ "$fail" -eq 0 ] && echo "fuzz: all targets ran clean" || { echo "fuzz: a target failed (logs in $dir/fuzz_*.log)" >&2; exit 1; }
