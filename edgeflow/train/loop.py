"""The training loop: epochs of strict-fairness steps, evaluation, checkpoints, events, preemption.

Started by `edgeflow train` (edgeflow/commands/train.py) with the Plan of edgeflow/train/start.py,
once the config, the data and the run directory passed their checks. The constructor builds
everything; `run` writes the start files and trains.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow import progress, rundir
from edgeflow.config import dump as config_dump
from edgeflow.data.pipeline import is_data_error, steps_per_epoch, train_dataset
from edgeflow.space.sampler import FairSampler
from edgeflow.train import distribute, early_stop, epoch_stats, workers
from edgeflow.train.checkpoint import CheckpointStore
from edgeflow.train.evaluate import Evaluator, datasets, zero_flow_epe
from edgeflow.train.feed import EpochFeed
from edgeflow.train.restore import build_supernet
from edgeflow.train.schedule import learning_rate, total_steps
from edgeflow.train.signals import StopFlag
from edgeflow.train.start import Plan, write_run_start_files
from edgeflow.train.state import TrainState
from edgeflow.train.step import TrainStep
from edgeflow.train.summaries import Summaries


class _Diverged(Exception):
    pass


class Trainer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.cfg = plan.cfg
        self.paths = plan.paths
        self.job_id = rundir.slurm_job_id()
        self.stop = StopFlag()
        self.tty = sys.stdout.isatty()
        self.summaries: Summaries | None = None  # opened by run(), on the chief only
        # First: a multi-worker strategy must start before anything else starts TensorFlow's runtime.
        self.strategy, self.task = distribute.make_strategy(self.cfg)
        # One chief writes the run directory; the other tasks of a multi-worker job compute the same
        # steps, evaluations and decisions, and write nothing there.
        self.chief = self.task.chief
        self.store = CheckpointStore(self.paths.checkpoints)
        self._build()
        if self.task.count > 1:
            # Every task must start the same run before any of them writes: raises ClusterError (exit 2).
            workers.check_agreement(self.strategy, self.task, self._start_digest(), self.cfg.train.worker_timeout_s)
        if self.chief:
            self.events: rundir.EventLog = rundir.EventLog(self.paths.events, self.cfg.runtime.experiment_name,
                                                           self.job_id)
        else:
            self.events = rundir.NullEventLog(self.cfg.runtime.experiment_name, self.job_id)

    # ---------------------------------------------------------------- setup
    def _start_digest(self) -> str:
        """What every task of a job must agree on: the config, and where the run starts from."""
        plan = self.plan
        where = [str(p.prefix) if p is not None else "" for p in (plan.resume, plan.warm_start)]
        return rundir.to_json({"config": config_dump(self.cfg), "start": where,
                               "state": (plan.resume.state if plan.resume is not None else None),
                               "data": plan.data_record})

    def run(self) -> int:
        self.stop.install()
        if self.chief:
            extra = {"tasks": list(self.task.addresses)} if self.task.count > 1 else {}
            write_run_start_files(self.plan, self.job_id, **extra)
        try:
            return self._run()
        except _Diverged as exc:
            return self._end("diverged", str(exc), rundir.EXIT_DIVERGED)
        except tf.errors.OpError as exc:
            if not is_data_error(exc):
                traceback.print_exc()
                return self._end("failed", f"{type(exc).__name__}: {exc.message}", rundir.EXIT_FAILED)
            # A sample that broke after the start's scan: bad data, which a requeue cannot mend.
            return self._end("data_error", exc.message.strip().splitlines()[0], rundir.EXIT_DATA_ERROR)
        except KeyboardInterrupt:
            return self._end("failed", "interrupted (SIGINT); resume from the last checkpoint", rundir.EXIT_FAILED)
        except Exception as exc:  # any other failure still ends the run's files cleanly
            traceback.print_exc()
            return self._end("failed", f"{type(exc).__name__}: {exc}", rundir.EXIT_FAILED)
        finally:
            prepared = getattr(self, "_feed", None)
            if prepared is not None:
                prepared[1].close()
            progress.close_open()
            if self.summaries is not None:
                self.summaries.close()
            self.stop.uninstall(ignore_repeats=True)

    def _build(self) -> None:
        cfg = self.cfg
        # train.distribute: the same step on the replicas of a tf.distribute strategy (docs/distribute.md).
        self.replicas = 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)
        if self.strategy is None:
            self.model = build_supernet(cfg)
            self.step_fn = TrainStep(self.model, cfg)
        else:
            self.model = distribute.build_model(cfg, self.strategy)
            self.step_fn = distribute.DistributedTrainStep(self.model, cfg, self.strategy)
            distribute.check_last_batch(self.step_fn.layout, len(self.plan.splits.train), cfg.train.batch_size,
                                        cfg.train.sync_batch_norm)
        self.evaluator = Evaluator(self.model, cfg)
        objects: dict[str, tf.Module] = {"model": self.model, "optimizer": self.step_fn.optimizer}
        if self.step_fn.loss_scale is not None:
            # Saved so a resume continues with the same scale; absent in float32 (checkpoints unchanged).
            objects["loss_scale"] = self.step_fn.loss_scale
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.sampler = FairSampler(cfg.runtime.seed)
        self.spe = steps_per_epoch(len(self.plan.splits.train), cfg.train.batch_size)
        self.horizon = total_steps(cfg.train.num_epochs, self.spe)

    def _restore(self) -> tuple[TrainState, str, dict[str, Any]]:
        """Load weights and state; returns (state, resumed_from, extra run_start fields)."""
        plan, cfg = self.plan, self.cfg
        extra: dict[str, Any] = {}
        extra["data"] = plan.data_record
        if plan.data_change is not None:
            extra["data_change"] = plan.data_change
        if plan.resume is not None:
            self._read_checkpoint(str(plan.resume.prefix))
            state = TrainState.from_dict(plan.resume.state)
            self.sampler.load_state_dict(state.sampler)
            ended = (plan.previous_run or {}).get("status")
            if cfg.checkpoint.reset_early_stop_on_resume and ended in ("completed", "early_stopped", "diverged",
                                                                       "failed"):
                # Only a deliberate continuation of an ended run resets; a requeue after preemption never does.
                state.early_stop = early_stop.EarlyStopState()
                extra["early_stop_reset"] = True
                print("early stopping reset (checkpoint.reset_early_stop_on_resume)", flush=True)
            if state.num_epochs != cfg.train.num_epochs:
                extra["previous_num_epochs"] = state.num_epochs
                print(f"schedule horizon changed: num_epochs {state.num_epochs} -> {cfg.train.num_epochs} "
                      f"(cosine LR now ends at step {self.horizon})", flush=True)
            state.num_epochs = cfg.train.num_epochs
            state.status = "running"
            where = f"epoch {state.epoch}" + (f", batch {state.batch_in_epoch}" if state.batch_in_epoch else "")
            print(f"resumed from {plan.resume.prefix} ({where}, step {state.step})", flush=True)
            return state, str(plan.resume.prefix), extra
        state = TrainState(num_epochs=cfg.train.num_epochs, sampler=self.sampler.state_dict())
        if plan.warm_start is not None:
            # Weights (and BN statistics) only: a new experiment gets a fresh optimizer and schedule.
            tf.train.Checkpoint(model=self.model).read(str(plan.warm_start.prefix)).expect_partial()
            print(f"weights from {plan.warm_start.prefix} ({plan.warm_start_from}); fresh optimizer", flush=True)
            extra["warm_start_from"] = plan.warm_start_from
            if plan.init_from:
                extra["init_from"] = plan.init_from
            return state, str(plan.warm_start.prefix), extra
        return state, "", extra

    def _read_checkpoint(self, prefix: str) -> None:
        loss_scale = self.step_fn.loss_scale
        if loss_scale is None:
            self.checkpoint.read(prefix).assert_existing_objects_matched()
            return
        # Weights and optimizer must all be there; the loss scale may be missing from a checkpoint
        # written in float32 (a run switched to mixed precision), which then starts at the initial scale.
        tf.train.Checkpoint(model=self.model, optimizer=self.step_fn.optimizer).read(
            prefix).assert_existing_objects_matched().expect_partial()
        try:
            tf.train.Checkpoint(loss_scale=loss_scale).read(prefix).assert_existing_objects_matched().expect_partial()
        except AssertionError:
            print(f"checkpoint {prefix} has no loss scale (trained in float32); starting at "
                  f"{float(loss_scale.scale.numpy()):g}", flush=True)

    # ---------------------------------------------------------------- main loop
    def _run(self) -> int:
        cfg = self.cfg
        state, resumed_from, extra = self._restore()
        self.state = state
        # Read while the zero-flow baseline is measured and the step is traced.
        self._prepare_feed(state.epoch + 1, self._skip(state.batch_in_epoch))
        recal, evals = datasets(cfg, self.plan.splits.train, self.plan.splits.val)
        # The bar any learning must clear: EPE of predicting zero flow on the same eval batches.
        extra["zero_flow_epe"] = zero_flow_epe(self.model, evals)
        print(f"EPE of predicting zero flow on the eval batches: {extra['zero_flow_epe']:.4f}", flush=True)
        self.events.emit("run_start", train_samples=len(self.plan.splits.train),
                         val_samples=len(self.plan.splits.val), resumed_from=resumed_from or None,
                         start_epoch=state.epoch + 1, num_epochs=cfg.train.num_epochs,
                         patience=cfg.eval.early_stop_patience, replicas=self.replicas, **extra)
        self.summaries = Summaries(self.paths.tensorboard) if self.chief else None
        self._write_state()
        for epoch in range(state.epoch + 1, cfg.train.num_epochs + 1):
            if not self._train_epoch(epoch):
                return self._preempted_mid_epoch(epoch)
            finished = self._finish_epoch(epoch, recal, evals)
            if finished is not None:
                return finished
            if self.step_fn.any_stop(self.stop.requested):
                return self._end("preempted", f"{self._signal_name()} after epoch {epoch}; checkpoint written",
                                 rundir.EXIT_PREEMPTED)
        # Reached only when there was nothing left to train (e.g. num_epochs lowered on resume).
        return self._end("completed", f"num_epochs={cfg.train.num_epochs} reached", rundir.EXIT_OK)

    def _train_epoch(self, epoch: int) -> bool:
        """Train the (rest of the) epoch; False when a preemption signal stopped it."""
        cfg, state = self.cfg, self.state
        skip = self._skip(state.batch_in_epoch)
        feed = self._take_feed(epoch, skip)
        last_beat = time.time()
        beat_samples = 0
        # Step time runs from one step's end to the next, so waiting for input counts against throughput.
        mark = time.perf_counter()
        bar = progress.Reporter(f"epoch {epoch}/{cfg.train.num_epochs}", self.spe, done=skip, tty=self.tty,
                                later_units=(cfg.train.num_epochs - epoch) * self.spe,
                                every_seconds=cfg.runtime.progress_seconds)
        for x, flow in feed:
            archs = self.sampler.next_archs()
            lr = learning_rate(state.step, cfg.train.lr, self.horizon, cfg.train.lr_schedule)
            result = self.step_fn(x, flow, archs, lr, stop=self.stop.requested)
            seconds, mark = time.perf_counter() - mark, time.perf_counter()
            batch = int(x.shape[0])
            state.epoch_stats.add_step(loss=result.loss, grad_norm=result.grad_norm, clipped=result.clipped,
                                       finite=result.finite, samples=batch, seconds=seconds,
                                       overflow=result.overflow)
            state.record_step(archs, np.concatenate([x[:, 0, 0, :].numpy(), flow[:, 0, 0, :].numpy()], axis=1))
            state.step += 1
            state.batch_in_epoch += 1
            state.sampler = self.sampler.state_dict()
            if result.overflow:
                # A float16 loss-scale overflow: skipped and the scale halved, but not a divergence sign,
                # so it neither counts towards nor resets the run of non-finite steps.
                print(f"step {state.step}: float16 gradient overflow, update skipped; loss scale now "
                      f"{result.loss_scale:g}", flush=True)
            elif result.finite:
                state.consecutive_nonfinite = 0
            else:
                state.consecutive_nonfinite += 1
                state.nonfinite_total += 1
                print(f"step {state.step}: non-finite loss or gradient (loss {result.loss}, grad norm "
                      f"{result.grad_norm}); update skipped ({state.consecutive_nonfinite} in a row)", flush=True)
                if state.consecutive_nonfinite >= cfg.train.max_nonfinite_steps:
                    raise _Diverged(f"{state.consecutive_nonfinite} consecutive non-finite steps "
                                    f"(train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}), last at "
                                    f"epoch {epoch} step {state.step}")
            beat_samples += batch
            bar.update(samples=batch, loss=result.loss)
            if time.time() - last_beat >= cfg.runtime.heartbeat_seconds:
                elapsed = time.time() - last_beat
                self.events.emit("heartbeat", epoch=epoch, step=state.step,
                                 samples_per_second=beat_samples / elapsed if elapsed > 0 else 0.0,
                                 replicas=self.replicas)
                last_beat, beat_samples = time.time(), 0
            # result.stop: a signal seen before this step, on any task (all tasks stop at the same step).
            if result.stop and state.batch_in_epoch < self.spe:
                bar.close()
                return False
        # The next epoch's input starts now, while this one is evaluated and checkpointed.
        self._prepare_feed(epoch + 1, 0)
        bar.close()
        return True

    def _prepare_feed(self, epoch: int, skip: int) -> None:
        self._feed: tuple[tuple[int, int], EpochFeed] | None = None
        if epoch <= self.cfg.train.num_epochs:
            def make() -> tf.data.Dataset:
                return train_dataset(self.plan.splits.train, self.cfg, epoch, skip_batches=skip)
            self._feed = ((epoch, skip), EpochFeed(make, self.spe - skip))

    def _skip(self, batch_in_epoch: int) -> int:
        if batch_in_epoch and self.plan.data_change is not None:
            # The rest of this epoch's order was a permutation of the old sample set: the epoch ends here.
            return self.spe
        return batch_in_epoch

    def _take_feed(self, epoch: int, skip: int) -> EpochFeed:
        prepared, self._feed = getattr(self, "_feed", None), None
        if prepared is not None and prepared[0] == (epoch, skip):
            return prepared[1]
        if prepared is not None:
            prepared[1].close()
        return EpochFeed(lambda: train_dataset(self.plan.splits.train, self.cfg, epoch, skip_batches=skip),
                         self.spe - skip)

    def _finish_epoch(self, epoch: int, recal, evals) -> int | None:
        """Epoch event, evaluation, early stopping, checkpoints; an exit code when the run ends."""
        cfg, state = self.cfg, self.state
        summary = state.epoch_stats.summary()
        epoch_fields = dict(summary, epoch=epoch, step=state.step, fairness_gap=self.sampler.fairness_gap(),
                            lr=learning_rate(max(state.step - 1, 0), cfg.train.lr, self.horizon,
                                             cfg.train.lr_schedule))
        if self.step_fn.loss_scale is not None:
            epoch_fields["loss_scale"] = float(self.step_fn.loss_scale.scale.numpy())
        self.events.emit("epoch", **epoch_fields)
        if self.summaries is not None:
            self.summaries.epoch(epoch_fields)
        eval_fields = None
        stop = False
        improved = False
        if epoch % cfg.eval.every_epochs == 0 or epoch == cfg.train.num_epochs:
            result = self.evaluator.evaluate(cfg.eval.pool, recal, evals)
            decision = early_stop.update(state.early_stop, epoch, result.mean_epe, min_delta=cfg.eval.min_delta,
                                         patience=cfg.eval.early_stop_patience,
                                         min_epochs=cfg.eval.min_epochs_before_early_stop)
            stop, improved = decision.stop, decision.improved
            es = state.early_stop
            eval_fields = dict(result.fields(), epoch=epoch, best_epe=es.best, best_epoch=es.best_epoch,
                               bad_epochs=es.bad_epochs, patience=cfg.eval.early_stop_patience, improved=improved,
                               bn_mode=cfg.eval.bn_mode)
            self.events.emit("eval", **eval_fields)
            if self.summaries is not None:
                self.summaries.evaluation(eval_fields)
        state.epoch, state.batch_in_epoch = epoch, 0
        state.epoch_stats = epoch_stats.EpochStats()
        ending = "early_stopped" if stop else ("completed" if epoch >= cfg.train.num_epochs else None)
        state.status = ending or "running"
        if improved:
            self._save("best", epoch)
        self._save("latest", epoch)
        self._write_state()
        if self.chief:
            rundir.atomic_write_text(self.paths.metrics, rundir.metrics_csv(rundir.read_events(self.paths.events)))
        print(epoch_stats.epoch_line(epoch, cfg.train.num_epochs, epoch_fields, eval_fields), flush=True)
        if ending == "early_stopped":
            es = state.early_stop
            return self._end("early_stopped", f"no improvement of mean EPE for {es.bad_epochs} evaluations "
                             f"(best {es.best:.4f} at epoch {es.best_epoch})", rundir.EXIT_OK)
        if ending == "completed":
            return self._end("completed", f"num_epochs={cfg.train.num_epochs} reached", rundir.EXIT_OK)
        return None

    # ---------------------------------------------------------------- files
    def _save(self, kind: str, epoch: int, **extra: Any) -> None:
        if not self.chief:
            # Every task writes (TensorFlow may read mirrored values with collectives while saving),
            # the others into a private folder that is removed at once.
            scratch = tempfile.mkdtemp(prefix=f"edgeflow-task{self.task.index}-")
            try:
                self.checkpoint.write(f"{scratch}/{kind}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        pointer = self.store.save(kind, self.checkpoint.write, self.state.to_dict())
        self.events.emit("checkpoint", epoch=epoch, kind=kind, path=str(pointer.prefix), **extra)

    def _signal_name(self) -> str:
        return self.stop.name or "a stop signal on another task"

    def _write_state(self) -> None:
        if not self.chief:
            return
        s, cfg = self.state, self.cfg
        rundir.write_state(self.paths.state, {
            "experiment": cfg.runtime.experiment_name, "status": s.status, "epoch": s.epoch, "step": s.step,
            "batch_in_epoch": s.batch_in_epoch, "num_epochs": cfg.train.num_epochs, "steps_per_epoch": self.spe,
            "best_epe": s.early_stop.best, "best_epoch": s.early_stop.best_epoch,
            "bad_epochs": s.early_stop.bad_epochs, "patience": cfg.eval.early_stop_patience,
            "fairness_counts": self.sampler.counts.astype(int).tolist(),
            "fairness_gap": self.sampler.fairness_gap(), "nonfinite_steps": s.nonfinite_total,
            "arch_digest": s.arch_digest, "data_digest": s.data_digest, "updated": time.time(),
        })

    def _preempted_mid_epoch(self, epoch: int) -> int:
        self._save("latest", epoch, batch_in_epoch=self.state.batch_in_epoch)
        self._write_state()
        return self._end("preempted", f"{self._signal_name()} at epoch {epoch} batch {self.state.batch_in_epoch}; "
                         f"checkpoint written", rundir.EXIT_PREEMPTED)

    def _end(self, status: str, reason: str, code: int) -> int:
        state = getattr(self, "state", None)
        if state is not None and status in ("diverged", "failed", "data_error"):
            state.status = status
            try:
                self._write_state()
            except Exception:  # the model may not exist when the failure happened early
                pass
        self.events.emit("run_end", status=status, reason=reason, exit_code=code)
        if self.chief:
            rundir.update_run(self.paths.run, status=status, reason=reason)
        print(f"run {status}: {reason} ({self.paths.root})", flush=True)
        return code
