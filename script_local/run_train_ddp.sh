#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU.
# One node:      script_local/run_train_ddp.sh
# Several nodes: run on every node with NNODES and HEAD_NODE set, e.g.
#                NNODES=4 HEAD_NODE=node001 script_local/run_train_ddp.sh
# Extra arguments are config overrides (train.epochs=2) or --resume latest.
# The inputs are checked first (stabn-check): bad input stops here, exit code 2.
set -euo pipefail
CONFIG="${CONFIG:-configs/ssv2/abn_resnet50.yaml}"
LOGDIR="${LOGDIR:-runs/ssv2_abn_resnet50}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
NNODES="${NNODES:-1}"
HEAD_NODE="${HEAD_NODE:-localhost}"
PORT="${PORT:-29500}"
RUN_ID="${RUN_ID:-stabn}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"

cd "$(dirname "$0")/.."
if [ "$NNODES" -eq 1 ]; then
  rendezvous=(--standalone)
else
  rendezvous=(--nnodes="$NNODES" --rdzv_backend=c10d --rdzv_endpoint="$HEAD_NODE:$PORT" --rdzv_id="$RUN_ID")
fi
stabn-check --config "$CONFIG" --logdir "$LOGDIR" "$@"
torchrun "${rendezvous[@]}" --nproc_per_node="$GPUS_PER_NODE" --max-restarts="$MAX_RESTARTS" \
  train_ddp.py --config "$CONFIG" --logdir "$LOGDIR" "$@"
