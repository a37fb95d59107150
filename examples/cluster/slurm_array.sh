#!/usr/bin/env bash
# One SAFS worker per SLURM array task, one GPU each, all on the same study: the storage URL and
# the artifact store in study.toml are what the workers share, so no two tasks need the same disk.
#
#   sbatch --array=1-16 slurm_array.sh            # 16 workers; more tasks = more workers
#   safs-optuna status study.toml                 # from any machine, while they run
#   safs-optuna report study.toml                 # once every stage is done
#
# The database password is not in study.toml or on the command line (other users see both): put
# it in ~/.pgpass (chmod 600: "host:port:database:user:password"), which PostgreSQL's client reads.
# The object store's credentials come from the usual AWS variables or ~/.aws/credentials.
#SBATCH --job-name=safs
#SBATCH --array=1-8
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=safs-%A_%a.log
set -euo pipefail

CONFIG=${SAFS_CONFIG:-study.toml}
# A worker that the scheduler kills (preempted, out of time) leaves its trial to the others: it is
# retried after the heartbeat grace period. A requeued task simply joins the study again.
exec safs-optuna worker "$CONFIG" \
    --device cuda \
    --threads "${SLURM_CPUS_PER_TASK:-1}" \
    --worker-id "${SLURM_ARRAY_TASK_ID:-0}"
