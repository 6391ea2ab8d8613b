#!/usr/bin/env bash
# GPU cluster launch with SLURM: one task (process) per node, all GPUs of a node per task.
#
#   sbatch --nodes=4 launch/slurm.sh WORKDIR [slm-train flags...]
#   sbatch --nodes=2 launch/slurm.sh /shared/runs/exp1 \
#       --gin_file=models/7b.gin --gin_file=runs/pretrain.gin --gin_file=mesh/fsdp_tensor.gin \
#       --gin_param=TOTAL_STEPS=50000 --gin_param=BATCH_SIZE=256 --gin_param=SEQ_LEN=4096
#
# srun starts the same command on every node; JAX's SLURM detection supplies the coordinator
# (first node), process count and index. WORKDIR must be on a filesystem every node sees.
# Rerunning (or requeueing) the job resumes from the last complete checkpoint.
#SBATCH --job-name=slm-train
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --output=slm-train-%j.log
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n '2,11p' "$0"; exit 2
fi
WORKDIR=$1; shift
REPO_DIR=${REPO_DIR:-$SLURM_SUBMIT_DIR}
cd "$REPO_DIR"
source .venv/bin/activate
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
srun --kill-on-bad-exit=1 slm-train --workdir="$WORKDIR" --no_progress "$@"
