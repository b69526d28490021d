#!/usr/bin/env bash
# The emulated cluster (issue 10, item 1): 2 nodes as network namespaces on a 1 Gbit/s link, one rank per
# node over TCP, must end with the same weights as `mpirun -np 2` on this machine (to 1e-6); every
# namespace is gone afterwards, also when a check fails. Needs root (CI runs as root): fails when not.
set -euo pipefail
X=$1; SRC=$2; W=$3
DIFF=${CKPT_DIFF:?CKPT_DIFF must point at the ckpt_diff tool}
C=$SRC/scripts/cluster.sh
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
[ "$(id -u)" -eq 0 ] || fail "test_cluster needs root (network namespaces, veth, tc); run ctest as root"

# a prefix of our own: parallel runs (other build dirs) do not collide
export XD_CLUSTER_PREFIX=xt$$ XD_LINK_RATE=1gbit XD_LINK_DELAY=100us
P=$XD_CLUSTER_PREFIX
leftover() { ip netns list | awk '{print $1}' | grep -E "^$P-" || true; }
trap '"$C" down || true; [ -z "$(leftover)" ] || echo "FAIL: namespaces left behind: $(leftover | paste -sd " ")" >&2' EXIT

rm -rf "$W"; mkdir -p "$W"; cd "$W"
export OMP_NUM_THREADS=1
t0=$(date +%s.%N)

# usage errors say what is wrong
rc=0; "$C" up 0 2> e.txt || rc=$?
[ $rc -ne 0 ] && grep -q "N must be 1..250" e.txt || fail "up 0: status $rc, $(cat e.txt)"
rc=0; "$C" exec n0 true 2> e.txt || rc=$?
[ $rc -ne 0 ] && grep -q "no node 'n0' in cluster '$P'" e.txt || fail "exec on a cluster that is not up: status $rc, $(cat e.txt)"

"$C" up 2 > up.txt 2>&1 || { cat up.txt; fail "cluster.sh up 2"; }
cat up.txt
[ "$(leftover | wc -l)" -eq 3 ] || fail "expected 3 namespaces ($P-br, $P-n0, $P-n1), got: $(leftover | paste -sd ' ')"
rc=0; "$C" up 2 2> e.txt || rc=$?
[ $rc -ne 0 ] && grep -q "already up" e.txt || fail "a second 'up' with the same prefix: status $rc"
"$C" status | tee st.txt
grep -q "^n1 ($P-n1): 10.77.0.2/24; .*tbf.*rate 1Gbit" st.txt || fail "status: n1 has no 10.77.0.2 or no 1 Gbit/s tbf"
# the nodes are separate hosts: own hostname, own address, the host's interfaces invisible
[ "$("$C" exec n1 hostname)" = n1 ] || fail "node n1's hostname is not n1"
"$C" exec n1 ip -o link | grep -qv -E ': (lo|eth0)@?' && fail "node n1 sees interfaces other than lo and eth0"
ok "2 nodes up: own namespaces, hostnames and 10.77.0.x addresses, tbf at 1 Gbit/s"

"$X" synth d.h5 --n 200 --size 32 --seed 3 >/dev/null
T=(train --data d.h5 --model keras-seed --batch 140 --no-shuffle --max-steps 3 --optimizer adam --threads 1 --quiet)

# bytes the bridge forwarded out of n1's port: the gradient exchange must cross the emulated link
txb() { ip -n "$P-br" -s -j link show dev v1 | sed -n 's/.*"tx":{"bytes":\([0-9]*\).*/\1/p'; }
b0=$(txb)
t1=$(date +%s.%N)
"$C" mpirun -np 2 --map-by node sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname)"' > hosts.txt
sort hosts.txt | tr '\n' ';'; echo
[ "$(sort hosts.txt | tr '\n' ' ')" = "rank 0 on n0 rank 1 on n1 " ] || fail "ranks are not one per node: $(cat hosts.txt)"
"$C" mpirun -np 2 --map-by node "$X" "${T[@]}" --out cl > cl.txt 2>&1 || { cat cl.txt; fail "2-node training"; }
t2=$(date +%s.%N)
b1=$(txb)
"$SRC/scripts/mpirun.sh" -np 2 "$X" "${T[@]}" --out np2 || fail "np 2 training on the host"
t3=$(date +%s.%N)
kb=$(((b1 - b0) / 1024))
# 3 gradient all-reduces of keras-seed at 32x32 (~0.1 M floats each): over 1 MB; launching alone is a few KB
[ $kb -gt 512 ] || fail "only $kb KB crossed the bridge from n1: the ranks did not talk over the emulated link"
"$DIFF" cl/last.h5 np2/last.h5 1e-6 || fail "2-node run vs single-node np 2: weights beyond 1e-6"
"$DIFF" cl/last.h5 np2/last.h5 1e-6 --optim >/dev/null || fail "2-node run vs single-node np 2: optimizer state beyond 1e-6"
how="to 1e-6"; "$DIFF" cl/last.h5 np2/last.h5 0 --optim >/dev/null && how="bitwise (same reduction order over TCP as over shared memory)"
grep -q "^hosts: 2 hosts: n0 (1 rank: 0), n1 (1 rank: 1)$" cl/train.log ||
  fail "train.log does not record the two hosts: $(grep '^hosts' cl/train.log)"
grep -q "^hosts: 1 host: .* (2 ranks: 0 1)$" np2/train.log || fail "np 2 train.log: $(grep '^hosts' np2/train.log)"
ok "2 ranks on 2 nodes over TCP ($kb KB from n1 through the bridge) = np 2 on one node $how, weights and Adam moments ($(printf '%.1f' "$(echo "$t2 - $t1" | bc)") s vs $(printf '%.1f' "$(echo "$t3 - $t2" | bc)") s)"

"$C" down
[ -z "$(leftover)" ] || fail "namespaces left after down: $(leftover | paste -sd ' ')"
[ ! -e "/etc/netns/$P-n0" ] && [ ! -e "/run/xd-cluster/$P" ] || fail "down left /etc/netns/$P-n0 or /run/xd-cluster/$P"
"$C" down || fail "a second down is not a no-op"
ok "down removes every namespace, /etc/netns entry and state file of prefix $P (twice is fine)"
echo "cluster: $pass passed, 0 failed in $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
