#!/usr/bin/env bash
# Single-process training: DataParallel over the visible GPUs (or the CPU).
set -euo pipefail
CONFIG=configs/ssv2/abn_resnet50.yaml
LOGDIR=runs/ssv2_abn_resnet50_dp
GPUS="${GPUS:-0,1,2,3}"

cd "$(dirname "$0")/.."
CUDA_VISIBLE_DEVICES="$GPUS" python train_dp.py --config "$CONFIG" --logdir "$LOGDIR" "$@"
