#!/usr/bin/env bash
# Stop the local development cluster started by start_local_cluster.sh.
set -u
scancel --user="$(id -un)" 2>/dev/null || true
pkill -x slurmd || true
pkill -x slurmctld || true
pkill -x munged || true
echo "local SLURM cluster stopped"
