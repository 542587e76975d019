"""One trainer per SLURM task: find the peers, start MultiWorkerMirroredStrategy, check they agree.

`train.distribute: multi_worker` (or `auto` under several SLURM tasks). The strategy and the peer
discovery are TensorFlow's (`MultiWorkerMirroredStrategy`, `SlurmClusterResolver`); this module adds
what a cluster user needs around them:

1. the addresses: SLURM's step node list and tasks per node give `host:port` for every task; the
   ports start at EDGEFLOW_WORKER_PORT_BASE, else at a base derived from the job id, so two jobs
   sharing a node do not collide (and a requeued job, same id, gets the same ports);
2. the GPUs: the task's visible GPUs (CUDA_VISIBLE_DEVICES, which SLURM sets) are split between the
   tasks of a node; a CPU-only task gets none (the resolver alone would ask nvidia-smi and fail);
3. the start: the strategy's constructor waits for every peer without a limit, so a watchdog ends
   the process after `train.worker_timeout_s` (exit 1, nothing written; the addresses tried are
   printed before the wait);
4. the agreement: every task all-reduces a digest of its config and start decision before anything
   is written; a task that differs is named and every task stops (exit 2).

Task 0 is the chief: it alone writes the run directory (edgeflow/train/loop.py).
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from edgeflow import jobenv
from edgeflow.config import Config
from edgeflow.train.layout import DistributeError

PORT_BASE_ENV = "EDGEFLOW_WORKER_PORT_BASE"
_DIGEST_WORDS = 8  # 8 x 16 bits: exact in float32, which every collective implementation reduces


class ClusterError(DistributeError):
    """A multi-worker setup that cannot work (raised before training, exit 2)."""


@dataclass(frozen=True)
class Task:
    """This process's place among the trainers of a job (one task: index 0 of 1)."""

    index: int = 0
    count: int = 1
    addresses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def chief(self) -> bool:
        return self.index == 0


def port_base(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    if env.get(PORT_BASE_ENV):
        return int(env[PORT_BASE_ENV])
    job = jobenv.numeric_job_id(env)
    # 16 ports per job (tasks of one node) in 20000-51999, away from the usual service ports.
    return 20000 + (job % 2000) * 16 if job is not None else 20000


def _slurm_var(name: str) -> str:
    value = jobenv.required(name)
    if not value:
        raise ClusterError(f"train.distribute: multi_worker needs the SLURM task environment ({name} is not set); "
                           f"start one trainer per task with srun (make submit does), or use mirrored on one node")
    return value


def resolve() -> tuple[tf.distribute.cluster_resolver.ClusterResolver, Task]:
    """The cluster of this SLURM job step, with this task's GPUs made visible (before TensorFlow starts)."""
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (
        SlurmClusterResolver,
        expand_tasks_per_node,
    )

    _slurm_var("SLURM_PROCID")
    local_tasks = max(expand_tasks_per_node(_slurm_var("SLURM_STEP_TASKS_PER_NODE")))
    visible = jobenv.visible_gpus()
    if visible and len(visible) % local_tasks:
        raise ClusterError(f"train.distribute: {len(visible)} GPUs on the node cannot be split evenly between "
                           f"{local_tasks} tasks; make slurm.gpus_per_node a multiple of slurm.tasks_per_node")
    gpus_per_task = len(visible) // local_tasks if visible else 0
    # Without GPUs the resolver still pairs each task with a GPU slot; one per task, never applied.
    slurm = SlurmClusterResolver(port_base=port_base(), gpus_per_node=len(visible) or local_tasks,
                                 gpus_per_task=gpus_per_task or 1,
                                 auto_set_gpu=bool(visible) and local_tasks > 1)
    spec = slurm.cluster_spec()
    addresses = tuple(spec.as_dict()["worker"])
    task = Task(index=int(slurm.task_id), count=len(addresses), addresses=addresses)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type="worker", task_id=task.index, rpc_layer="grpc", num_accelerators={"GPU": gpus_per_task})
    return resolver, task


def connect(cfg: Config) -> tuple[tf.distribute.MultiWorkerMirroredStrategy, Task]:
    """Start MultiWorkerMirroredStrategy with every peer, or end the process after the timeout."""
    resolver, task = resolve()
    timeout = float(cfg.train.worker_timeout_s)
    print(f"task {task.index} of {task.count}: waiting up to {timeout:g} s for the peers "
          f"({', '.join(task.addresses)})", flush=True)
    # The constructor waits in C++ without releasing the GIL, so no Python thread or signal handler
    # can end the wait: faulthandler's watchdog is a C thread, which prints where it hung and exits 1.
    sys.stderr.write(f"edgeflow train: task {task.index} of {task.count}: if a 'Timeout' traceback follows, the "
                     f"peers did not all answer within {timeout:g} s (train.worker_timeout_s) at "
                     f"{', '.join(task.addresses)}: check that every task started, that the nodes reach each "
                     f"other on these ports ({PORT_BASE_ENV} moves them), and the other tasks' logs. Nothing "
                     f"is written before they answer.\n")
    sys.stderr.flush()
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(f"task {task.index} of {task.count}: all {task.count} tasks answered", flush=True)
    return strategy, task


def digest_words(text: str) -> np.ndarray:
    """128 bits of sha256(text) as 8 floats, each an exact 16-bit integer."""
    raw = hashlib.sha256(text.encode("utf-8")).digest()[:2 * _DIGEST_WORDS]
    return np.frombuffer(raw, dtype=">u2").astype(np.float32)


def check_agreement(strategy: tf.distribute.Strategy, task: Task, text: str, timeout_s: float) -> None:
    """Every task must start the same run: raise ClusterError naming the tasks whose `text` differs."""
    replicas = int(strategy.num_replicas_in_sync)
    per_task = max(replicas // task.count, 1)
    mine = tf.constant(digest_words(text))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)

    @tf.function
    def gather() -> tf.Tensor:
        def replica() -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            onehot = tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=tf.float32)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, onehot[:, None] * mine[None, :], options=options)
        return strategy.run(replica)

    table = strategy.experimental_local_results(gather())[0].numpy()
    rows = [table[t * per_task] for t in range(task.count)]
    differ = [t for t in range(task.count) if not np.array_equal(rows[t], rows[0])]
    if differ:
        raise ClusterError(f"train.distribute: tasks {', '.join(map(str, differ))} start a different run than "
                           f"task 0 (their config or resume decision differs: same config file and run directory "
                           f"for every task?); no task trains")


def any_task(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True on every task when `flag` is true on any of them (a collective: every task must call it)."""
    value = tf.constant(1.0 if flag else 0.0)

    @tf.function
    def reduce() -> tf.Tensor:
        def replica() -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))
        return strategy.run(replica)

    return bool(strategy.experimental_local_results(reduce())[0].numpy() > 0)
