#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try workflow/profiles/slurm for real (CI does).
#
#   sudo tests/workflow/cluster/local_slurm.sh start    # install (apt) if needed, configure, start, wait
#   sudo tests/workflow/cluster/local_slurm.sh status   # sinfo, or a non-zero exit when it is not up
#   sudo tests/workflow/cluster/local_slurm.sh stop     # stop slurmd, slurmctld and munged
#
# start is idempotent: on a running, idle cluster with the same configuration it does nothing.
# Debian/Ubuntu only (apt-get installs munge, slurmctld, slurmd, slurm-client) and root only: it
# refuses, saying why, without either. No systemd needed: the daemons are started directly. The
# node gets this machine's CPUs (nproc) and its memory less a headroom; one partition, "debug", is
# the default; there is no accounting (no slurmdbd), so sacct answers nothing: give the Slurm
# executor `--slurm-status-command squeue`. Jobs run as the submitting user (root included).
#
# Settings (environment): FFSOLVE_SLURM_PARTITION (debug), FFSOLVE_SLURM_MEM_HEADROOM_MB (1024),
# FFSOLVE_SLURM_TIMEOUT_S (seconds to wait for the node to be idle, 120).
set -euo pipefail

PARTITION=${FFSOLVE_SLURM_PARTITION:-debug}
HEADROOM_MB=${FFSOLVE_SLURM_MEM_HEADROOM_MB:-1024}
TIMEOUT_S=${FFSOLVE_SLURM_TIMEOUT_S:-120}
PACKAGES=(munge slurmctld slurmd slurm-client)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MUNGE_KEY=/etc/munge/munge.key
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGED_PID=/run/munge/munged.pid

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: $*" >&2; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons); try: sudo $0 ${1:-start}"
}

alive() {  # alive PIDFILE: the process named in the pid file is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sinfo >/dev/null || missing+=(slurm-client)
    [[ ${#missing[@]} -eq 0 ]] && return
    say "installing ${missing[*]} (apt-get)"
    # Package scripts must not try to start services (no systemd here; we start them ourselves).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    if [[ $status -ne 0 ]]; then
        say "apt-get install failed; updating the package lists and trying once more"
        apt-get update -q >/dev/null
        status=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    fi
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    [[ $status -eq 0 ]] || die "apt-get install ${missing[*]} failed"
}

write_config() {  # prints "changed" when slurm.conf was (re)written
    local host cpus mem_kb mem_mb new
    host=$(hostname -s)
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$(( mem_kb / 1024 - HEADROOM_MB ))
    (( mem_mb >= 512 )) || mem_mb=$(( mem_kb / 1024 / 2 ))
    new=$(cat <<EOF
# Written by tests/workflow/cluster/local_slurm.sh: a one-node cluster on $host.
ClusterName=ffsolve
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=60
# Finished jobs stay visible to squeue for 5 minutes: the Slurm executor's status checks with
# --slurm-status-command squeue need MinJobAge >= 3 x its first status-check delay, else it
# falls back to sacct, which answers nothing without accounting.
MinJobAge=300
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
    mkdir -p "$CONF_DIR"
    if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$new" ]]; then
        printf '%s\n' "$new" >"$CONF"
        echo changed
    fi
}

ensure_munge_key() {
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating the munge key $MUNGE_KEY"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY" && chmod 0400 "$MUNGE_KEY"
}

start_munged() {
    if alive "$MUNGED_PID" && munge -n | unmunge >/dev/null 2>&1; then
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    chmod 0700 /var/log/munge /var/lib/munge
    say "starting munged"
    # --force: a stale socket from an earlier run does not stop it.
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        munge -n | unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "munged does not answer (see /var/log/munge/munged.log)"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
    local pid
    alive "$2" || { rm -f "$2"; return 0; }
    pid=$(cat "$2")
    say "stopping $1 ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$2"; return 0; }
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$2"
}

node_state() {
    sinfo -h -N -o '%T' 2>/dev/null | head -n1
}

wait_for_idle_node() {
    local host state deadline
    host=$(hostname -s)
    deadline=$(( SECONDS + TIMEOUT_S ))
    while (( SECONDS < deadline )); do
        state=$(node_state)
        case $state in
            idle|mixed|allocated|completing)
                return 0 ;;
            down*|drain*|drained*|draining*|fail*)
                say "node $host is $state; resuming it"
                scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    sinfo -N -l >&2 || true
    die "node $host did not become idle within ${TIMEOUT_S}s (state: ${state:-no answer}; logs in $LOG_DIR)"
}

require_apt() {
    # The paths, users and package names below are Debian's; elsewhere this would guess.
    command -v apt-get >/dev/null || die "apt-get not found: this script sets up Debian's ${PACKAGES[*]} (Debian/Ubuntu only); on another system set up Slurm by hand (see the slurm.conf this script writes)"
}

start() {
    require_root start
    require_apt
    install_packages
    local changed
    changed=$(write_config)
    mkdir -p /var/spool/slurmd /var/spool/slurmctld "$LOG_DIR"
    ensure_munge_key
    start_munged
    if [[ -n $changed ]]; then
        say "wrote $CONF"
        stop_daemon slurmd "$SLURMD_PID"
        stop_daemon slurmctld "$CTLD_PID"
    fi
    if ! alive "$CTLD_PID"; then
        say "starting slurmctld"
        # -i: ignore state saved by an earlier run whose node layout may differ.
        slurmctld -i
    fi
    if ! alive "$SLURMD_PID"; then
        say "starting slurmd"
        slurmd
    fi
    wait_for_idle_node
    say "up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB' | head -n1)"
}

stop() {
    require_root stop
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon munged "$MUNGED_PID"
    say "stopped"
}

status() {
    command -v sinfo >/dev/null || die "not installed (no sinfo)"
    scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer (start it: sudo $0 start)"
    sinfo
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop; start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
