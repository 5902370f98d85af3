#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying scripts/cluster/slurm-loso.sh (and for CI):
# Debian's slurm-wlm with munge authentication, a controller and one compute node with this
# machine's CPUs, no GPUs, state and logs in one directory.
#
#   scripts/cluster/local-slurm.sh start [DIR]   # installs the packages if needed (root), starts both daemons
#   scripts/cluster/local-slurm.sh stop  [DIR]
#   scripts/cluster/local-slurm.sh env   [DIR]   # prints `export SLURM_CONF=…` for the shell that submits
#   scripts/cluster/local-slurm.sh running [DIR] # exit status 0 when both daemons are up
#
# DIR defaults to /var/lib/mer-local-slurm: one cluster per machine, whichever checkout starts it
# (the daemons listen on Slurm's fixed ports). Needs root (apt-get, munge's key, the daemons; use
# sudo); running it again while the cluster is up does nothing. Nothing under /etc/slurm is
# written: the daemons and the commands read DIR/slurm.conf through SLURM_CONF.
set -euo pipefail
cd "$(dirname "$0")/../.."

action="${1:-}"
dir="${2:-/var/lib/mer-local-slurm}"
mkdir -p "$dir" 2>/dev/null || [ -d "$dir" ] || { echo "local-slurm: cannot create $dir (run as root)" >&2; exit 2; }
dir="$(cd "$dir" && pwd)"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

die() { printf 'local-slurm: %s\n' "$*" >&2; exit 2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed; run this as root (it installs them with apt-get)"
    echo "installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
}

start_munge() {
    if munge -n </dev/null >/dev/null 2>&1; then
        return
    fi
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && return; sleep 0.1; done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    local node cpus memory
    node="$(hostname -s)"
    cpus="$(nproc)"
    memory="$(awk '/MemTotal/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)"
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    # Plain process tracking and no task plugin: containers rarely give slurmd cgroups to manage.
    cat >"$conf" <<EOF
ClusterName=mer-local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$node CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install
    start_munge
    if running "$dir/slurmctld.pid" && running "$dir/slurmd.pid"; then
        echo "local Slurm already running (SLURM_CONF=$conf)"
        return
    fi
    [ "$(id -u)" = 0 ] || die "starting the Slurm daemons needs root"
    write_conf
    running "$dir/slurmctld.pid" || slurmctld
    running "$dir/slurmd.pid" || slurmd
    for _ in $(seq 100); do
        if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "local Slurm up: partition local, node $(hostname -s), $(nproc) CPUs (SLURM_CONF=$conf)"
            return
        fi
        sleep 0.2
    done
    die "the node did not come up: $(sinfo 2>&1 | tail -2); logs in $dir/log"
}

stop() {
    for daemon in slurmd slurmctld; do
        if running "$dir/$daemon.pid"; then
            kill "$(cat "$dir/$daemon.pid")"
            for _ in $(seq 50); do running "$dir/$daemon.pid" || break; sleep 0.1; done
        fi
    done
    echo "local Slurm stopped"
}

case "$action" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    running) running "$dir/slurmctld.pid" && running "$dir/slurmd.pid" ;;
    *) die "usage: $0 start|stop|running|env [DIR]" ;;
esac
