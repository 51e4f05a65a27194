#!/usr/bin/env bash
# Build the three images, each from its route's lock in requirements/, tagged with the git
# commit and latest: ingestion (the fargate pool's default), cpu (predict-returns-cpu on
# fargate), gpu (the desktop).
#   deployments/docker/build.sh                          # `make images`: this machine's platform, kept locally
#   REGISTRY=ghcr.io/you deployments/docker/build.sh     # amd64 (+ arm64) with buildx, pushed
# Behind a mirror of PyTorch's index: TORCH_INDEX_URL=https://mirror/whl/cpu (the CPU image;
# for the GPU image's CUDA build set GPU_TORCH_INDEX_URL too). IMAGES="ingestion cpu" builds a few.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${TAG:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)}
IMAGES=${IMAGES:-ingestion cpu gpu}

build_args() {  # image
  case $1 in
    cpu) [ -n "${TORCH_INDEX_URL:-}" ] && echo "--build-arg TORCH_INDEX_URL=$TORCH_INDEX_URL" ;;
    gpu) [ -n "${GPU_TORCH_INDEX_URL:-}" ] && echo "--build-arg TORCH_INDEX_URL=$GPU_TORCH_INDEX_URL" ;;
  esac
  return 0
}

for image in $IMAGES; do
  file="deployments/docker/Dockerfile.$image"
  if [ -z "${REGISTRY:-}" ]; then
    name="investflow-$image"
    echo "== $name:$TAG (local)"
    # shellcheck disable=SC2046
    docker build --network host $(build_args "$image") -f "$file" -t "$name:$TAG" -t "$name:latest" .
  else
    name="$REGISTRY/investflow-$image"
    platforms=linux/amd64,linux/arm64
    [ "$image" = gpu ] && platforms=linux/amd64  # the desktop; CUDA wheels are x86_64 here
    echo "== $name:$TAG ($platforms, pushed)"
    # shellcheck disable=SC2046
    docker buildx build --platform "$platforms" $(build_args "$image") -f "$file" \
      -t "$name:$TAG" -t "$name:latest" --push .
  fi
  echo "INVESTFLOW_$(echo "$image" | tr a-z A-Z)_IMAGE=$name:$TAG"
done
echo "Put those settings in .env, then: python -m deployments.bootstrap pools, and"
echo "prefect deploy --all with INVESTFLOW_CPU_IMAGE exported (predict-returns-cpu names it)."
