#!/usr/bin/env bash
# Build and push the three images, each from its route's lock in requirements/, tagged with the
# git commit (and latest): ingestion (the fargate pool's default), cpu (predict-returns-cpu on
# fargate), gpu (the desktop).
#   REGISTRY=ghcr.io/you deployments/docker/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REGISTRY=${REGISTRY:?set REGISTRY, e.g. ghcr.io/you}
TAG=$(git rev-parse --short=12 HEAD)
build() {  # image, platforms
  docker buildx build --platform "$2" -f "deployments/docker/Dockerfile.$1" \
    -t "$REGISTRY/investflow-$1:$TAG" -t "$REGISTRY/investflow-$1:latest" --push .
}
build ingestion linux/amd64,linux/arm64
build cpu linux/amd64,linux/arm64
build gpu linux/amd64
echo "Set INVESTFLOW_INGESTION_IMAGE=$REGISTRY/investflow-ingestion:$TAG"
echo "    INVESTFLOW_CPU_IMAGE=$REGISTRY/investflow-cpu:$TAG"
echo "    INVESTFLOW_GPU_IMAGE=$REGISTRY/investflow-gpu:$TAG, then: python -m deployments.bootstrap pools"
echo "    and prefect deploy --all with INVESTFLOW_CPU_IMAGE exported (predict-returns-cpu names it)"
