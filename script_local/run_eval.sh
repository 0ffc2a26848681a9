#!/usr/bin/env bash
# Evaluate a run: multi-clip x multi-crop Top-1/Top-5 of both branches and attention images.
set -euo pipefail
LOGDIR=runs/ssv2_abn_resnet50
NUM_CLIPS=2
NUM_CROPS=3
GPUS_PER_NODE="${GPUS_PER_NODE:-1}"

cd "$(dirname "$0")/.."
torchrun --standalone --nproc_per_node="$GPUS_PER_NODE" eval.py --logdir "$LOGDIR" \
  eval.num_clips="$NUM_CLIPS" eval.num_crops="$NUM_CROPS" eval.save_attention=true "$@"
