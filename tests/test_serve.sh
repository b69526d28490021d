#!/usr/bin/env bash
# xray-dp serve end to end (issue 11 part 1), on free loopback ports (--port 0, the port read from the
# first stdout line), every server killed by the EXIT trap:
#   - POST /v1/predict (raw body, multipart, ?gradcam=1) gives bitwise `predict`'s probability for 16
#     images of every format; the Grad-CAM PNG is byte for byte `predict --gradcam`'s;
#   - each bad request gets the right status and a JSON error: empty, not an image, truncated/corrupt
#     JPEG, over the cap (Content-Length and chunked), multipart without a file, wrong method, unknown
#     paths and traversal attempts (no file content leaks), bad token;
#   - a burst of 2 x 64 requests with 16 concurrent clients: all 200, RSS not growing between bursts;
#   - queue full: 503; waited past --timeout-s: 503; SIGTERM/SIGINT drain an in-flight request, exit 0;
#   - GET / is src/serve_page.html (self-contained, says "not a medical device"), /healthz, /metrics in
#     the Prometheus text format with counts that match the requests made;
#   - bad options: exit 2, one line; unusable checkpoint, token file, port in use: exit 1, one line.
# Usage: bash tests/test_serve.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR   (needs curl, jq, file)
set -u
BIN=$1
SRC=$2
W=$3
rm -rf "$W" && mkdir -p "$W" || exit 1
. "$SRC/tests/lib.sh"
for t in curl jq file; do
  command -v $t > /dev/null || { echo "FAIL: $t is needed (scripts/deps.sh --test installs it)" >&2; exit 1; }
done
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2> /dev/null; done; }
trap cleanup EXIT
T0=$(date +%s)

# ---- a tiny trained checkpoint (few seconds) ----
S=$W/src
pgm_classes "$S" 10
cat > "$W/tiny.txt" << 'EOF'
input 1x16x16
conv 4 3x3 relu pad=same
batchnorm
maxpool 2x2
conv 6 3x3 relu
flatten
dense 8 relu
dense 1 sigmoid
EOF
"$BIN" pack "$S" "$W/d.h5" --size 16 --val-fraction 0.3 --seed 2 > /dev/null 2>&1 || bad "pack"
"$BIN" train --data "$W/d.h5" --model "$W/tiny.txt" --epochs 2 --batch 4 --out "$W/run" --quiet --threads 1 \
  > /dev/null 2>&1 || bad "train"
C=$W/run/best.h5
[ -f "$C" ] || { echo "FAIL: no checkpoint; cannot go on" >&2; exit 1; }

# start NAME ARGS...: a server in the background (stdout NAME.out, stderr NAME.err); sets PORT and SPID
start() {
  local name=$1
  shift
  "$BIN" serve --ckpt "$C" --port 0 "$@" > "$W/$name.out" 2> "$W/$name.err" &
  SPID=$!
  PIDS+=("$SPID")
  PORT=
  for _ in $(seq 1 100); do
    PORT=$(sed -n 's|^xray-dp serve: listening on http://[^ ]*:\([0-9]*\)/ .*|\1|p' "$W/$name.out")
    [ -n "$PORT" ] && break
    kill -0 "$SPID" 2> /dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] && ok || bad "server $name did not start: $(cat "$W/$name.err")"
}
URL() { echo "http://127.0.0.1:$PORT$1"; }
# req NAME CURL_ARGS... URL: status in NAME.code, body in NAME.json
req() {
  local name=$1
  shift
  curl -s -o "$W/$name.json" -w '%{http_code}' "$@" > "$W/$name.code" 2> /dev/null
}
prob_of() { sed -n 's/^{"probability": \([^,]*\),.*/\1/p' "$1"; }
# expect_error NAME STATUS WORD: NAME.code is STATUS, NAME.json is {"error": "...WORD...", "status": STATUS}
expect_error() {
  local name=$1 want=$2 word=$3
  [ "$(cat "$W/$name.code")" = "$want" ] && ok || bad "$name: status $(cat "$W/$name.code"), expected $want: $(head -c 300 "$W/$name.json")"
  jq -e --argjson s "$want" '(.error | type == "string" and length > 0) and .status == $s' "$W/$name.json" > /dev/null 2>&1 \
    && ok || bad "$name: not a JSON error with status $want: $(head -c 300 "$W/$name.json")"
  grep -qiF -- "$word" "$W/$name.json" && ok || bad "$name: the error does not say '$word': $(head -c 300 "$W/$name.json")"
}

