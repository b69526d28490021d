#!/usr/bin/env bash
# mpirun with what Open MPI needs on a laptop, a CI box or a container: --allow-run-as-root when root,
# --oversubscribe (more ranks than cores is fine for tests), and no single-copy shared-memory path
# (CMA is refused inside many containers). Usage: scripts/mpirun.sh -np N COMMAND...
# Ctrl-C: Open MPI's mpirun answers SIGINT by killing the ranks within 2 s (SIGTERM, then SIGKILL), too
# soon for `train` to finish its step and write last.h5, and refuses to forward SIGINT. So mpirun runs in
# a session of its own (the terminal's Ctrl-C reaches this script only) and the first Ctrl-C (or a
# SIGTERM) becomes SIGUSR1, which mpirun forwards: the ranks stop at a step boundary, save, exit 0. A
# second Ctrl-C aborts the job at once (status 130). SIGUSR1 and SIGUSR2 are passed on to mpirun as before.
set -euo pipefail
args=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
setsid mpirun "${args[@]}" "$@" <&0 &
pid=$!
stops=0
stop() {
  stops=$((stops + 1))
  if [ $stops -eq 1 ]; then
    echo "mpirun.sh: stopping: the ranks finish their step and save (Ctrl-C again to abort at once)" >&2
    kill -USR1 $pid 2>/dev/null || true
  else
    kill -INT $pid 2>/dev/null || true
  fi
}
trap stop INT TERM
trap 'kill -USR1 $pid 2>/dev/null || true' USR1 # SLURM's --signal, as before: mpirun forwards them
trap 'kill -USR2 $pid 2>/dev/null || true' USR2
rc=0
while :; do # wait returns early (status > 128) for each trapped signal: wait again while mpirun lives
  if wait $pid; then rc=0; break; else rc=$?; fi
  kill -0 $pid 2>/dev/null || break
done
[ $stops -ge 2 ] && exit 130
exit $rc
