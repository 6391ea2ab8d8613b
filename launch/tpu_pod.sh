#!/usr/bin/env bash
# Launch slm-train on every host of a Cloud TPU pod slice (one command per host, run on all at once).
#
#   launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [slm-train flags...]
#   launch/tpu_pod.sh my-v5p-64 us-east5-a gs://bucket/exp1 \
#       --gin_file=models/1b.gin --gin_file=runs/pretrain.gin --gin_file=mesh/fsdp.gin \
#       --gin_param=TOTAL_STEPS=100000 --gin_param=BATCH_SIZE=512 --gin_param=SEQ_LEN=4096
#
# JAX detects the pod (coordinator, process count and index) from the TPU metadata, so every host
# runs the same command. Rerunning it resumes from the last complete checkpoint in WORKDIR.
# Assumes the repository is checked out at REPO_DIR on every host with its .venv installed
# (`make setup`).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; WORKDIR=$3; shift 3
REPO_DIR=${REPO_DIR:-\~/slm_jax}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="\
  cd $REPO_DIR && source .venv/bin/activate && \
  slm-train --workdir=$WORKDIR --no_progress $ARGS 2>&1 | tee -a /tmp/slm-train.log"
