#!/usr/bin/env bash
# Starts a real single-node SLURM (munged, slurmctld, slurmd, all with their files under WORK_DIR) and
# submits slurm/train.sbatch with 2 tasks on a tiny synthetic set, once with the automatic launcher and
# once with mpirun, then slurm/array.sbatch as a 2-task array; checks each run directory. Last, sends
# the batch shell USR1 mid-run and checks that the job checkpointed, requeued itself, resumed and
# finished every epoch exactly once. Fails (never skips) when SLURM cannot run here.
# Usage: bash tests/test_slurm.sh XRAYDP_BINARY SOURCE_DIR WORK_DIR
# Every wait is bounded; all of them together stay under ctest's 900 s, so the EXIT trap always runs.
set -uo pipefail

BIN=$(realpath "$1")
SRC=$(realpath "$2")
mkdir -p "$3" || exit 1
W=$(realpath "$3")
T0=$SECONDS
NODE=$(hostname -s)

say() { echo "test_slurm [$((SECONDS - T0))s]: $*"; }

dump_logs() {
  local f
  for f in "$W"/log/*.log "$W"/job-*.out; do
    [ -f "$f" ] || continue
    echo "----- $f (last 40 lines)"
    tail -n 40 "$f"
  done
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${CTLD_PID:-}" ]; then
    echo "----- squeue / sinfo"
    timeout 10 squeue -a 2>&1
    timeout 10 sinfo -N -l 2>&1
  fi
}

fail() {
  echo "test_slurm: FAIL: $*" >&2
  dump_logs >&2
  exit 1
}

need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 ||
      fail "'$c' not found: SLURM and munge are needed (scripts/deps.sh --test installs slurm-wlm and munge)"
  done
}

# Every process started for this test carries SLURM_CONF=$W/... in its environment (daemons, the
# slurmstepds they fork, the job's ranks), which is how leftovers are found and ended by pid.
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qx "SLURM_CONF=$W/etc/slurm.conf" && echo "${p#/proc/}"
  done
}

stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}

cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  if [ -n "${CTLD_PID:-}" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 50); do
      [ -z "$(timeout 5 squeue -h -t running,completing 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_pid "${SLURMD_PID:-}"
  stop_pid "${CTLD_PID:-}"
  left=$(our_pids)
  # shellcheck disable=SC2086  # one pid per word
  [ -n "$left" ] && kill -9 $left 2>/dev/null
  stop_pid "${MUNGED_PID:-}"
  [ -n "${RUNDIR:-}" ] && [ "$RUNDIR" != "$W/run" ] && rm -rf "$RUNDIR"
  say "stopped SLURM and munge (exit $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel

# Fresh state every time: a leftover job database would hand out old job ids and old jobs.
rm -rf "${W:?}/etc" "$W/state" "$W/log" "$W/run" "$W/runs" "$W"/job-*.out
mkdir -p "$W/etc" "$W/state" "$W/log" "$W/runs"
# Unix socket paths are limited to 108 bytes; a deep build tree gets a short private directory instead.
if [ ${#W} -le 60 ]; then RUNDIR=$W/run; mkdir -p "$RUNDIR"; else RUNDIR=$(mktemp -d /tmp/xdslurm.XXXXXX); fi
chmod 755 "$RUNDIR"
mkdir -p "$RUNDIR/munge" "$RUNDIR/spool"
chmod 700 "$RUNDIR/munge"

# ---- munge: own key, socket, log, pid and seed files so that a system munged is left alone
dd if=/dev/urandom of="$W/etc/munge.key" bs=1024 count=1 status=none || fail "cannot write a munge key"
chmod 600 "$W/etc/munge.key"
SOCK=$RUNDIR/munge/munge.socket
munged --foreground --force --socket="$SOCK" --key-file="$W/etc/munge.key" \
  --log-file="$W/log/munged.log" --pid-file="$RUNDIR/munge/munged.pid" \
  --seed-file="$RUNDIR/munge/munged.seed" > "$W/log/munged.out.log" 2>&1 &
MUNGED_PID=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; kill -0 $MUNGED_PID 2>/dev/null || break; sleep 0.1; done
[ -S "$SOCK" ] || fail "munged did not start (see munged logs)"
if command -v munge >/dev/null; then
  munge -S "$SOCK" -n | unmunge -S "$SOCK" >/dev/null 2>&1 || fail "munge round trip through $SOCK failed"
fi
say "munged up"

# ---- slurm.conf for this host only
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo 16817
}
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
[ "$SLURMD_PORT" = "$CTLD_PORT" ] && SLURMD_PORT=$((CTLD_PORT + 1))
# slurmd -C reports this machine as slurmd will see it; the node line must not promise more.
HW=$(slurmd -C 2>/dev/null | head -n 1)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<< "$HW")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$HW")
[ -n "$CPUS" ] || CPUS=$(nproc)
[ -n "$MEM" ] || MEM=1024
TOPO=$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<< "$HW")
[ "$CPUS" -ge 2 ] || fail "this machine reports $CPUS CPU(s); the test needs 2 (2 tasks x 1 cpu)"
USER_NAME=$(id -un)

export SLURM_CONF=$W/etc/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=xdtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$SOCK,cred_expire=10
StateSaveLocation=$W/state
SlurmdSpoolDir=$RUNDIR/spool
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# the main loop also starts requeued jobs once eligible; its default period is 60 s
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS $TOPO RealMemory=$MEM State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# -D keeps them in the foreground of their background job, so their pids are ours to stop;
# -i/-c start from a clean slate (no saved jobs or node state from an earlier run).
slurmctld -D -i -f "$SLURM_CONF" > "$W/log/slurmctld.out.log" 2>&1 &
CTLD_PID=$!
slurmd -D -c -f "$SLURM_CONF" -N "$NODE" > "$W/log/slurmd.out.log" 2>&1 &
SLURMD_PID=$!

state=""
for _ in $(seq 150); do
  kill -0 $CTLD_PID 2>/dev/null || fail "slurmctld exited"
  kill -0 $SLURMD_PID 2>/dev/null || fail "slurmd exited"
  state=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || fail "node $NODE not idle after 30 s (state '$state')"
say "SLURM up: node $NODE idle ($CPUS CPUs), srun MPI plugins: $(srun --mpi=list 2>&1 | tr -s '\n\t ' ' ')"

# ---- data
"$BIN" synth "$W/d.h5" --n 200 --size 32 >/dev/null || fail "synth failed"

job_field() {  # job_field JOBID FIELD
  timeout 10 scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

wait_job() {  # wait_job JOBID SECONDS: waits for a final state, prints it
  local id=$1 limit=$2 st=""
  local end=$((SECONDS + limit))
  while [ $SECONDS -lt $end ]; do
    st=$(job_field "$id" JobState)
    case $st in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) break ;;
    esac
    sleep 0.5
  done
  echo "$st"
}

submit() {  # submit NAME EXTRA_SBATCH_OPTS... -- TRAIN_ARGS...   (SCRIPT=array.sbatch for the sweep)
  local name=$1; shift
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  (cd "$W" && sbatch --parsable -J "$name" -N 1 -n 2 --ntasks-per-node=2 -c 1 -t 10 \
     -o "$W/job-%x-%j.out" "${opts[@]}" \
     "$SRC/slurm/${SCRIPT:-train.sbatch}" --data "$W/d.h5" --model keras-seed "$@")
}

epochs_in() {  # the epoch column of a metrics.csv, one line
  tail -n +2 "$1" | cut -d, -f1 | tr '\n' ' ' | sed 's/ $//'
}

# ---- 1. a short run to completion
RUN1=$W/runs/short
JOB1=$(submit short --export="ALL,XRAYDP=$BIN,OUT=$RUN1" -- --epochs 3 --batch 16) ||
  fail "sbatch failed: $JOB1"
say "submitted job $JOB1 (2 tasks, 3 epochs)"
st=$(wait_job "$JOB1" 120)
OUT1=$W/job-short-$JOB1.out
[ "$st" = COMPLETED ] || fail "job $JOB1 ended in state '$st' (want COMPLETED)"
[ "$(job_field "$JOB1" ExitCode)" = 0:0 ] || fail "job $JOB1 exit code $(job_field "$JOB1" ExitCode)"
grep -q "2 ranks x 1 threads via" "$OUT1" || fail "job output lacks the launch line"
grep -q "2 ranks x 1 thread," "$OUT1" || fail "xray-dp did not report 2 ranks x 1 thread"
grep -q "no $RUN1/last.h5 yet: starting the run" "$OUT1" || fail "the first start did not pass --resume auto"
[ -f "$RUN1/metrics.csv" ] || fail "no $RUN1/metrics.csv"
[ "$(epochs_in "$RUN1/metrics.csv")" = "1 2 3" ] || fail "metrics.csv epochs '$(epochs_in "$RUN1/metrics.csv")', want '1 2 3'"
[ -s "$RUN1/best.h5" ] || fail "no $RUN1/best.h5"
[ -s "$RUN1/last.h5" ] || fail "no $RUN1/last.h5"
LAUNCHER=$(sed -n 's/.*threads via \([a-z]*\) .*/\1/p' "$OUT1" | head -n 1)
say "job $JOB1 COMPLETED via $LAUNCHER: 3 epochs in metrics.csv, best.h5 and last.h5 written"

# ---- 2. the other launcher: mpirun inside the allocation (auto picks srun where PMIx works)
RUN3=$W/runs/mpirun
JOB3=$(submit mpirun --export="ALL,XRAYDP=$BIN,OUT=$RUN3,XD_LAUNCHER=mpirun" -- --epochs 2 --batch 16) ||
  fail "sbatch failed: $JOB3"
st=$(wait_job "$JOB3" 120)
OUT3=$W/job-mpirun-$JOB3.out
[ "$st" = COMPLETED ] || fail "job $JOB3 (XD_LAUNCHER=mpirun) ended in state '$st' (want COMPLETED)"
grep -q "2 ranks x 1 threads via mpirun" "$OUT3" || fail "job $JOB3 did not launch with mpirun"
grep -q "2 ranks x 1 thread," "$OUT3" || fail "xray-dp under mpirun did not report 2 ranks x 1 thread"
[ "$(epochs_in "$RUN3/metrics.csv" 2>/dev/null)" = "1 2" ] || fail "job $JOB3: metrics.csv lacks epochs 1 2"
[ -s "$RUN3/best.h5" ] || fail "no $RUN3/best.h5"
say "job $JOB3 COMPLETED via mpirun inside the allocation"

# ---- 3. the hyperparameter array: two 1-rank tasks side by side, one learning rate each
JOBA=$(SCRIPT=array.sbatch submit sweep -n 1 --ntasks-per-node=1 --array=0-1 \
  --export="ALL,XRAYDP=$BIN,LRS=1e-3 3e-4,BATCHES=16,XD_SLURM_DIR=$SRC/slurm" -- --epochs 2) ||
  fail "sbatch of the array failed: $JOBA"
for t in 0 1; do
  st=$(wait_job "${JOBA}_$t" 60)
  [ "$st" = COMPLETED ] || fail "array task ${JOBA}_$t ended in state '$st' (want COMPLETED)"
done
for t in 0:1e-3 1:3e-4; do
  dir=$W/runs/sweep-${JOBA}_${t%%:*}
  grep -q -- "--lr ${t#*:} --batch 16" "$dir/train.log" 2>/dev/null ||
    fail "array task ${t%%:*}: $dir/train.log does not show --lr ${t#*:} --batch 16"
  [ "$(epochs_in "$dir/metrics.csv")" = "1 2" ] || fail "array task ${t%%:*}: metrics.csv lacks epochs 1 2"
done
say "array job $JOBA: tasks 0 and 1 trained with lr 1e-3 and 3e-4 in their own run directories"

# ---- 4. USR1 to the batch shell mid-run: checkpoint, self-requeue, automatic resume
RUN2=$W/runs/requeue
EPOCHS=40
JOB2=$(submit requeue --export="ALL,XRAYDP=$BIN,OUT=$RUN2" -- --epochs $EPOCHS --patience 0 --batch 8) ||
  fail "sbatch failed: $JOB2"
OUT2=$W/job-requeue-$JOB2.out
say "submitted job $JOB2 ($EPOCHS epochs); waiting for 2 finished epochs"
end=$((SECONDS + 90))
while [ $SECONDS -lt $end ]; do
  [ -f "$RUN2/metrics.csv" ] && [ "$(wc -l < "$RUN2/metrics.csv")" -ge 3 ] && break
  st=$(job_field "$JOB2" JobState)
  case $st in PENDING|RUNNING|CONFIGURING) ;; *) fail "job $JOB2 is $st before it was signalled" ;; esac
  sleep 0.2
