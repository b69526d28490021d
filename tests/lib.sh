# Sourced by the shell tests that count checks: `ok` and `bad MESSAGE` count them, `finish NAME` prints
# the closing line and sets the exit status.
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
finish() { echo "$1: $checks checks, $fails failed"; [ "$fails" -eq 0 ]; }

# Shared by the tests that drive the CLI (they set W, their work folder, before sourcing this file).
run() { "$@" > "$W/out.txt" 2> "$W/err.txt"; echo $? > "$W/rc.txt"; }
rc() { cat "$W/rc.txt"; }
fails_with() { # fails_with CODE NAME_IN_MESSAGE DESCRIPTION -- command...: exit CODE, one line naming NAME
  local want=$1 name=$2 what=$3; shift 4
  run "$@"
  [ "$(rc)" -eq "$want" ] && ok || bad "$what: exit $(rc), expected $want"
  [ "$(wc -l < "$W/err.txt")" -eq 1 ] && ok || bad "$what: expected one stderr line, got: $(cat "$W/err.txt")"
  grep -qF -- "$name" "$W/err.txt" && ok || bad "$what: message does not name '$name': $(cat "$W/err.txt")"
  [ ! -s "$W/out.txt" ] && ok || bad "$what: wrote to stdout on failure: $(head -c 300 "$W/out.txt")"
}

# Binary PGMs of odd sizes (so the area-average resize runs) with deterministic texture; PNEUMONIA ones
# get a bright blob, so a few training steps separate the classes.
pgm() { # pgm FILE W H SEED BLOB
  local esc
  esc=$(awk -v w="$2" -v h="$3" -v s="$4" -v b="$5" 'BEGIN {
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
      s = (s * 69069 + 12345) % 4294967296
      v = int(40 + 100 * x / w + (s % 60) + b * exp(-((x - w / 2) ^ 2 + (y - h / 3) ^ 2) / (w * h / 10)))
      printf "\\%03o", (v > 255 ? 255 : v)
    } }')
  { printf 'P5\n%d %d\n255\n' "$2" "$3"; printf "$esc"; } > "$1"
}

pgm_classes() { # pgm_classes DIR N: DIR/NORMAL/n1..nN.pgm and DIR/PNEUMONIA/p1..pN.pgm, varied sizes, a blob in PNEUMONIA
  local i
  mkdir -p "$1/NORMAL" "$1/PNEUMONIA"
  for i in $(seq 1 "$2"); do
    pgm "$1/NORMAL/n$i.pgm" $((20 + i)) $((18 + 2 * i)) "$i" 0
    pgm "$1/PNEUMONIA/p$i.pgm" $((30 - i)) $((16 + i)) $((100 + i)) $((20 + 10 * i))
  done
}