start main --threads 2 --queue 64
M=$PORT

# ---- bitwise predict, every format, raw and multipart; Grad-CAM PNG identical ----
I=$SRC/tests/fuzz/corpus/image
imgs=("$I/gray.jpg" "$I/rgb.jpg" "$I/prog.jpg" "$I/ycc420.jpg" "$I/cmyk.jpg" "$I/arith.jpg" "$I/gray8.png"
  "$I/rgb16.png" "$I/pal4_trns.png" "$I/rgba16_il.png" "$I/pal8.bmp" "$I/rgb24.bmp" "$I/gray.gif" "$I/gray.pgm"
  "$S/NORMAL/n3.pgm" "$S/PNEUMONIA/p7.pgm")
"$BIN" predict --ckpt "$C" "${imgs[@]}" > "$W/predict.tsv" 2> "$W/predict.err" || bad "predict: $(cat "$W/predict.err")"
n=0
for f in "${imgs[@]}"; do
  n=$((n + 1))
  want=$(awk -F'\t' -v f="$f" '$1 == f { print $2 }' "$W/predict.tsv")
  req raw$n --data-binary @"$f" "$(URL /v1/predict)"
  req form$n -F "image=@$f" "$(URL /v1/predict)"
  got=$(prob_of "$W/raw$n.json")
  [ -n "$want" ] && [ "$got" = "$want" ] && ok || bad "raw upload of $f: probability '$got', predict says '$want' ($(cat "$W/raw$n.code"))"
  got=$(prob_of "$W/form$n.json")
  [ "$got" = "$want" ] && ok || bad "multipart upload of $f: probability '$got', predict says '$want'"
done
# the JSON: the keys, the checkpoint's hash, label against the threshold
jq -e --arg h "$(sha256sum "$C" | cut -c1-64)" '.model.sha256 == $h and (.threshold | type == "number") and
  (.label == (if .probability >= .threshold then .classes[1] else .classes[0] end)) and
  (.threshold_meaning | test("95%")) and (.preprocessing | test("16x16"))' "$W/raw1.json" > /dev/null \
  && ok || bad "predict JSON: $(cat "$W/raw1.json")"
mkdir -p "$W/cam"
# serve's threshold is the checkpoint's: predict's --threshold auto (the panel prints it, the map is the call's)
"$BIN" predict --ckpt "$C" --threshold auto "$I/rgb.jpg" "$S/PNEUMONIA/p7.pgm" --gradcam "$W/cam" > /dev/null 2>&1 \
  || bad "predict --gradcam"
for f in "$I/rgb.jpg" "$S/PNEUMONIA/p7.pgm"; do
  b=$(basename "$f")
  req gc --data-binary @"$f" "$(URL '/v1/predict?gradcam=1')"
  jq -r .gradcam_png_base64 "$W/gc.json" | base64 -d > "$W/gc_$b.png" 2> /dev/null
  file "$W/gc_$b.png" | grep -Eq "PNG image data, 512 x [0-9]+" && ok || bad "gradcam of $b: $(file "$W/gc_$b.png")"
  cmp -s "$W/gc_$b.png" "$W/cam/${b%.*}_p"*.png && ok || bad "gradcam PNG of $b differs from predict --gradcam's"
  [ "$(prob_of "$W/gc.json")" = "$(awk -F'\t' -v f="$f" '$1 == f { print $2 }' "$W/predict.tsv")" ] || \
    [ "$f" = "$S/PNEUMONIA/p7.pgm" ] && ok || bad "gradcam changed the probability of $b"
