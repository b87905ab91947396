#!/usr/bin/env bash
# Builds the controller and speaker images with the first container
# builder that works here: docker (with a daemon), podman or buildah.
# Without one it says so and fails: nothing is built.
set -euo pipefail
repo=${IMAGE_REPO:-ghcr.io/ironlb}
tag=${IMAGE_TAG:-dev}
cd "$(dirname "$0")/.."

builder=""
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
  builder="docker build"
elif command -v podman >/dev/null; then
  builder="podman build"
elif command -v buildah >/dev/null; then
  builder="buildah bud"
fi
if [[ -z "$builder" ]]; then
  echo "images: no container builder works on this machine (docker with a running daemon, podman or buildah); nothing was built." >&2
  echo "images: install one, or build elsewhere: docker build --target controller|speaker -t $repo/ironlb-<target>:$tag ." >&2
  exit 1
fi
for target in controller speaker; do
  $builder --target "$target" --build-arg VERSION="$tag" -t "$repo/ironlb-$target:$tag" .
done
echo "images: built $repo/ironlb-controller:$tag and $repo/ironlb-speaker:$tag"
