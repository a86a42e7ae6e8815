#!/usr/bin/env bash
# A one-node SLURM on this machine (Debian's slurm-wlm 22.05 + munge), to try cluster/slurm.yaml
# and to test the dask-jobqueue path (tests/test_slurm.py). Needs root.
#
#   scripts/slurm_one_node.sh install   apt-get install slurm-wlm munge when missing (quiet,
#                                       idempotent); exits 1 with a loud message when it cannot
#   scripts/slurm_one_node.sh start     write DIR/slurm.conf, start munged, slurmctld, slurmd;
#                                       wait until the node is idle
#   scripts/slurm_one_node.sh stop      stop the daemons that `start` started (by their pid files)
#   scripts/slurm_one_node.sh status    which of them run, and sinfo
#   scripts/slurm_one_node.sh env       the line to paste: export SLURM_CONF=DIR/slurm.conf
#
# Everything lives in DIR (FAKET_SLURM_DIR, default /tmp/faket-slurm): slurm.conf, a munge key,
# munged's socket, the spool directories, the logs and log/jobcomp.log (one line per finished
# job: there is no slurmdbd, so sacct has nothing). Nothing under /etc is written: the clients
# (sbatch, squeue, dask-jobqueue's calls to them) find the configuration through SLURM_CONF, and
# the daemons talk to this munged through AuthInfo=socket=. Ports: FAKET_SLURM_CTLD_PORT
# (default 6817) and FAKET_SLURM_SLURMD_PORT (6818); several DIRs with other ports can run side
# by side. FAKET_SLURM_INSTALL=0 makes `install` do nothing.
set -euo pipefail

DIR=${FAKET_SLURM_DIR:-/tmp/faket-slurm}
CTLD_PORT=${FAKET_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${FAKET_SLURM_SLURMD_PORT:-6818}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge-socket/munge.socket  # its directory must be searchable by all (munged checks)
PARTITION=debug
BINARIES=(sbatch squeue sinfo scancel munge unmunge /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd)

say() { echo "slurm_one_node: $*"; }
loud() {
    local bar="!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    printf '%s\n' "$bar" "!!! slurm_one_node: $*" "$bar" >&2
}
installed() {
    local b
    for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

cmd_install() {
    if installed; then say "slurm-wlm and munge already installed"; return 0; fi
    if [ "${FAKET_SLURM_INSTALL:-1}" = 0 ]; then
        loud "FAKET_SLURM_INSTALL=0: not installing slurm-wlm/munge; the SLURM test will be SKIPPED"
        return 1
    fi
    local why=""
    if [ "$(id -u)" != 0 ]; then why="not root"
    elif ! command -v apt-get >/dev/null 2>&1; then why="no apt-get (not Debian/Ubuntu)"
    fi
    if [ -n "$why" ]; then
        loud "cannot install slurm-wlm and munge ($why); the SLURM test will be SKIPPED"
        return 1
    fi
    local log t0=$SECONDS
    log=$(mktemp /tmp/slurm-install.XXXXXX.log)
    say "installing slurm-wlm and munge with apt-get (about a minute) ..."
    if apt-get update -qq >"$log" 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >>"$log" 2>&1 \
        && installed; then
        say "installed in $((SECONDS - t0)) s"
        rm -f "$log"
    else
        tail -5 "$log" >&2
        loud "apt-get could not install slurm-wlm and munge (log: $log); the SLURM test will be SKIPPED"
        return 1
    fi
}

# pid of a daemon this DIR started, if it still runs as that program
running_pid() {  # NAME PIDFILE
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] && echo "$pid"
}

mem_mib() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc --all)
    mem=$(( $(mem_mib) * 95 / 100 ))  # slurmd drains a node reporting less than RealMemory
    cat >"$CONF" <<EOF
