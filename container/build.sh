#!/usr/bin/env bash
# `make image CLUSTER=NAME`: build the Apptainer image with the settings of configs/clusters/NAME.yaml,
# write it to the profile's container.image, print its labels and sha256. See docs/container.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/container/python.sh"
exec "$py" "$repo/container/image.py" build "${1:-local}" "${@:2}"
