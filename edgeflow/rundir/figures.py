"""The figures a run reports: one table, read by the trainer, `jobs status`, the monitor and the report.

A figure is a number a run's events carry: its name (the event field, the metrics.csv column and the
TensorBoard tag's last part), its unit, the events that carry it, whether a new event of that kind
means the run is alive, how the monitor exports it and whether TensorBoard and metrics.csv show it.
Nothing else spells these out: the monitor builds its collectors from the table, the trainer writes
TensorBoard scalars and metrics.csv columns from it, and `jobs status` takes its "alive" events from it.

Light (standard library only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str                      # field in its events, metrics.csv column
    unit: str                      # "1" for a plain number or count, "px" for an EPE, "s", "samples/s", ...
    events: tuple[str, ...]        # the events that carry it (the latest one wins)
    help: str
    # Exported by the monitor as edgeflow_<metric> ("" = not exported as a plain latest value, because
    # the monitor derives it: a sum over epochs, a count of distinct epochs, a label per arch).
    metric: str = ""
    kind: str = "gauge"            # "gauge" or "counter" (the exporter adds `_total`)
    tensorboard: str = ""          # "train" or "eval": written as the TensorBoard scalar <group>/<name>
    csv: bool = False              # a column of metrics.csv


# Events whose arrival shows that the trainer (or a ranking, a search) is alive and making progress;
# a stall is the absence of all of them. `jobs status` and the monitor's stall alert use this.
PROGRESS_EVENTS: tuple[str, ...] = ("run_start", "heartbeat", "epoch", "eval", "checkpoint", "search")

_E, _V = ("epoch",), ("eval",)

FIGURES: tuple[Figure, ...] = (
    # where the run is
    Figure("epoch", "1", ("heartbeat", "epoch", "eval"), "Current epoch (latest heartbeat, epoch or eval event).",
           "epoch", csv=True),
    Figure("step", "1", ("heartbeat", "epoch"), "Current global training step.", "step", csv=True),
    Figure("num_epochs", "1", ("run_start",), "Planned number of epochs.", "num_epochs"),
    Figure("train_samples", "1", ("run_start",), "Valid training samples found at start.", "train_samples"),
    Figure("val_samples", "1", ("run_start",), "Valid validation samples found at start.", "val_samples"),
    Figure("replicas", "1", ("run_start", "heartbeat"), "tf.distribute replicas training the run (1: one device).",
           "replicas"),
    Figure("zero_flow_epe", "px", ("run_start",),
           "EPE of predicting zero flow on the eval batches: the bar any learning must clear.", "zero_flow_epe"),
    # an epoch
    Figure("lr", "1", _E, "Learning rate at the end of the last epoch.", "learning_rate", tensorboard="train",
           csv=True),
    Figure("train_loss", "1", _E, "Train loss, mean over the last epoch's archs and steps.", "train_loss",
           tensorboard="train", csv=True),
    Figure("grad_norm", "1", _E, "Global gradient norm before clipping, mean over the last epoch.", "grad_norm",
           tensorboard="train", csv=True),
    Figure("grad_norm_p50", "1", _E, "Median gradient norm over the last epoch.", csv=True),
    Figure("grad_norm_p90", "1", _E, "90th percentile of the gradient norm over the last epoch.", "grad_norm_p90",
           tensorboard="train", csv=True),
    Figure("grad_norm_p99", "1", _E, "99th percentile of the gradient norm over the last epoch.", csv=True),
    Figure("clip_count", "1", _E, "Steps of the last epoch whose gradient was clipped.", csv=True),
    Figure("clip_rate", "1", _E, "Fraction of the last epoch's steps whose gradient was clipped.",
           "grad_clip_ratio", tensorboard="train", csv=True),
    Figure("fairness_gap", "1", _E, "Max over blocks of max-min option count; 0 unless the sampler is broken.",
           "fairness_gap", tensorboard="train", csv=True),
    # per epoch in the events; the monitor sums it over distinct epochs (a counter)
    Figure("nonfinite_steps", "1", _E, "Steps skipped because the loss or gradient was not finite.",
           tensorboard="train", csv=True),
    Figure("overflow_steps", "1", _E, "float16 steps skipped for a loss-scale overflow (not a divergence sign)."),
    Figure("loss_scale", "1", _E, "float16 dynamic loss scale after the last epoch.", tensorboard="train"),
    Figure("epoch_seconds", "s", _E, "Wall time of the last epoch's training steps.", "epoch_duration_seconds",
           tensorboard="train", csv=True),
    # Measured from the end of one epoch's training steps to the end of the next one's: what an epoch
    # really costs, the previous epoch's evaluation, checkpoints and events included (for the first
    # epoch of a start: from its start, the step's trace included).
    Figure("epoch_wall_seconds", "s", _E, "Wall time of the last epoch with everything around its steps: the time "
           "between the ends of two epochs' training steps (evaluation and checkpoints included).",
           "epoch_wall_seconds", tensorboard="train", csv=True),
    Figure("samples_per_second", "samples/s", ("heartbeat", "epoch"), "Training throughput (latest heartbeat or "
           "epoch).", "samples_per_second", tensorboard="train", csv=True),
    # an evaluation of the pool
    Figure("mean_epe", "px", _V, "Mean EPE over the eval arch pool (last evaluation).", "epe_mean",
           tensorboard="eval", csv=True),
    Figure("std_epe", "px", _V, "Population std of EPE over the eval arch pool (last evaluation).", "epe_std",
           tensorboard="eval", csv=True),
    Figure("median_epe", "px", _V, "Median EPE over the eval arch pool (last evaluation).", "epe_median",
           tensorboard="eval", csv=True),
    Figure("p90_epe", "px", _V, "90th percentile EPE over the eval arch pool (last evaluation).", "epe_p90",
           tensorboard="eval", csv=True),
    Figure("best_epe", "px", _V, "Best mean EPE so far (the early-stopping metric).", "epe_best",
           tensorboard="eval", csv=True),
    Figure("best_epoch", "1", _V, "Epoch of the best mean EPE.", "epe_best_epoch", csv=True),
    Figure("bad_epochs", "1", _V, "Evaluations without improvement (early-stopping counter).",
           "early_stop_bad_evaluations", tensorboard="eval", csv=True),
    Figure("patience", "1", ("run_start", "eval"), "Early-stopping patience (bad evaluations that stop the run).",
           "early_stop_patience", csv=True),
    Figure("improved", "1", _V, "Whether this evaluation improved on the best.", csv=True),
    # ranking stability while a supernet trains: Kendall tau-b between this evaluation's pool ranking and
    # the previous evaluation's (and the best epoch's); absent at the first evaluation
    Figure("pool_rank_tau", "1", _V, "Kendall tau-b of the pool's arch ranking against the previous evaluation.",
           "pool_rank_tau", tensorboard="eval", csv=True),
    Figure("pool_rank_tau_best", "1", _V, "Kendall tau-b of the pool's arch ranking against the best epoch's.",
           "pool_rank_tau_best", tensorboard="eval", csv=True),
    # a ranking or a search (RUN/rank|search/<name>/events.jsonl)
    Figure("evaluations", "1", ("search",), "Archs evaluated by a ranking or search (RUN/rank|search/<name>).",
           "search_evaluations"),
    Figure("target", "1", ("search",), "Archs a ranking selected, or a search's evaluation budget.",
           "search_target"),
    Figure("front_size", "1", ("search",), "Archs on the EPE/cost Pareto front of a ranking or search.",
           "search_front_size"),
)

BY_NAME: dict[str, Figure] = {f.name: f for f in FIGURES}
assert len(BY_NAME) == len(FIGURES), "a figure is declared twice"
# The search event's best EPE is its own metric (a training run's best_epe is the early-stopping one).
SEARCH_BEST_EPE = Figure("best_epe", "px", ("search",), "Lowest mean EPE among the archs a ranking or search "
                         "evaluated.", "search_best_epe")


def carried_by(event: str) -> list[Figure]:
    """The exported figures an event of this kind carries (the latest value wins)."""
    out = [f for f in FIGURES if event in f.events and f.metric]
    if event == "search":
        out.append(SEARCH_BEST_EPE)
    return out


def tensorboard_figures(event: str) -> list[Figure]:
    return [f for f in FIGURES if f.tensorboard and event in f.events]


CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIGURES if f.csv)
