#!/usr/bin/env bash
# mpirun with what Open MPI needs on a laptop, a CI box or a container: --allow-run-as-root when root,
# --oversubscribe (more ranks than cores is fine for tests), and no single-copy shared-memory path
# (CMA is refused inside many containers). Usage: scripts/mpirun.sh -np N COMMAND...
set -euo pipefail
args=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
exec mpirun "${args[@]}" "$@"
