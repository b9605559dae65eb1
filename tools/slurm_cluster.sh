#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for archlab's tests of `compare --emit slurm`:
# munged, slurmctld and slurmd started directly (no systemd), every file under one state
# directory, the daemons' output redirected there so that nothing holds the caller's terminal.
#
#   tools/slurm_cluster.sh install        Debian's Slurm daemons, client and munge (needs root)
#   tools/slurm_cluster.sh start DIR      start the cluster; prints `export SLURM_CONF=...`
#   tools/slurm_cluster.sh stop DIR       stop the daemons by their PIDs
#
# proctrack/linuxproc and task/none need no cgroups, so it runs in containers. Jobs run as the
# user who started it (root in CI). Ports 16817/16818 on loopback.
set -euo pipefail

install() {
    # What slurm-wlm would bring without its plugins' recommends: 8 packages, 3.5 MB.
    local packages=(slurmctld slurmd slurm-client munge)
    apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
}

start() {
    local dir=$1 host
    host=$(hostname)
    mkdir -p "$dir"/{state,spool,munge}
    dir=$(cd "$dir" && pwd)
    chmod 700 "$dir/munge"
    # A fresh key of our own: munged refuses a key others can read.
    if [ ! -f "$dir/munge/key" ]; then
        dd if=/dev/urandom of="$dir/munge/key" bs=1024 count=1 status=none
        chmod 600 "$dir/munge/key"
    fi
    munged --force --socket="$dir/munge/socket" --key-file="$dir/munge/key" \
        --pid-file="$dir/munge/pid" --log-file="$dir/munge/log" --seed-file="$dir/munge/seed" \
        >"$dir/munge/out" 2>&1
    cat >"$dir/slurm.conf" <<EOF
ClusterName=archlab-test
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF" -i >"$dir/slurmctld.out" 2>&1
    slurmd -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1
    # Up when the node reports idle (bounded: 30 s).
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -q idle; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "the Slurm node did not come up; logs in $dir" >&2
    tail -n 20 "$dir"/*.log >&2 || true
    return 1
}

stop() {
    local dir=$1 pid
    for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/pid"; do
        if [ -f "$f" ] && pid=$(cat "$f") && [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
        fi
    done
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *)
        echo "usage: $0 install | start DIR | stop DIR" >&2
        exit 2
        ;;
esac
