#!/usr/bin/env bash
# Something-Something V2: .webm videos and annotation JSONs -> frame folders and label files.
# Rerun the same command to resume.
set -euo pipefail
VIDEO_DIR=/data/ssv2/20bn-something-something-v2
ANNO_DIR=/data/ssv2/annotations
OUT_DIR=data/ssv2
WORKERS="$(nproc)"

cd "$(dirname "$0")/.."
stabn-prepare-ssv2 --video-dir "$VIDEO_DIR" --anno-dir "$ANNO_DIR" \
  --out-dir "$OUT_DIR" --workers "$WORKERS" "$@"
