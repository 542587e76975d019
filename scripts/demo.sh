#!/usr/bin/env bash
# `make demo`: the whole kit on one machine. Renders the demo data set (once), starts the monitor
# sidecar, runs a short training job through the launcher (local profile: submitit's local executor, no
# SLURM, no container; its preflight gate prints the data check once, and the node's gate one line)
# while its log streams here, shows what the sidecar exported, draws the run (`edgeflow report`: curves
# and flow pictures) and ends with the result against the zero-flow baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-data/demo}
CONFIG=${CONFIG:-configs/demo.yaml}
PORT=${EDGEFLOW_DEMO_PORT:-9464}
# A fresh experiment per demo, so a second `make demo` never resumes or overwrites the first.
NAME=demo-$(date +%Y%m%d-%H%M%S)
OUT_ROOT=$($PY -c "from edgeflow import config; print(config.load('$CONFIG').runtime.output_root)")
RUN_DIR=$OUT_ROOT/$NAME
SETS=(--set "runtime.experiment_name=$NAME" --set "data.train_dir=$DEMO_DIR/train" --set "data.val_dir=$DEMO_DIR/val")

echo "== 1/5 demo data in $DEMO_DIR"
if [ -d "$DEMO_DIR/train" ] && [ -d "$DEMO_DIR/val" ]; then
  echo "already rendered (delete $DEMO_DIR to render again)"
else
  $PY -m edgeflow demo-data --out "$DEMO_DIR" --train 96 --val 16 --seed 0
fi

echo "== 2/5 monitor sidecar on http://127.0.0.1:$PORT/metrics"
mkdir -p "$OUT_ROOT"
$PY -m monitor --run "$RUN_DIR" --http "127.0.0.1:$PORT" > "$OUT_ROOT/$NAME.monitor.log" 2>&1 &
MON=$!
trap 'kill $MON 2>/dev/null || true' EXIT
sleep 1
kill -0 $MON 2>/dev/null || { echo "the monitor did not start:"; cat "$OUT_ROOT/$NAME.monitor.log"; exit 1; }

echo "== 3/5 training through the launcher (cluster profile: local): its preflight gate, then the job's log"
$PY -m jobs submit --config "$CONFIG" --cluster local --wait "${SETS[@]}"

echo "== 4/5 what Prometheus would scrape (selected series)"
sleep 2
$PY - "$PORT" <<'PYEOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
keep = ("edgeflow_epoch{", "edgeflow_train_loss", "edgeflow_epe_mean", "edgeflow_epe_best{",
        "edgeflow_fairness_gap", "edgeflow_early_stop_bad_evaluations", "edgeflow_run_status")
for line in text.splitlines():
    if line.startswith(keep) and not (line.startswith("edgeflow_run_status") and line.endswith(" 0.0")):
        print("  " + line)
PYEOF
echo
echo "== 5/5 a picture of the run (curves, and the flow of a few eval samples)"
REPORT=$($PY -m edgeflow report "$RUN_DIR" --out "$RUN_DIR/report.png")
echo "$REPORT"
echo
echo "run directory: $RUN_DIR (config.yaml, run.json, events.jsonl, state.json, metrics.csv, flow_samples.npz, checkpoints/, jobs/)"
echo "per-epoch table: $RUN_DIR/metrics.csv"
echo "picture:         $RUN_DIR/report.png   (again: make report RUN=$RUN_DIR)"
echo "is it alive?     $PY -m jobs status $RUN_DIR"
echo "TensorBoard:     $PY -m tensorboard.main --logdir $OUT_ROOT   (scalars, and flow pictures under IMAGES)"
echo "evaluate again:  $PY -m edgeflow eval --run $RUN_DIR --checkpoint best"
echo "monitor log:     $OUT_ROOT/$NAME.monitor.log"
echo
# The last word: the run's best EPE against the EPE of predicting no motion at all.
echo "result: $(sed -n "s/^$NAME: //p" <<<"$REPORT")"