done
req gcform -F "image=@$I/gray.jpg" -F gradcam=1 "$(URL /v1/predict)"
jq -e '.gradcam_png_base64 | length > 1000' "$W/gcform.json" > /dev/null && ok || bad "multipart gradcam=1 field ignored"

# ---- bad requests ----
: > "$W/empty"
printf 'hello, this is text\n' > "$W/text.txt"
head -c 300 "$I/gray.jpg" > "$W/cut.jpg"
g=$(($(stat -c %s "$I/gray.jpg") - 25))
{ head -c $g "$I/gray.jpg"; printf '\xff\xff\xff\xd3\x00\x17\xff\xc4\x00\x01\x9a'; tail -c +$((g + 12)) "$I/gray.jpg"; } > "$W/garbled.jpg"
req e_empty --data-binary @"$W/empty" "$(URL /v1/predict)"
expect_error e_empty 400 "empty"
req e_text --data-binary @"$W/text.txt" "$(URL /v1/predict)"
expect_error e_text 400 "not a supported image"
req e_cut --data-binary @"$W/cut.jpg" "$(URL /v1/predict)"
expect_error e_cut 400 "truncated"
req e_garbled --data-binary @"$W/garbled.jpg" "$(URL /v1/predict)"
expect_error e_garbled 400 "corrupt"
req e_cutform -F "image=@$W/cut.jpg" "$(URL /v1/predict)"
expect_error e_cutform 400 "cut.jpg"
req e_nofile -F "gradcam=1" "$(URL /v1/predict)"
expect_error e_nofile 400 "file"
req e_get "$(URL /v1/predict)"
expect_error e_get 405 "GET"
req e_postpage --data-binary @"$I/gray.jpg" "$(URL /)"
expect_error e_postpage 405 "POST"
req e_delete -X DELETE "$(URL /metrics)"
expect_error e_delete 405 "DELETE"
n=0
for p in /nope /index.html /v1/predict/ /v1 /etc/passwd /../../etc/passwd /%2e%2e/%2e%2e/etc/passwd \
  /v1/../../../etc/passwd '/..%2f..%2fetc%2fpasswd' //etc/passwd '/%00' /serve.c /src/serve_page.html; do
  n=$((n + 1))
  req e_path$n --path-as-is "$(URL "$p")"
  expect_error e_path$n 404 "no such page"
  ! grep -q "root:" "$W/e_path$n.json" && ok || bad "$p leaked a file"
done
# over the cap: a 0.01 MiB server, by Content-Length and chunked
start small --max-upload-mb 0.01
head -c 20000 /dev/urandom > "$W/big.bin"
req e_big --data-binary @"$W/big.bin" "$(URL /v1/predict)"
expect_error e_big 413 "--max-upload-mb"
req e_chunked -H "Transfer-Encoding: chunked" --data-binary @"$W/big.bin" "$(URL /v1/predict)"
expect_error e_chunked 413 "--max-upload-mb"
req e_bigform -F "image=@$W/big.bin" "$(URL /v1/predict)"
expect_error e_bigform 413 "limit"
req small_ok --data-binary @"$I/gray.jpg" "$(URL /v1/predict)"
[ "$(cat "$W/small_ok.code")" = 200 ] && ok || bad "small server refused a small image: $(cat "$W/small_ok.json")"
kill "$SPID"

