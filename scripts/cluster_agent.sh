#!/bin/sh
# Open MPI's rsh launch agent for the emulated cluster (scripts/cluster.sh mpirun passes it as
# --mca plm_rsh_agent): called as `cluster_agent.sh HOST CMD...` like ssh, it runs CMD with sh inside
# node HOST's network namespace (XD_CLUSTER_PREFIX-HOST) and a UTS namespace whose hostname is HOST.
set -eu
[ $# -ge 2 ] || { echo "cluster_agent.sh: usage: cluster_agent.sh HOST CMD..." >&2; exit 2; }
host=$1; shift
ns=${XD_CLUSTER_PREFIX:-xdc}-$host
ip netns list | awk '{print $1}' | grep -qx "$ns" ||
  { echo "cluster_agent.sh: no network namespace $ns (is the cluster up? scripts/cluster.sh up N)" >&2; exit 1; }
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1"; shift; exec sh -c "$*"' cluster_agent "$host" "$@"
