#!/usr/bin/env bash
# `make test`, before pytest: the services some tests talk to (a single-node SLURM, Prometheus and its
# tools, Pushgateway, Alertmanager). As root on Debian, starts what is missing the way CI does
# (scripts/services-up.sh); otherwise says which tests will skip and how to get them. Never fails.
cd "$(dirname "$0")/.."
missing=()
sinfo >/dev/null 2>&1 || missing+=("SLURM (sinfo does not answer)")
for tool in prometheus promtool prometheus-pushgateway prometheus-alertmanager amtool; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "services: SLURM, Prometheus, Pushgateway and Alertmanager are there; no test skips for them"
  exit 0
fi
echo "services missing: ${missing[*]}"
if [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] && [ "${EDGEFLOW_NO_SERVICES:-0}" != 1 ]; then
  echo "starting them as CI does (scripts/services-up.sh; EDGEFLOW_NO_SERVICES=1 skips this)"
  if bash scripts/services-up.sh; then
    exit 0
  fi
  echo "services: scripts/services-up.sh failed (above); the tests that need them will skip"
else
  echo "the tests that need them skip, each with its reason. To run them: sudo make services" \
       "(Debian 12: installs and starts them), then make test again"
fi
exit 0