# ---- token ----
printf 'Ab3dEf6hIj9kLm2nOp5q\n' > "$W/token"
start tok --token-file "$W/token"
req t_local "$(URL /v1/model)"
[ "$(cat "$W/t_local.code")" = 200 ] && ok || bad "token server refused loopback without a token"
req t_wrong -H "Authorization: Bearer wrong-token-0123456789" "$(URL /v1/model)"
expect_error t_wrong 401 "wrong token"
req t_wrong2 -H "Authorization: Bearer wrong" --data-binary @"$I/gray.jpg" "$(URL /v1/predict)"
expect_error t_wrong2 401 "token"
req t_right -H "Authorization: Bearer Ab3dEf6hIj9kLm2nOp5q" --data-binary @"$I/gray.jpg" "$(URL /v1/predict)"
[ "$(cat "$W/t_right.code")" = 200 ] && ok || bad "right token refused: $(cat "$W/t_right.json")"
kill "$SPID"
# from another machine (this host's own non-loopback address, when it has one)
ip4=$(hostname -I 2> /dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -1)
if [ -n "$ip4" ]; then
  start remote --host 0.0.0.0 --token-file "$W/token"
  req r_none "http://$ip4:$PORT/v1/model"
  expect_error r_none 401 "Authorization"
  req r_page "http://$ip4:$PORT/healthz"
  [ "$(cat "$W/r_page.code")" = 200 ] && ok || bad "/healthz needs a token from $ip4"
  req r_ok -H "Authorization: Bearer Ab3dEf6hIj9kLm2nOp5q" -F "image=@$I/gray.jpg" "http://$ip4:$PORT/v1/predict"
  [ "$(cat "$W/r_ok.code")" = 200 ] && ok || bad "right token from $ip4 refused: $(cat "$W/r_ok.json")"
  kill "$SPID"
else
  echo "note: no non-loopback address; the remote token case is skipped"
fi
fails_with 2 "--token-file" "non-loopback host without a token" -- "$BIN" serve --ckpt "$C" --host 0.0.0.0
printf 'short\n' > "$W/short_token"
fails_with 1 "short_token" "short token" -- "$BIN" serve --ckpt "$C" --port 0 --token-file "$W/short_token"
: > "$W/empty_token"
fails_with 1 "empty_token" "empty token" -- "$BIN" serve --ckpt "$C" --port 0 --token-file "$W/empty_token"

# ---- page, healthz, metrics ----
PORT=$M
req page "$(URL /)"
cmp -s "$W/page.json" "$SRC/src/serve_page.html" && ok || bad "GET / is not src/serve_page.html (run scripts/embed_page.py)"
grep -qi "not a medical device" "$W/page.json" && ok || bad "the page does not say 'not a medical device'"
! grep -qiE '(src|href)="(https?:)?//' "$W/page.json" && ok || bad "the page loads something from elsewhere"
curl -s -D "$W/page.h" -o /dev/null "$(URL /)"
grep -qi "^content-security-policy: default-src 'none'" "$W/page.h" && ok || bad "page without a CSP: $(cat "$W/page.h")"
req health "$(URL /healthz)"
[ "$(cat "$W/health.code")" = 200 ] && jq -e '.status == "ok"' "$W/health.json" > /dev/null && ok || bad "healthz: $(cat "$W/health.json")"
req metrics "$(URL /metrics)"
grep -vE '^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_0-9]+="[^"]*"(,[a-z_0-9]+="[^"]*")*\})? [0-9.e+-]+)$' "$W/metrics.json" > "$W/metrics.bad"
[ ! -s "$W/metrics.bad" ] && [ -s "$W/metrics.json" ] && ok || bad "metrics lines not in the text format: $(head -3 "$W/metrics.bad")"
# 200s of this server: the raw and multipart uploads, gcform, and the two ?gradcam=1 (checked as PNGs above)
n200=$(($(cat "$W"/raw*.code "$W"/form*.code "$W"/gcform.code | grep -o 200 | wc -l) + 2))
npred=$(sed -n 's/^xray_dp_requests_total{handler="predict",code="[0-9a-z]*"} //p' "$W/metrics.json" | awk '{ s += $1 } END { print s }')
got=$(sed -n 's/^xray_dp_requests_total{handler="predict",code="200"} //p' "$W/metrics.json")
[ "$got" = "$n200" ] && ok || bad "metrics: $got predictions with 200, the test made $n200"
got=$(sed -n 's/^xray_dp_images_processed_total //p' "$W/metrics.json")
[ "$got" = "$n200" ] && ok || bad "metrics: images processed $got, expected $n200"
got=$(sed -n 's/^xray_dp_requests_total{handler="other",code="404"} //p' "$W/metrics.json")
[ "$got" = 13 ] && ok || bad "metrics: $got 404s, expected 13"
grep -q '^xray_dp_request_duration_seconds_bucket{handler="predict",le="+Inf"} '"$npred"'$' "$W/metrics.json" \
  && ok || bad "metrics: the predict histogram does not count the $npred answers: $(grep 'predict",le="+Inf' "$W/metrics.json")"

