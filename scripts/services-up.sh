#!/usr/bin/env bash
# Installs (Debian 12 packages) and starts what the tests talk to: a single-node SLURM with munge,
# and Prometheus/promtool (the tests start their own Prometheus server on loopback). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)  # monitor push tests
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)  # alert routing test
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)  # `make setup` needs it
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash scripts/slurm-up.sh
echo "services: SLURM up (sinfo below); promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')"
sinfo
