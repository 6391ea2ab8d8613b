#!/usr/bin/env bash
# Explicit multi-process launch (no cluster manager): N processes on this machine over loopback,
# each with D fake CPU devices and gloo collectives. The same flags work across real hosts: run
# one command per host with --coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
#
#   launch/local_multiprocess.sh 2 4 /tmp/mp_run --gin_file=runs/demo_synthetic.gin
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,6p' "$0"; exit 2
fi
N=$1; D=$2; WORKDIR=$3; shift 3
PORT=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=$D python -m slm_jax.tools.train --workdir="$WORKDIR" \
    --coordinator_address=127.0.0.1:$PORT --num_processes=$N --process_id=$i --no_progress "$@" \
    > "$WORKDIR.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tail -n 3 "$WORKDIR.process0.log"
exit $status