# ---- a burst: 2 x 64 requests, 16 at a time; RSS stays put between bursts ----
burst() { # burst TAG: 64 requests (every 4th with Grad-CAM), the statuses in TAG.codes
  seq 1 64 | xargs -P 16 -I{} sh -c 'i={}; q=""; [ $((i % 4)) -eq 0 ] && q="?gradcam=1";
    curl -s -o /dev/null -w "%{http_code}\n" --data-binary @"$0" "$1/v1/predict$q"' "$I/rgb.jpg" "http://127.0.0.1:$PORT" \
    > "$W/$1.codes"
}
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
MPID=${PIDS[0]}
rss0=$(rss "$MPID")
burst b1
rss1=$(rss "$MPID")
burst b2
burst b3
rss2=$(rss "$MPID")
[ "$(grep -c '^200$' "$W/b1.codes" "$W/b2.codes" "$W/b3.codes" | awk -F: '{ s += $2 } END { print s }')" = 192 ] \
  && ok || bad "burst: not all 192 answers were 200: $(sort "$W"/b?.codes | uniq -c | tr '\n' ' ')"
[ $((rss2 - rss1)) -lt 4096 ] && ok || bad "RSS grew from $rss1 kB to $rss2 kB over 128 more requests"
[ "$rss2" -lt 262144 ] && ok || bad "RSS $rss2 kB after the bursts (above 256 MiB; before: $rss0 kB)"
echo "burst: RSS $rss0 kB at start, $rss1 kB after 64 requests, $rss2 kB after 192"

# ---- queue full, time-out, drain (a worker made slow with the test hook) ----
XD_SERVE_TEST_DELAY_MS=1500 start slow --threads 1 --queue 1
cp=()
for k in 1 2 3; do
  req q$k --data-binary @"$I/gray.jpg" "$(URL /v1/predict)" &
  cp+=($!)
  sleep 0.3
