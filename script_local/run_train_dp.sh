#!/usr/bin/env bash
# Single-process training: DataParallel over the visible GPUs (or the CPU).
# The inputs are checked first (stabn-check): bad input stops here, exit code 2.
set -euo pipefail
CONFIG="${CONFIG:-configs/ssv2/abn_resnet50.yaml}"
LOGDIR="${LOGDIR:-runs/ssv2_abn_resnet50_dp}"
GPUS="${GPUS:-0,1,2,3}"

cd "$(dirname "$0")/.."
stabn-check --config "$CONFIG" --logdir "$LOGDIR" "$@"
CUDA_VISIBLE_DEVICES="$GPUS" python train_dp.py --config "$CONFIG" --logdir "$LOGDIR" "$@"
