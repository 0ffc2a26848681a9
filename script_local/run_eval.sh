#!/usr/bin/env bash
# Evaluate a run: multi-clip x multi-crop Top-1/Top-5 of both branches and attention images.
# The inputs are checked first (stabn-check --eval): bad input stops here, exit code 2.
set -euo pipefail
LOGDIR="${LOGDIR:-runs/ssv2_abn_resnet50}"
NUM_CLIPS=2
NUM_CROPS=3
GPUS_PER_NODE="${GPUS_PER_NODE:-1}"

cd "$(dirname "$0")/.."
args=(eval.num_clips="$NUM_CLIPS" eval.num_crops="$NUM_CROPS" eval.save_attention=true "$@")
stabn-check --eval --logdir "$LOGDIR" "${args[@]}"
torchrun --standalone --nproc_per_node="$GPUS_PER_NODE" eval.py --logdir "$LOGDIR" "${args[@]}"