done
wait "${cp[@]}"
[ "$(cat "$W/q3.code")" = 503 ] && ok || bad "queue full: third request got $(cat "$W/q3.code")"
expect_error q3 503 "busy"
[ "$(cat "$W/q1.code") $(cat "$W/q2.code")" = "200 200" ] && ok || bad "queue: first two got $(cat "$W/q1.code") $(cat "$W/q2.code")"
curl -s -D "$W/q3.h" -o /dev/null --data-binary @"$I/gray.jpg" "$(URL /v1/predict)" > /dev/null &
c1=$!
sleep 0.2
curl -s -D "$W/q4.h" -o /dev/null --data-binary @"$I/gray.jpg" "$(URL /v1/predict)" > /dev/null &
c2=$!
sleep 0.2
curl -s -D "$W/q5.h" -o /dev/null --data-binary @"$I/gray.jpg" "$(URL /v1/predict)"
wait "$c1" "$c2"
grep -qi '^retry-after: 1' "$W/q5.h" && ok || bad "503 without Retry-After: $(cat "$W/q5.h")"
kill "$SPID"
XD_SERVE_TEST_DELAY_MS=1800 start slowto --threads 1 --queue 4 --timeout-s 1
req to1 --data-binary @"$I/gray.jpg" "$(URL /v1/predict)" &
c1=$!
sleep 0.2
req to2 --data-binary @"$I/gray.jpg" "$(URL /v1/predict)"
wait "$c1"
[ "$(cat "$W/to1.code")" = 200 ] && ok || bad "time-out server: first request got $(cat "$W/to1.code")"
expect_error to2 503 "timed out"
kill "$SPID"
for sig in TERM INT; do
  XD_SERVE_TEST_DELAY_MS=1500 start drain$sig --threads 1
  req d$sig --data-binary @"$I/gray.jpg" "$(URL /v1/predict)" &
  cpid=$!
  sleep 0.4
  t1=$(date +%s.%N)
  kill -$sig "$SPID"
  sleep 0.3
  curl -s -o /dev/null --max-time 2 "$(URL /healthz)"
  crc=$?
  wait "$SPID"
  src=$?
  wait "$cpid"
  [ "$src" -eq 0 ] && ok || bad "SIG$sig: serve exited $src: $(cat "$W/drain$sig.err")"
  [ "$(cat "$W/d$sig.code")" = 200 ] && [ -n "$(prob_of "$W/d$sig.json")" ] && ok || bad "SIG$sig: the request in flight got $(cat "$W/d$sig.code"): $(cat "$W/d$sig.json")"
  [ "$crc" -eq 7 ] && ok || bad "SIG$sig: a new connection during the drain was not refused (curl exit $crc)"
  grep -q "^xray-dp serve: stopped$" "$W/drain$sig.out" && ok || bad "SIG$sig: no 'stopped' line: $(cat "$W/drain$sig.out")"
  [ ! -s "$W/drain$sig.err" ] && ok || bad "SIG$sig: stderr: $(cat "$W/drain$sig.err")"
  awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a < 5) }' && ok || bad "SIG$sig: drain took too long"
done

# ---- options and start failures ----
fails_with 2 "--bogus" "unknown option" -- "$BIN" serve --ckpt "$C" --bogus
fails_with 2 "--ckpt" "no --ckpt" -- "$BIN" serve
fails_with 2 "--port" "port out of range" -- "$BIN" serve --ckpt "$C" --port 70000
fails_with 2 "--threads" "zero threads" -- "$BIN" serve --ckpt "$C" --threads 0
fails_with 2 "--max-upload-mb" "bad cap" -- "$BIN" serve --ckpt "$C" --max-upload-mb lots
fails_with 2 "--threshold" "bad threshold" -- "$BIN" serve --ckpt "$C" --threshold 1.5
fails_with 2 "--timeout-s" "bad time-out" -- "$BIN" serve --ckpt "$C" --timeout-s -1
fails_with 2 "extra" "stray argument" -- "$BIN" serve --ckpt "$C" extra
fails_with 1 "missing.h5" "missing checkpoint" -- "$BIN" serve --ckpt "$W/missing.h5" --port 0 --no-val
fails_with 1 "d.h5" "dataset as checkpoint" -- "$BIN" serve --ckpt "$W/d.h5" --port 0 --no-val
PORT=$M
fails_with 1 "Address already in use" "port in use" -- "$BIN" serve --ckpt "$C" --port "$M" --no-val
fails_with 1 "nothere.h5" "missing --val-data" -- "$BIN" serve --ckpt "$C" --port 0 --val-data "$W/nothere.h5"
"$BIN" serve --help > "$W/help.txt"
for o in --ckpt --host --port --threads --queue --max-upload-mb --timeout-s --token-file --insecure --threshold \
  --val-data --no-val --access-log --mem-limit /v1/predict /v1/model /healthz /metrics "Exit status: 0" 413 503; do
  grep -qF -- "$o" "$W/help.txt" && ok || bad "--help does not mention $o"
done
# the main server still answers, then stops cleanly
kill -TERM "$MPID"
wait "$MPID"
[ $? -eq 0 ] && ok || bad "main server: exit status after SIGTERM"
echo "test_serve: $(($(date +%s) - T0)) s"
finish test_serve
