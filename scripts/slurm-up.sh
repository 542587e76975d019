#!/usr/bin/env bash
# Start a single-node SLURM (Debian's slurm-wlm + munge) as root: no systemd, no cgroups.
# Installs scripts/slurm/slurm.conf (or $SLURM_CONF_TEMPLATE) with CPUs and RealMemory lowered to what this
# machine has (CPUs stay as configured when the template sets SlurmdParameters=config_overrides).
# Idempotent: running daemons are left alone, and the script returns once `sinfo` shows the
# node idle (or mixed/allocated: it is up and running jobs).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
REF="${SLURM_CONF_TEMPLATE:-$here/scripts/slurm/slurm.conf}"
CONF=/etc/slurm/slurm.conf
WAIT_S="${SLURM_UP_WAIT_S:-60}"

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-up: must run as root (it starts munged, slurmctld and slurmd)" >&2
  exit 1
fi
for cmd in munged slurmctld slurmd sinfo; do
  command -v "$cmd" >/dev/null || { echo "slurm-up: $cmd not found; apt-get install slurm-wlm munge" >&2; exit 1; }
done
[ -f "$REF" ] || { echo "slurm-up: config template $REF not found" >&2; exit 1; }

running() { pgrep -x "$1" >/dev/null 2>&1; }

# The node must not claim more than the machine has, or slurmd registers it as invalid (drained).
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
ref_cpus=$(sed -n 's/^NodeName=.*CPUs=\([0-9]*\).*/\1/p' "$REF")
ref_mem=$(sed -n 's/^NodeName=.*RealMemory=\([0-9]*\).*/\1/p' "$REF")
use_cpus=$(( cpus < ref_cpus ? cpus : ref_cpus ))
if grep -q '^SlurmdParameters=.*config_overrides' "$REF"; then
  use_cpus=$ref_cpus  # slots, not cores: slurmd reports the configured count (the template says why)
fi
use_mem=$(( mem_mb - 256 < ref_mem ? mem_mb - 256 : ref_mem ))
mkdir -p /etc/slurm
tmp=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
sed -e "s/^\(NodeName=.*\)CPUs=[0-9]*/\1CPUs=${use_cpus}/" \
    -e "s/^\(NodeName=.*\)RealMemory=[0-9]*/\1RealMemory=${use_mem}/" "$REF" > "$tmp"
changed=0
if ! cmp -s "$tmp" "$CONF" 2>/dev/null; then
  mv "$tmp" "$CONF"
  chmod 644 "$CONF"
  changed=1
  echo "slurm-up: wrote $CONF (CPUs=${use_cpus}, RealMemory=${use_mem} MB)"
else
  rm -f "$tmp"
fi

# Folders named in the config (and munge's runtime folder, which a container does not keep).
mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  echo "slurm-up: creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi

if ! running munged; then
  echo "slurm-up: starting munged"
  if command -v runuser >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  else
    su -s /bin/sh munge -c /usr/sbin/munged
  fi
fi
for _ in $(seq 1 20); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
munge -n </dev/null | unmunge >/dev/null || { echo "slurm-up: munge does not work" >&2; exit 1; }

if [ "$changed" = 1 ] && running slurmctld; then
  # A running controller would keep the old node definition.
  echo "slurm-up: config changed: restarting slurmd and slurmctld"
  for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 1 20); do running slurmctld || running slurmd || break; sleep 0.5; done
fi
if ! running slurmctld; then
  echo "slurm-up: starting slurmctld"
  slurmctld
fi
for _ in $(seq 1 20); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
if ! running slurmd; then
  echo "slurm-up: starting slurmd"
  slurmd -N localhost
fi

state=""
for _ in $(seq 1 "$WAIT_S"); do
  state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -n1)
  case "$state" in
    idle|mixed|allocated|completing) echo "slurm-up: node localhost is $state"; exit 0 ;;
    drain*|down*|fail*|inval*)
      # ReturnToService=2 brings a node back once it registers validly; nudge it after a restart.
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "slurm-up: node did not become idle within ${WAIT_S}s (state: ${state:-unknown})" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
