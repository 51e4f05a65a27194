#!/usr/bin/env bash
# Build and push both images, tagged with the git commit (and latest).
#   REGISTRY=ghcr.io/you deployments/docker/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REGISTRY=${REGISTRY:?set REGISTRY, e.g. ghcr.io/you}
TAG=$(git rev-parse --short=12 HEAD)
docker buildx build --platform linux/amd64,linux/arm64 -f deployments/docker/Dockerfile.cpu \
  -t "$REGISTRY/investflow-cpu:$TAG" -t "$REGISTRY/investflow-cpu:latest" --push .
docker buildx build --platform linux/amd64 -f deployments/docker/Dockerfile.gpu \
  -t "$REGISTRY/investflow-gpu:$TAG" -t "$REGISTRY/investflow-gpu:latest" --push .
echo "Set INVESTFLOW_CPU_IMAGE=$REGISTRY/investflow-cpu:$TAG"
echo "    INVESTFLOW_GPU_IMAGE=$REGISTRY/investflow-gpu:$TAG, then: python -m deployments.bootstrap pools"