done
[ -f "$RUN2/metrics.csv" ] && [ "$(wc -l < "$RUN2/metrics.csv")" -ge 3 ] ||
  fail "job $JOB2 did not finish 2 epochs within 90 s"
scancel --signal=USR1 --batch "$JOB2" || fail "scancel --signal=USR1 --batch $JOB2 failed"
say "sent USR1 to the batch shell of job $JOB2 after $(($(wc -l < "$RUN2/metrics.csv") - 1)) epochs"

# The job goes RUNNING -> (requeued) PENDING -> RUNNING -> COMPLETED; done means COMPLETED after a restart.
end=$((SECONDS + 180))
st="" restarts=0
while [ $SECONDS -lt $end ]; do
  st=$(job_field "$JOB2" JobState)
  restarts=$(job_field "$JOB2" Restarts)
  case $st in
    COMPLETED) [ "${restarts:-0}" -ge 1 ] && break ;;
    FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;;
  esac
  sleep 0.5
done
[ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] ||
  fail "job $JOB2: state '$st' with $restarts restart(s) (want COMPLETED after a requeue)"
grep -q "caught USR1, forwarding" "$OUT2" || fail "the batch shell's trap did not forward USR1"
grep -q "interrupted by a signal" "$OUT2" || fail "xray-dp did not report the interruption"
grep -q "requeueing job $JOB2" "$OUT2" || fail "the job did not requeue itself"
grep -q "last.h5 exists: resuming" "$OUT2" || fail "the requeued job did not resume (--resume auto)"
grep -q "resumed" "$RUN2/train.log" || fail "$RUN2/train.log does not say the run resumed"
want=$(seq -s ' ' 1 $EPOCHS)
got=$(epochs_in "$RUN2/metrics.csv")
[ "$got" = "$want" ] || fail "metrics.csv epochs after resume: '$got', want 1..$EPOCHS once each"
[ -s "$RUN2/best.h5" ] || fail "no $RUN2/best.h5"
say "job $JOB2 checkpointed on USR1, requeued itself ($restarts restart), resumed and finished $EPOCHS epochs"
say "PASS"