# Written by scripts/slurm_one_node.sh: one node, no cgroups, no accounting daemon.
ClusterName=faket
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munged() {
    local pid
    if pid=$(running_pid munged "$DIR/munge/munged.pid"); then say "munged already running (pid $pid)"; return; fi
    install -d -o munge -g munge -m 700 "$DIR/munge"
    install -d -o munge -g munge -m 755 "$DIR/munge-socket"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$DIR/munge/munge.key"
    chmod 400 "$DIR/munge/munge.key"
    rm -f "$SOCKET" "$SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    munge -n -S "$SOCKET" | unmunge -S "$SOCKET" | grep -q "STATUS:.*Success" \
        || { loud "munge does not work (log: $DIR/munge/munged.log)"; exit 1; }
    say "munged started (pid $(cat "$DIR/munge/munged.pid"))"
}

start_daemon() {  # NAME
    local pid
    if pid=$(running_pid "$1" "$DIR/run/$1.pid"); then say "$1 already running (pid $pid)"; return; fi
    SLURM_CONF=$CONF "/usr/sbin/$1" -f "$CONF"
    for _ in $(seq 50); do
        pid=$(running_pid "$1" "$DIR/run/$1.pid") && { say "$1 started (pid $pid)"; return; }
        sleep 0.1
    done
    loud "$1 did not start (log: $DIR/log/$1.log)"
    tail -5 "$DIR/log/$1.log" >&2 || true
    exit 1
}

cmd_start() {
    [ "$(id -u)" = 0 ] || { loud "start needs root (slurmd runs jobs as their user)"; exit 1; }
    installed || { loud "slurm-wlm/munge not installed: run '$0 install' first"; exit 1; }
    local t0=$SECONDS
    mkdir -p "$DIR"/{spool/ctld,spool/d,log,run}
    chmod 755 "$DIR"
    write_conf
    start_munged
    start_daemon slurmctld
    start_daemon slurmd
    export SLURM_CONF=$CONF
    for _ in $(seq 100); do
        case "$(sinfo -h -N -o %t 2>/dev/null | head -1)" in
            idle|mix|alloc)
                say "node $(hostname -s) up in partition $PARTITION after $((SECONDS - t0)) s"
                say "export SLURM_CONF=$CONF"
                return ;;
        esac
        sleep 0.2
    done
    loud "the node did not become idle: $(sinfo -N 2>&1 | tail -1) (logs: $DIR/log)"
    exit 1
}

cmd_stop() {
    local name pidfile pid pids=() names=()
    if [ -s "$CONF" ] && command -v scancel >/dev/null 2>&1 && running_pid slurmctld "$DIR/run/slurmctld.pid" >/dev/null; then
        SLURM_CONF=$CONF scancel --full --quiet -p "$PARTITION" 2>/dev/null || true  # only this cluster's jobs
        for _ in $(seq 100); do  # their slurmstepd processes end before slurmd does
            [ -z "$(SLURM_CONF=$CONF squeue -h -p "$PARTITION" 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    # each takes ~2 s to exit: signal all three, then wait
    for name in slurmd slurmctld munged; do
        pidfile=$DIR/run/$name.pid
        [ "$name" = munged ] && pidfile=$DIR/munge/munged.pid
        pid=$(running_pid "$name" "$pidfile") || continue
        kill "$pid" && pids+=("$pid") && names+=("$name")
    done
    for _ in $(seq 100); do
        pid=""
        for p in "${pids[@]}"; do [ -d "/proc/$p" ] && pid=$p; done
        [ -z "$pid" ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        [ -d "/proc/${pids[$i]}" ] && kill -9 "${pids[$i]}"
        say "${names[$i]} stopped (pid ${pids[$i]})"
    done
    rm -f "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$DIR/munge/munged.pid"
}

cmd_status() {
    local name pidfile pid rc=0
    for name in munged slurmctld slurmd; do
        pidfile=$DIR/run/$name.pid
        [ "$name" = munged ] && pidfile=$DIR/munge/munged.pid
        if pid=$(running_pid "$name" "$pidfile"); then say "$name running (pid $pid)"
        else say "$name not running"; rc=1; fi
    done
    [ $rc = 0 ] && SLURM_CONF=$CONF sinfo
    return $rc
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|env   (state in FAKET_SLURM_DIR=$DIR)" >&2; exit 2 ;;
esac
