#!/usr/bin/env bash
# An emulated cluster on one machine (issue 10): N "nodes" as Linux network namespaces, each joined by a
# veth pair to a bridge that lives in a namespace of its own (the host's interfaces are never touched),
# each node with its own 10.x address and its links shaped by tc, and Open MPI launching ranks into the
# nodes over TCP only. Details and limits: docs/cluster.md.
#
# Usage (as root):
#   scripts/cluster.sh up N              create nodes n0..n{N-1} (fails if this prefix is already up)
#   scripts/cluster.sh down              remove everything `up` created for this prefix (idempotent)
#   scripts/cluster.sh status            namespaces, addresses and qdiscs of this prefix
#   scripts/cluster.sh exec NODE CMD...  run CMD on node NODE (n0, n1, ... or 0, 1), hostname NODE
#   scripts/cluster.sh mpirun ARGS...    mpirun from node n0, one slot per node, TCP between nodes only
#   scripts/cluster.sh hostfile          print the path of the hostfile (NAME slots=1 per node)
# env:
#   XD_CLUSTER_PREFIX   namespace prefix (default xdc): namespaces PREFIX-br, PREFIX-n0, ...; parallel
#                       clusters need different prefixes (and may share the subnet: they never meet)
#   XD_CLUSTER_SUBNET   first three octets of the nodes' /24 (default 10.77.0): node i is .(i+1)
#   XD_LINK_RATE        egress rate of each node's link, tc syntax (default 1gbit; "none": unshaped)
#   XD_LINK_DELAY       one-way delay added at each node's egress (default 100us; "none"/0: none); needs
#                       the kernel's netem qdisc: without it the delay is left out with a warning, or the
#                       command fails when XD_LINK_DELAY_REQUIRED=1
set -euo pipefail

P=${XD_CLUSTER_PREFIX:-xdc}
NET=${XD_CLUSTER_SUBNET:-10.77.0}
RATE=${XD_LINK_RATE:-1gbit}
DELAY=${XD_LINK_DELAY:-100us}
STATE=/run/xd-cluster/$P
HERE=$(cd "$(dirname "$0")" && pwd)
me="cluster.sh"

die() { echo "$me: $*" >&2; exit 1; }
usage() { sed -n '7,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

need() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces, veth pairs and tc qdiscs; try sudo)"
  for t in ip tc unshare; do
    command -v $t >/dev/null || die "needs '$t' (packages: iproute2 for ip and tc, util-linux for unshare)"
  done
  [[ $P =~ ^[A-Za-z0-9_.]{1,16}$ ]] || die "XD_CLUSTER_PREFIX '$P': 1-16 letters, digits, '.' or '_'"
  [[ $NET =~ ^10\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "XD_CLUSTER_SUBNET '$NET': want 10.A.B (a /24 of 10.0.0.0/8)"
}

nodes() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-n[0-9]+$" | sed "s/^$P-//" | sort -V || true; }

down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-(br|n[0-9]+)$" || true); do
    # processes still inside (a stuck rank, an orted) would keep the namespace's interfaces alive
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" || die "could not delete network namespace $ns"
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$STATE"
}

shape() {  # NS DEV: delay (netem, when the kernel has it) then rate (tbf) on DEV's egress
  local ns=$1 dev=$2 parent="root"
  if [ "$DELAY" != none ] && [ "$DELAY" != 0 ]; then
    if ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem delay "$DELAY" limit 100000 2>/dev/null; then
      parent="parent 1:"
    elif [ "${XD_LINK_DELAY_REQUIRED:-0}" = 1 ]; then
      die "XD_LINK_DELAY=$DELAY: the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so no delay can be added"
    elif [ ! -e "$STATE/warned" ]; then
      echo "$me: warning: XD_LINK_DELAY=$DELAY not applied: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM); links are rate-limited only" >&2
      touch "$STATE/warned"
    fi
  fi
  if [ "$RATE" != none ]; then
    # burst: at least one 64 KB TSO segment plus headroom; latency bounds the queue (drops beyond it)
    ip netns exec "$ns" tc qdisc add dev "$dev" $parent handle 2: tbf rate "$RATE" burst 256kb latency 50ms ||
      die "tc could not set XD_LINK_RATE=$RATE on $ns:$dev (tc rate syntax: 1gbit, 100mbit, ...)"
  fi
}

