#!/usr/bin/env bash
# Build the stabn image from the repository root: docker/build.sh [TAG]
set -euo pipefail
TAG="${1:-stabn:latest}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
docker build -f "$ROOT/docker/Dockerfile" -t "$TAG" "$ROOT"
