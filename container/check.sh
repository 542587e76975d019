#!/usr/bin/env bash
# `make image-check CLUSTER=NAME`: `apptainer test` the image of configs/clusters/NAME.yaml, then run
# the GPU smoke job (here on a GPU node, else through srun on the profile's partition).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/container/python.sh"
exec "$py" "$repo/container/image.py" check "${1:-local}" "${@:2}"