up() {
  local n=$1 i ns
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "up N: N must be 1..250, got '$n'"
  [ -z "$(nodes)" ] && ! ip netns list | grep -q "^$P-br\b" ||
    die "a cluster with prefix '$P' is already up (scripts/cluster.sh down, or set XD_CLUSTER_PREFIX)"
  mkdir -p "$STATE"
  rm -f "$STATE/warned"
  up_ok=0
  trap '[ $up_ok = 1 ] || { echo "$me: up failed; tearing down what it made" >&2; down; }' EXIT
  ip netns add "$P-br"
  ip -n "$P-br" link add br0 type bridge
  ip -n "$P-br" link set br0 up
  : > "$STATE/hostfile"
  { echo "127.0.0.1 localhost"; for i in $(seq 0 $((n - 1))); do echo "$NET.$((i + 1)) n$i"; done; } > "$STATE/hosts"
  for i in $(seq 0 $((n - 1))); do
    ns=$P-n$i
    ip netns add "$ns"
    # `ip netns exec` bind-mounts /etc/netns/NS/* over /etc: the nodes resolve each other's names
    mkdir -p "/etc/netns/$ns"
    cp "$STATE/hosts" "/etc/netns/$ns/hosts"
    ip -n "$P-br" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$P-br" link set "v$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$NET.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    shape "$ns" eth0
    echo "n$i slots=1" >> "$STATE/hostfile"
  done
  echo "$n" > "$STATE/n"
  up_ok=1
  local d=$DELAY; [ -e "$STATE/warned" ] && d="none (no netem)"
  echo "$me: $n nodes up (prefix $P, $NET.0/24, rate $RATE, delay $d); hostfile $STATE/hostfile"
}

status() {
  local ns
  [ -n "$(nodes)" ] || { echo "$me: no cluster with prefix '$P'"; return 0; }
  for n in $(nodes); do
    ns=$P-$n
    printf '%s (%s): %s; %s\n' "$n" "$ns" "$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}')" \
      "$(ip netns exec "$ns" tc qdisc show dev eth0 | awk '{$1=$1; print}' | paste -sd '|' | sed 's/|/; /g')"
  done
}

node_ns() {  # NODE (n3 or 3) -> namespace name, which must exist
  local n=$1
  [[ $n =~ ^[0-9]+$ ]] && n=n$n
  ip netns list | awk '{print $1}' | grep -qx "$P-$n" || die "no node '$1' in cluster '$P' (nodes: $(nodes | paste -sd ' '))"
  echo "$P-$n"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
  up) [ $# -eq 1 ] || usage; need; up "$1" ;;
  down) [ $# -eq 0 ] || usage; need; down ;;
  status) need; status ;;
  exec)
    [ $# -ge 2 ] || usage; need
    ns=$(node_ns "$1"); host=${ns#"$P-"}; shift
    exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1"; shift; exec "$@"' cluster.sh "$host" "$@" ;;
  hostfile) need; [ -f "$STATE/hostfile" ] || die "no cluster with prefix '$P' is up"; echo "$STATE/hostfile" ;;
  mpirun)
    need
    [ -f "$STATE/hostfile" ] || die "no cluster with prefix '$P' is up (scripts/cluster.sh up N)"
    export XD_CLUSTER_PREFIX=$P   # read by the launch agent
    # rsh launcher through the agent (one orted per node, no tree spawn), TCP between nodes only, the
    # out-of-band channel on the nodes' subnet too, and no hwloc rtc (orted in a namespace can crash there)
    # mpirun runs on node n0 under n0's hostname, so n0's rank is launched by mpirun itself
    exec ip netns exec "$P-n0" unshare --uts sh -c 'hostname n0; exec "$@"' cluster.sh mpirun --allow-run-as-root --hostfile "$STATE/hostfile" \
      --mca plm rsh --mca plm_rsh_agent "$HERE/cluster_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
      --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24" \
      --mca rtc '^hwloc' "$@" ;;
  *) usage ;;
esac
