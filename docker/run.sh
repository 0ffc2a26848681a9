#!/usr/bin/env bash
# Run the stabn image with all GPUs, as the calling user, with volumes from the arguments.
#   docker/run.sh [-v HOST:CONTAINER]... [-- COMMAND...]
#   docker/run.sh -v /data/ssv2:/workspace/stabn/data/ssv2 -v "$PWD/runs":/workspace/stabn/runs \
#       -- torchrun --nproc_per_node=8 train_ddp.py --config configs/ssv2/abn_resnet50.yaml
set -euo pipefail
IMAGE="${STABN_IMAGE:-stabn:latest}"
SHM_SIZE="${STABN_SHM_SIZE:-32g}"   # DataLoader workers pass batches through shared memory

volumes=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    -v|--volume)
      if [ "$#" -lt 2 ]; then
        echo "error: $1 needs HOST:CONTAINER" >&2
        exit 2
      fi
      volumes+=("-v" "$2"); shift 2 ;;
    -v=*|--volume=*) volumes+=("-v" "${1#*=}"); shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [ "$#" -eq 0 ]; then
  set -- bash
fi

tty_flags=()
if [ -t 0 ]; then
  tty_flags=(-it)
fi

exec docker run --rm "${tty_flags[@]}" --gpus all --shm-size="$SHM_SIZE" \
  --ulimit memlock=-1 --ulimit stack=67108864 \
  --user "$(id -u):$(id -g)" \
  "${volumes[@]}" "$IMAGE" "$@"
