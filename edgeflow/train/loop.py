"""The training loop: epochs of strict-fairness steps, evaluation, checkpoints, events, preemption.

Started by `edgeflow train` (edgeflow/commands/train.py) with the Plan of edgeflow/train/start.py,
once the config, the data and the run directory passed their checks. `Trainer.run` reads top to
bottom as the run goes; everything it writes goes through its recorder (edgeflow/train/recorder.py),
which only the chief of a job has for real.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow import jobenv, progress, rundir
from edgeflow.config import dump as config_dump
from edgeflow.config import eval_archs, eval_bn_mode
from edgeflow.data.pipeline import data_error_message, is_data_error, steps_per_epoch, train_dataset
from edgeflow.space.sampler import make_sampler
from edgeflow.train import devices, distribute, early_stop, epoch_stats, flow_pictures, steplog, workers
from edgeflow.train.checkpoint import kept_kind
from edgeflow.train.epoch_clock import EpochClock, evaluates
from edgeflow.train.evaluate import Evaluator, datasets, split_dataset, zero_flow_epe
from edgeflow.train.feed import EpochFeed
from edgeflow.train.rank_tau import stability_fields
from edgeflow.train.recorder import NullRecorder, Recorder, RunDirWriteError
from edgeflow.train.restore import build_model, warm_start
from edgeflow.train.schedule import learning_rate, total_steps
from edgeflow.train.signals import StopFlag
from edgeflow.train.start import Plan
from edgeflow.train.state import TrainState
from edgeflow.train.step import TrainStep


class _Diverged(Exception):
    pass


class Trainer:
    def __init__(self, plan: Plan) -> None:
        self.plan, self.cfg = plan, plan.cfg
        self.job_id = jobenv.job_id()
        self.stop = StopFlag()
        self.tty = sys.stdout.isatty()
        # First: a multi-worker strategy must start before anything else starts TensorFlow's runtime.
        self.strategy, self.task = distribute.make_strategy(self.cfg)
        devices.check_gpus()  # GPUs given but not usable: exit 2 before anything is written
        self.replicas = 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)
        cfg = self.cfg
        self.spe = steps_per_epoch(len(plan.splits.train), cfg.train.batch_size)
        if self.strategy is None:
            self.model = build_model(cfg)  # the supernet, or train.arch's stand-alone net
            self.step_fn: TrainStep = TrainStep(self.model, cfg, log_steps=self.spe)
        else:
            self.model = distribute.build_model(cfg, self.strategy)
            self.step_fn = distribute.DistributedTrainStep(self.model, cfg, self.strategy, log_steps=self.spe)
            distribute.check_last_batch(self.step_fn.layout, len(plan.splits.train), cfg.train.batch_size,
                                        cfg.train.sync_batch_norm)
        self.evaluator = Evaluator(self.model, cfg)
        objects: dict[str, tf.Module] = {"model": self.model, "optimizer": self.step_fn.optimizer}
        if self.step_fn.loss_scale is not None:
            # Saved so a resume continues with the same scale; absent in float32 (checkpoints unchanged).
            objects["loss_scale"] = self.step_fn.loss_scale
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.sampler = make_sampler(cfg.runtime.seed, cfg.train.arch)
        self.horizon = total_steps(cfg.train.num_epochs, self.spe)
        if self.task.count > 1:
            # Every task must start the same run before any of them writes: raises ClusterError (exit 2).
            workers.check_agreement(self.strategy, self.task, self._start_digest(), cfg.train.worker_timeout_s)
        # Only the chief writes the run directory; the other tasks compute the same steps and decisions.
        self.rec: Recorder = (Recorder(plan, self.job_id) if self.task.chief
                              else NullRecorder(plan, self.job_id, self.task.index))
        self._feed: tuple[tuple[int, int], EpochFeed] | None = None
        self.other_evals: dict[str, Any] = {}
        self.state = TrainState()
        # Measured wall time around the steps (evaluation, checkpoints): the epoch event and the ETA.
        self.clock = EpochClock(cfg.eval.every_epochs, cfg.train.num_epochs)
        self._epoch_wall = 0.0
        self.zero_flow_epe: float | None = None
        # Steps queued on the device but not yet read back: (archs, data probe, samples) each.
        self._pending: list[tuple[np.ndarray, np.ndarray, int]] = []
        self._mark = time.perf_counter()  # training time is added to the epoch's statistics at each read

    def run(self) -> int:
        """Train to the end, an early stop, a divergence or a preemption; returns the exit code."""
        cfg = self.cfg
        try:
            # 1. the run directory: held by this trainer alone, its start files written
            self.rec.start(device=devices.describe(),
                           **({"tasks": list(self.task.addresses)} if self.task.count > 1 else {}),
                           **({"arch": cfg.train.arch} if cfg.train.arch else {}))
        except (rundir.RunLocked, RunDirWriteError) as exc:  # nothing of this start was written
            self.rec.close()
            print(f"edgeflow train: {exc}", file=sys.stderr, flush=True)
            return rundir.EXIT_BAD_INPUT
        self.stop.install()
        try:
            # 2. the weights and state to continue from, the first epoch's input
            start_fields = self._restore()
            self.step_fn.log.start(consecutive_nonfinite=self.state.consecutive_nonfinite,
                                   limit=cfg.train.max_nonfinite_steps)
            self._prepare_feed(self.state.epoch + 1, self._skip(self.state.batch_in_epoch))
            # 3. the fixed evaluation batches (decoded once, kept on the device when they fit), and the
            # bar any learning must clear on them
            splits = self.plan.splits
            selected = splits.eval_split()
            recal, evals = datasets(cfg, splits.train, selected.samples, cache=True, size=selected.size,
                                    batches=selected.num_batches(cfg.eval.batch_size))
            # The other evaluation splits (eval.splits), reported beside the one selected on.
            self.other_evals = {name: split_dataset(cfg, split) for name, split in splits.evals.items()
                                if name != splits.select_on}
            start_fields["zero_flow_epe"] = zero_flow_epe(self.model, evals)
            self.zero_flow_epe = start_fields["zero_flow_epe"]
            print(f"EPE of predicting zero flow on the eval batches: {progress.significant(self.zero_flow_epe)}",
                  flush=True)
            if splits.exclusion is not None:  # data.exclude_list: left out on purpose, never silently
                start_fields["excluded_on_purpose"] = dict(splits.exclusion["samples"])
            if cfg.train.arch:  # a stand-alone net of this arch (absent: the supernet)
                start_fields["arch"] = cfg.train.arch
            self.rec.record("run_start", train_samples=len(self.plan.splits.train),
                            val_samples=len(self.plan.splits.val), start_epoch=self.state.epoch + 1,
                            num_epochs=cfg.train.num_epochs, patience=cfg.eval.early_stop_patience,
                            replicas=self.replicas, **start_fields)
            self._write_state()
            # 4. epochs: train, evaluate, checkpoint, decide
            for epoch in range(self.state.epoch + 1, cfg.train.num_epochs + 1):
                if not self._train_epoch(epoch):
                    self._checkpoint("latest", epoch, batch_in_epoch=self.state.batch_in_epoch)
                    return self._end("preempted", f"{self._signal_name()} at epoch {epoch} batch "
                                     f"{self.state.batch_in_epoch}; checkpoint written", rundir.EXIT_PREEMPTED)
                ending = self._finish_epoch(epoch, recal, evals)
                if ending is not None:
                    return ending
                if self.step_fn.any_stop(self.stop.requested):
                    return self._end("preempted", f"{self._signal_name()} after epoch {epoch}; checkpoint written",
                                     rundir.EXIT_PREEMPTED)
            # Reached only when there was nothing left to train (e.g. num_epochs lowered on resume).
            return self._end("completed", f"num_epochs={cfg.train.num_epochs} reached", rundir.EXIT_OK)
        except _Diverged as exc:
            return self._end("diverged", str(exc), rundir.EXIT_DIVERGED)
        except RunDirWriteError as exc:
            # Nothing half-written is used later; the end is recorded where the run directory still can be.
            return self._end("failed", str(exc), rundir.EXIT_FAILED)
        except tf.errors.OpError as exc:
            if not is_data_error(exc):
                traceback.print_exc()
                return self._end("failed", f"{type(exc).__name__}: {exc.message}", rundir.EXIT_FAILED)
            # A sample that broke after the start's scan: bad data, which a requeue cannot mend.
            return self._end("data_error", data_error_message(exc), rundir.EXIT_DATA_ERROR)
        except KeyboardInterrupt:
            return self._end("failed", "interrupted (SIGINT); resume from the last checkpoint", rundir.EXIT_FAILED)
        except Exception as exc:  # any other failure still ends the run's files cleanly
            traceback.print_exc()
            return self._end("failed", f"{type(exc).__name__}: {exc}", rundir.EXIT_FAILED)
        finally:
            if self._feed is not None:
                self._feed[1].close()
            progress.close_open()
            self.rec.close()
            self.stop.uninstall(ignore_repeats=True)

    # ---------------------------------------------------------------- an epoch
    def _train_epoch(self, epoch: int) -> bool:
        """Train the (rest of the) epoch; False when a preemption signal stopped it.

        Steps are queued without reading anything back; the step log is read (which waits for the
        device) only for a heartbeat, a progress line, a stop and the epoch's end (design: docs/training.md)."""
        cfg, state = self.cfg, self.state
        skip = self._skip(state.batch_in_epoch)
        feed = self._take_feed(epoch, skip)
        self.clock.steps_start(epoch)
        later_seconds, measured = self.clock.later_seconds(epoch)
        bar = progress.Reporter(f"epoch {epoch}/{cfg.train.num_epochs}", self.spe, done=skip, tty=self.tty,
                                later_units=(cfg.train.num_epochs - epoch) * self.spe, later_seconds=later_seconds,
                                later_measured=measured, every_seconds=cfg.runtime.progress_seconds)
        collective = self.step_fn.collective_stop
        last_beat, beat_samples, last_read = time.time(), 0, time.monotonic()
        # Training time runs from here to each read, so waiting for input counts against throughput.
        self._mark = time.perf_counter()
        for i, batch in enumerate(feed):
            archs = self.sampler.next_archs()
            lr = learning_rate(state.step + len(self._pending), cfg.train.lr, self.horizon, cfg.train.lr_schedule,
                               cfg.train.lr_min)
            stop = self.stop.requested
            self.step_fn.launch(batch.inputs, archs, lr, stop=stop)
            self._pending.append((archs, batch.probe, batch.size))
            beat_samples += batch.size
            beat = time.time() - last_beat >= cfg.runtime.heartbeat_seconds
            line = (time.monotonic() - last_read >= cfg.runtime.progress_seconds if self.tty
                    else bar.clock() - bar.last_line >= bar.every_seconds)
            # Multi-worker: every task must stop at the same step, so the shared stop flag is looked
            # at after a fixed number of steps, the same on every task.
            poll = collective and (i + 1) % distribute.STOP_POLL_STEPS == 0
            halt, loss = steplog.RUNNING, None
            if beat or line or poll or (stop and not collective):
                decide = poll or not collective
                read_halt, loss = self._read_steps(epoch, decide=decide)
                halt = read_halt if decide else halt
                last_read = time.monotonic()
            if loss is None:
                bar.update(samples=batch.size)
            else:
                bar.update(samples=batch.size, loss=loss)
            if beat:
                elapsed = time.time() - last_beat
                self.rec.record("heartbeat", epoch=epoch, step=state.step, replicas=self.replicas,
                                samples_per_second=beat_samples / elapsed if elapsed > 0 else 0.0)
                last_beat, beat_samples = time.time(), 0
            # A signal seen before this step (on any task): stop after it, unless it ended the epoch.
            if (halt == steplog.STOPPED or (stop and not collective)) and state.batch_in_epoch < self.spe:
                bar.close()
                return False
        halt, _ = self._read_steps(epoch, decide=True)
        if halt == steplog.STOPPED and state.batch_in_epoch < self.spe:
            bar.close()
            return False
        self._epoch_wall = self.clock.steps_end(epoch)  # after the read: it waits for the queued steps
        # The next epoch's input starts now, while this one is evaluated and checkpointed.
        self._prepare_feed(epoch + 1, 0)
        bar.close()
        return True

    def _read_steps(self, epoch: int, *, decide: bool) -> tuple[int, float | None]:
        """Read the steps queued since the last read and count them; returns the log's halt reason
        and the last loss read. `decide`: act on a halt (a divergence raises); a multi-worker task
        acts only where every task does."""
        readout = self.step_fn.log.read()
        state, records = self.state, readout.records
        if len(records) != len(self._pending):
            raise AssertionError(f"step log has {len(records)} new steps, the loop queued {len(self._pending)}")
        pending, self._pending = self._pending, []
        now = time.perf_counter()
        state.epoch_stats.add_seconds(now - self._mark)
        self._mark = now
        counted, loss = 0, None
        for record, (archs, data_probe, samples) in zip(records, pending, strict=True):
            if record.outcome == steplog.HALTED:
                continue  # queued after the step that halted the log: changed nothing
            counted += 1
            loss = record.loss
            self._count_step(epoch, record, archs, data_probe, samples)
        if readout.halt == steplog.RUNNING:
            state.sampler = self.sampler.state_dict()
        elif counted:
            # The log halted: the sampler's state is that after the last counted step, not the live one
            # (the loop may have drawn archs for steps queued after it).
            replay = make_sampler(self.cfg.runtime.seed, self.cfg.train.arch)
            replay.load_state_dict(state.sampler)
            for _ in range(counted):
                replay.next_archs()
            state.sampler = replay.state_dict()
        if decide and readout.halt != steplog.RUNNING:
            self.sampler.load_state_dict(state.sampler)
            if readout.halt == steplog.DIVERGED:
                limit = self.cfg.train.max_nonfinite_steps
                raise _Diverged(f"{state.consecutive_nonfinite} consecutive non-finite steps "
                                f"(train.max_nonfinite_steps={limit}), last at epoch {epoch} step {state.step}")
        return readout.halt, loss

    def _count_step(self, epoch: int, record: steplog.StepRecord, archs: np.ndarray, data_probe: np.ndarray,
                    batch: int) -> None:
        state = self.state
        state.epoch_stats.add_step(loss=record.loss, grad_norm=record.grad_norm, clipped=record.clipped,
                                   finite=record.applied or record.overflow, samples=batch, seconds=0.0,
                                   overflow=record.overflow)
        state.record_step(archs, data_probe)
        state.step += 1
        state.batch_in_epoch += 1
        if record.overflow:
            # A float16 loss-scale overflow: skipped and the scale halved, but not a divergence sign,
            # so it neither counts towards nor resets the run of non-finite steps.
            print(f"step {state.step}: float16 gradient overflow, update skipped; loss scale now "
                  f"{record.loss_scale:g}", flush=True)
        elif record.applied:
            state.consecutive_nonfinite = 0
        else:
            state.consecutive_nonfinite += 1
            state.nonfinite_total += 1
            print(f"step {state.step}: non-finite loss or gradient (loss {record.loss}, grad norm "
                  f"{record.grad_norm}); update skipped ({state.consecutive_nonfinite} in a row)", flush=True)

    def _finish_epoch(self, epoch: int, recal: Any, evals: Any) -> int | None:
        """Epoch event, evaluation, early stopping, checkpoints; an exit code when the run ends."""
        cfg, state = self.cfg, self.state
        epoch_fields = dict(state.epoch_stats.summary(), epoch=epoch, step=state.step,
                            fairness_gap=self.sampler.fairness_gap(), epoch_wall_seconds=self._epoch_wall,
                            lr=learning_rate(max(state.step - 1, 0), cfg.train.lr, self.horizon, cfg.train.lr_schedule,
                                          cfg.train.lr_min))
        if self.step_fn.loss_scale is not None:
            epoch_fields["loss_scale"] = float(self.step_fn.loss_scale.scale.numpy())
        self.rec.record("epoch", **epoch_fields)
        eval_fields, stop, improved = None, False, False
        if evaluates(epoch, cfg.eval.every_epochs, cfg.train.num_epochs):
            split_fields: dict[str, Any] = {}
            # The pool of a supernet; a stand-alone net's own arch (BN: eval_bn_mode).
            codes, bn_mode = eval_archs(cfg), eval_bn_mode(cfg)
            if self.other_evals:
                selected = self.plan.splits.select_on
                results = self.evaluator.evaluate_splits(codes, recal, {selected: evals, **self.other_evals})
                result = results.pop(selected)
                split_fields = {"split": selected, "splits": {name: r.fields() for name, r in results.items()}}
                for name, r in results.items():
                    print(f"epoch {epoch} {name}: mean EPE {progress.significant(r.mean_epe)} "
                          f"(median {progress.significant(r.median_epe)})", flush=True)
            else:
                result = self.evaluator.evaluate(codes, recal, evals)
                if self.plan.splits.select_on != "val":
                    split_fields = {"split": self.plan.splits.select_on}
            decision = early_stop.update(state.early_stop, epoch, result.mean_epe, min_delta=cfg.eval.min_delta,
                                         patience=cfg.eval.early_stop_patience,
                                         min_epochs=cfg.eval.min_epochs_before_early_stop)
            stop, improved = decision.stop, decision.improved
            es = state.early_stop
            # Ranking stability of a supernet's pool: against the previous evaluation and the best
            # checkpoint's as it stood before this one (kept in the state: a resume gives the same).
            stability = {} if cfg.train.arch else stability_fields(result.arch_epe, state.last_arch_epe,
                                                                      state.best_arch_epe)
            if not cfg.train.arch:
                state.last_arch_epe = dict(result.arch_epe)
                if improved:
                    state.best_arch_epe = dict(result.arch_epe)
            eval_fields = dict(result.fields(), epoch=epoch, best_epe=es.best, best_epoch=es.best_epoch,
                               bad_epochs=es.bad_epochs, patience=cfg.eval.early_stop_patience, improved=improved,
                               bn_mode=bn_mode, **stability, **split_fields)
            self.rec.record("eval", **eval_fields)
            # Pictures of the best and worst arch's flow on a few eval samples (every task computes, as in
            # the evaluation; only the chief's recorder writes).
            self.rec.flow_samples(flow_pictures.take(self.model, self.evaluator, result, epoch, recal, evals,
                                                     self.plan.splits.eval_split().samples, bn_mode))
        state.epoch, state.batch_in_epoch = epoch, 0
        state.epoch_stats = epoch_stats.EpochStats()
        ending = "early_stopped" if stop else ("completed" if epoch >= cfg.train.num_epochs else None)
        state.status = ending or "running"
        if improved:
            self._checkpoint("best", epoch)
        keep = cfg.checkpoint.keep_every
        # checkpoint.keep_every: this epoch's latest checkpoint is also kept as epoch-<N>, never rotated away.
        self._checkpoint("latest", epoch, also=(kept_kind(epoch),) if keep and epoch % keep == 0 else ())
        print(epoch_stats.epoch_line(epoch, cfg.train.num_epochs, epoch_fields, eval_fields), flush=True)
        if ending == "early_stopped":
            es = state.early_stop
            return self._end("early_stopped", f"no improvement of mean EPE for {es.bad_epochs} evaluations "
                             f"(best {progress.significant(es.best)} at epoch {es.best_epoch})", rundir.EXIT_OK)
        if ending == "completed":
            return self._end("completed", f"num_epochs={cfg.train.num_epochs} reached", rundir.EXIT_OK)
        return None

    # ---------------------------------------------------------------- start: weights, state, input
    def _start_digest(self) -> str:
        """What every task of a job must agree on: the config, and where the run starts from."""
        plan = self.plan
        where = [str(p.prefix) if p is not None else "" for p in (plan.resume, plan.warm_start)]
        return rundir.to_json({"config": config_dump(self.cfg), "start": where,
                               "state": (plan.resume.state if plan.resume is not None else None),
                               "data": plan.data_record})

    def _restore(self) -> dict[str, Any]:
        """Load weights and state into the trainer; returns the run_start fields that say where from."""
        plan, cfg = self.plan, self.cfg
        fields: dict[str, Any] = {"data": plan.data_record, "resumed_from": None}
        if plan.data_change is not None:
            fields["data_change"] = plan.data_change
        if plan.resume is not None:
            self._read_checkpoint(str(plan.resume.prefix))
            state = TrainState.from_dict(plan.resume.state)
            self.sampler.load_state_dict(state.sampler)
            ended = (plan.previous_run or {}).get("status")
            if cfg.checkpoint.reset_early_stop_on_resume and ended in ("completed", "early_stopped", "diverged",
                                                                       "failed"):
                # Only a deliberate continuation of an ended run resets; a requeue after preemption never does.
                state.early_stop = early_stop.EarlyStopState()
                state.best_arch_epe = {}  # the best checkpoint's ranking goes with its early-stopping state
                fields["early_stop_reset"] = True
                print("early stopping reset (checkpoint.reset_early_stop_on_resume)", flush=True)
            if state.num_epochs != cfg.train.num_epochs:
                fields["previous_num_epochs"] = state.num_epochs
                print(f"schedule horizon changed: num_epochs {state.num_epochs} -> {cfg.train.num_epochs} "
                      f"(cosine LR now ends at step {self.horizon})", flush=True)
            state.num_epochs, state.status = cfg.train.num_epochs, "running"
            where = f"epoch {state.epoch}" + (f", batch {state.batch_in_epoch}" if state.batch_in_epoch else "")
            print(f"resumed from {plan.resume.prefix} ({where}, step {state.step})", flush=True)
            fields["resumed_from"] = str(plan.resume.prefix)
            self.state = state
            return fields
        self.state = TrainState(num_epochs=cfg.train.num_epochs, sampler=self.sampler.state_dict())
        if plan.warm_start is not None and plan.init_from is not None:
            # Weights (and BN statistics) only: a new experiment gets a fresh optimizer and schedule.
            warm_start(self.model, plan.warm_start.prefix, standalone=bool(cfg.train.arch))
            print(f"weights from {plan.warm_start.prefix} ({plan.init_from['run']}"
                  f"{', ' + plan.init_from['layers'] if cfg.train.arch else ''}); fresh optimizer", flush=True)
            fields.update(resumed_from=str(plan.warm_start.prefix), warm_start_from=plan.init_from["run"],
                          init_from=plan.init_from)
        return fields

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

    def _prepare_feed(self, epoch: int, skip: int) -> None:
        self._feed = None
        if epoch <= self.cfg.train.num_epochs:
            self._feed = ((epoch, skip), self._new_feed(epoch, skip))

    def _new_feed(self, epoch: int, skip: int) -> EpochFeed:
        def make() -> tf.data.Dataset:
            return train_dataset(self.plan.splits.train, self.cfg, epoch, skip_batches=skip, normalise=False)
        return EpochFeed(make, self.spe - skip, place=self.step_fn.place)

    def _skip(self, batch_in_epoch: int) -> int:
        if batch_in_epoch and self.plan.data_change is not None:
            # The rest of this epoch's order was a permutation of the old sample set: the epoch ends here.
            return self.spe
        return batch_in_epoch

    def _take_feed(self, epoch: int, skip: int) -> EpochFeed:
        prepared, self._feed = self._feed, None
        if prepared is not None and prepared[0] == (epoch, skip):
            return prepared[1]
        if prepared is not None:
            prepared[1].close()
        return self._new_feed(epoch, skip)

    # ---------------------------------------------------------------- files
    def _checkpoint(self, kind: str, epoch: int, also: tuple[str, ...] = (), **extra: Any) -> None:
        self.rec.checkpoint(kind, epoch, self.checkpoint.write, self.state.to_dict(), also=also, **extra)
        self._write_state()

    def _write_state(self) -> None:
        s, cfg = self.state, self.cfg
        self.rec.state({
            "experiment": cfg.runtime.experiment_name, "status": s.status, "epoch": s.epoch, "step": s.step,
            "batch_in_epoch": s.batch_in_epoch, "num_epochs": cfg.train.num_epochs, "steps_per_epoch": self.spe,
            "best_epe": s.early_stop.best, "best_epoch": s.early_stop.best_epoch,
            "bad_epochs": s.early_stop.bad_epochs, "patience": cfg.eval.early_stop_patience,
            "fairness_counts": self.sampler.counts.astype(int).tolist(),
            "fairness_gap": self.sampler.fairness_gap(), "nonfinite_steps": s.nonfinite_total,
            "arch_digest": s.arch_digest, "data_digest": s.data_digest, "updated": time.time(),
        })

    def _signal_name(self) -> str:
        return self.stop.name or "a stop signal on another task"

    def _end(self, status: str, reason: str, code: int) -> int:
        if status in ("failed", "data_error") and self._pending:
            try:  # the steps that ran before the failure belong in the state written below
                self._read_steps(self.state.epoch + 1, decide=False)
            except Exception:  # noqa: BLE001 -- the device may be what failed
                self._pending = []
        if status in ("diverged", "failed", "data_error"):
            self.state.status = status
            try:
                self._write_state()
            except Exception:  # noqa: BLE001 -- the model may not exist, or the folder may not take it
                pass
        self.rec.end(status, reason, code)
        print(f"run {status}: {reason} ({self.plan.paths.root})", flush=True)
        es = self.state.early_stop
        if es.best_epoch:
            print(f"result: {progress.against_zero_flow(es.best, self.zero_flow_epe)} (epoch {es.best_epoch})",
                  flush=True)
        return code
