"""Which replica computes what under train.distribute, and the setups that cannot work.

Light module (no TensorFlow): the launcher checks a job's replica count with it before queueing,
and the trainer (edgeflow/train/distribute.py) again before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeflow.config import ConfigError

MODES = ("arch_parallel", "data_parallel")
KINDS = ("none", "mirrored", "multi_worker", "auto")


class DistributeError(ConfigError):
    """A setup the chosen mode cannot use; raised before training starts (exit 2)."""


@dataclass(frozen=True)
class Layout:
    """Which arch and which batch shard each replica computes."""

    mode: str
    replicas: int

    @property
    def shards(self) -> int:
        return self.replicas // 3 if self.mode == "arch_parallel" else self.replicas

    def shard_of(self, replica: int) -> int:
        return replica // 3 if self.mode == "arch_parallel" else replica

    def bounds(self, batch: int, shard: int) -> tuple[int, int]:
        """Rows of shard `shard` in a batch of `batch` (an uneven last batch splits as evenly as it can)."""
        return shard * batch // self.shards, (shard + 1) * batch // self.shards


def check_layout(mode: str, replicas: int, batch_size: int) -> Layout:
    """The layout of `replicas` replicas in `mode`, or a DistributeError saying why it cannot work."""
    if mode not in MODES:
        raise DistributeError(f"train.distribute_mode: must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "arch_parallel" and replicas % 3:
        raise DistributeError(f"train.distribute_mode: arch_parallel needs 3 replicas or a multiple of 3 (one "
                              f"per arch of the step), got {replicas}; use data_parallel or change the "
                              f"number of GPUs/tasks")
    layout = Layout(mode, replicas)
    if batch_size % layout.shards:
        raise DistributeError(f"train.batch_size: {batch_size} is not divisible by the {layout.shards} batch "
                              f"shards of {mode} on {replicas} replicas")
    return layout


def replicas_of_job(tasks: int, gpus_per_task: int) -> int:
    """Replicas of a job of `tasks` trainers with `gpus_per_task` GPUs each (a CPU task is one replica)."""
    return tasks * max(gpus_per_task, 1)
