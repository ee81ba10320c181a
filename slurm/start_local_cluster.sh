#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (munge, slurmctld, slurmd), for development
# and CI. Needs root and Debian's slurmctld, slurmd, slurm-client and munge packages.
# slurm.conf is generated here because SlurmctldHost/NodeName must match `hostname -s`.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "start_local_cluster.sh must run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 1; }
done

HOST=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key

cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=localcluster
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
KillWait=10
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 60); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
        echo "local SLURM cluster up: node $HOST, $CPUS CPUs, partition debug"
        exit 0
    fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "SLURM node did not become idle; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
