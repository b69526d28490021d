# Sourced by the shell tests that count checks: `ok` and `bad MESSAGE` count them, `finish NAME` prints
# the closing line and sets the exit status.
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
finish() { echo "$1: $checks checks, $fails failed"; [ "$fails" -eq 0 ]; }
