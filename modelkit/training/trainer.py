"""The training loop: data as tensors on the device, batched by index, no DataLoader.

:meth:`Trainer.fit` reads in the order things happen at every step: forward/backward/update
(:meth:`Trainer.step`) -> the LR schedule's step -> log -> fingerprint -> at an epoch end
evaluate, then checkpoint -> stop. There is ONE step for every precision and world size
(nanoGPT style): autocast is a no-op context for fp32 and the grad scaler is disabled unless
fp16, so neither is a branch. Under DDP each step takes the same global batch as a single
process, split across ranks; metrics are summed across ranks.

The Trainer holds the live objects built by :mod:`modelkit.training.setup` and a
:class:`~modelkit.training.state.TrainState` (where training is); every file it writes goes
through its :class:`~modelkit.training.record.RunWriter`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import TrainingError
from modelkit.runs.perturb import parse_perturb
from modelkit.runs.rng import epoch_permutation
from modelkit.training import accel, sharding
from modelkit.training import distributed as D
from modelkit.training.evaluate import evaluate_task
from modelkit.training.events import ProgressEvent
from modelkit.training.optim import clip_gradients
from modelkit.training.options import RunOptions
from modelkit.training.record import RunWriter
from modelkit.training.setup import Setup
from modelkit.training.state import TrainState, capture


class Trainer:
    """One run's live objects and its :class:`TrainState`; ``fit`` trains from that state.

    ``model`` is always the plain module (fingerprints, checkpoints and weights use its
    names); ``forward`` is what the step calls: the module, or DDP and/or torch.compile
    around it.
    """

    def __init__(
        self,
        s: Setup,
        *,
        writer: RunWriter,
        options: RunOptions,
        emit: Callable[[ProgressEvent], None],
    ) -> None:
        cfg, world = s.config, s.world
        self.config, self.data, self.model, self.device = cfg, s.data, s.model, s.device
        self.optimizer, self.schedule, self.scaler = s.optimizer, s.schedule, s.scaler
        self.scheduler = s.schedule.scheduler if s.schedule is not None else None
        self.loss_fn, self.augment, self.world, self.mf = s.loss_fn, s.augment, world, s.mf
        self.task = s.task  # the loss over a batch, the held-out metrics (modelkit.tasks)
        self.units_per_sample = max(1, s.task.units(s.data.y_train[:1]))
        self.writer, self.options = writer, options
        self.emit = emit if world.main else (lambda _e: None)
        self.n = len(s.data.x_train)
        self.steps_per_epoch = s.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.state = TrainState(loss_sum=torch.zeros((), device=s.device))
        every = options.fingerprint_every
        self.fingerprint_every = cfg.fingerprint_every if every is None else every
        self.perturb = parse_perturb(options.perturb, s.model)
        self.last_eval: dict[str, Any] = {}
        self.autocast = lambda: accel.autocast(cfg.precision, s.device)  # no-op for fp32
        forward: torch.nn.Module = s.model
        self.sharded = world.sharded  # FSDP2: s.model is already sharded in place (setup)
        self.buffers = self.sharded and any(True for _ in s.model.buffers())
        if self.sharded:  # where every rank writes its shards (rank 0's staging directory)
            where = str(writer.run.dir.checkpoints) if writer.run is not None else None
            self.checkpoint_dir = Path(D.all_gather_json(where, world)[0])
        elif world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [s.device.index] if s.device.type == "cuda" else None
            forward = DDP(s.model, device_ids=ids)  # broadcasts rank 0's weights to every rank
        self.forward = accel.maybe_compile(forward, enabled=cfg.compile)
        x, y = s.data.x_train, s.data.y_train
        self.fetch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = lambda idx: (
            x.index_select(0, idx),
            y.index_select(0, idx),
        )
        self.perm_device = s.device
        if s.placement == "host":  # pinned host batches, copied while the GPU works
            self.fetch = accel.PinnedBatcher(x, y, device=s.device, batch_size=cfg.batch_size)
            self.perm_device = torch.device("cpu")
        # each rank evaluates a contiguous shard of the held-out split; the counts are summed
        self.x_test = s.data.x_test.tensor_split(world.size)[world.rank]
        self.y_test = s.data.y_test.tensor_split(world.size)[world.rank]

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> str:
        """Train from ``self.state`` to the end (or ``stop_at_step``); 'complete' or 'stopped'."""
        cfg, st, opts = self.config, self.state, self.options
        stop_at, dump_dir = opts.stop_at_step, opts.dump_dir
        if st.step == 0 and st.batch == 0 and st.epoch == 0:
            self._after_step(None)  # step 0: the initial state
            if stop_at == 0:
                return self._stop()
            if 0 in opts.dump_steps and dump_dir is not None:
                self.dump(dump_dir)
        while st.epoch < cfg.epochs and st.step < self.total_steps:
            perm = epoch_permutation(self.n, seed=cfg.seed, epoch=st.epoch, device=self.perm_device)
            t0 = time.perf_counter()
            for b in range(st.batch, self.steps_per_epoch):
                n, loss = self.step(perm, b)  # forward, backward, update
                if self.schedule is not None:
                    self.schedule.after_step()  # the LR of the next step
                st.step, st.batch, st.samples = st.step + 1, b + 1, st.samples + n
                st.loss_sum += loss
                st.since_log += 1
                # max_steps may end the run mid-epoch: evaluated and checkpointed like an epoch
                end_of_epoch = st.batch == self.steps_per_epoch or st.step == self.total_steps
                if st.since_log == cfg.log_every or end_of_epoch:
                    self._log(time.perf_counter() - t0)
                self._after_step(loss)
                ckpt_due = bool(cfg.checkpoint_every) and st.step % cfg.checkpoint_every == 0
                dump_due = st.step in opts.dump_steps and dump_dir is not None
                stop = stop_at is not None and st.step >= stop_at
                if not (end_of_epoch or ckpt_due or dump_due or stop):
                    continue
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                st.train_time += time.perf_counter() - t0  # eval + checkpoint not timed
                if end_of_epoch:
                    self._evaluate()
                if end_of_epoch or ckpt_due:
                    self.checkpoint()
                if stop:
                    return self._stop()
                if dump_due:
                    self.dump(dump_dir)
                if st.step == self.total_steps:
                    return "complete"
                t0 = time.perf_counter()
        return "complete"

    def step(self, perm: torch.Tensor, b: int) -> tuple[int, torch.Tensor]:
        """One optimizer step on global batch ``b`` of the epoch's permutation ``perm``.

        Returns (global batch size, this rank's share of the batch's mean loss, detached).
        """
        cfg, world = self.config, self.world
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        n = len(idx)
        xb, yb = self.fetch(idx[world.rank :: world.size])  # this rank's share of the batch
        if self.augment is not None:
            rows = torch.arange(world.rank, n, world.size) if world.distributed else None
            xb = self.augment(
                xb, seed=cfg.seed, epoch=self.state.epoch, batch=b, positions=rows, total=n
            )
        xb = xb.contiguous(memory_format=self.mf)
        if self.buffers:
            sharding.sync_buffers(self.model, world)  # rank 0's buffers, as DDP does
        with self.autocast():
            output = self.forward(xb)
        loss, share = self._batch_loss(output, yb, n)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return n, share

    def _batch_loss(
        self, output: Any, yb: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to differentiate, this rank's share of the global batch's mean loss).

        The task reads the output and computes the loss (per sample, or per token). Under DDP
        gradients are averaged over ranks, so a rank's loss is the sum over its units scaled
        by world/units: the average is then the global batch's mean gradient.
        """
        if not self.world.distributed:
            loss = self.task.loss(output, yb, self.loss_fn)
            return loss, loss.detach()
        units = n * (self.task.units(yb) // max(1, len(yb)))  # the global batch's units
        total = self.task.loss(output, yb, self.loss_fn, reduction="sum")
        return total * (self.world.size / units), total.detach() / units

    # ---- log, fingerprint, evaluate -------------------------------------------------------
    def _log(self, elapsed: float) -> None:
        st = self.state
        total = (
            D.all_reduce_sum(st.loss_sum.clone(), self.world)
            if self.world.distributed
            else st.loss_sum
        )
        mean_loss = float(total) / st.since_log  # one sync per log interval
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"loss became {mean_loss} at step {st.step} (epoch {st.epoch + 1})",
                hint="lower --lr or check the data; the last good checkpoint is kept",
            )
        st.last_train_loss = mean_loss
        row = {"kind": "step", "step": st.step, "epoch": st.epoch + 1, "loss": mean_loss}
        if self.schedule is not None:
            row["lr"] = self.schedule.last_lr()
        self.writer.log(row, loss=mean_loss)
        total_time = st.train_time + elapsed
        sps = st.samples / total_time if total_time else 0.0
        # per_second: in the task's unit (samples, or tokens: every window holds T of them)
        self.emit(
            ProgressEvent(
                kind="step",
                step=st.step,
                loss=mean_loss,
                samples_per_second=sps,
                per_second=sps * self.units_per_sample,
                row=dict(row),
            )
        )
        st.loss_sum.zero_()
        st.since_log = 0

    def _after_step(self, loss: torch.Tensor | None) -> None:
        """Perturbation hook, then the step fingerprint when one is due."""
        st = self.state
        if self.perturb is not None:
            self.perturb.apply(st.step)
        every = self.fingerprint_every
        due = st.step == 0 or st.step == self.total_steps or st.step == self.options.stop_at_step
        if not every or not (due or st.step % every == 0):
            return
        if loss is not None and self.world.distributed:
            loss = D.all_reduce_sum(loss.clone(), self.world)  # the global batch's loss
        model: Any = self.model
        if self.sharded:  # whole tensors gathered one at a time, hashed on rank 0
            if not self.world.main:
                return sharding.drain(self.model)
            model = sharding.GatheredView(self.model)
        self.writer.fingerprint(st.step, model, loss, epoch=st.epoch + 1)

    def _evaluate(self) -> None:
        """End of an epoch: held-out metrics, the epoch's LR step, keep-best; next epoch."""
        st, world = self.state, self.world
        acc = evaluate_task(
            self.model,
            self.x_test,
            self.y_test,
            task=self.task,
            data=self.data,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            autocast=self.autocast,
            memory_format=self.mf,
        )
        if self.sharded:  # as many forwards (parameter all-gathers) on every rank
            sharding.even_out_eval(self)
        if world.distributed:  # the accumulator holds sums: add up every rank's shard
            comm = self.device if world.backend == "nccl" else torch.device("cpu")
            acc.load([D.all_reduce_sum(t.to(comm), world) for t in acc.tensors()])
        self.last_eval = acc.summary()
        row = {
            "kind": "epoch",
            "epoch": st.epoch + 1,
            "step": st.step,
            "train_loss": st.last_train_loss,
            **self.task.epoch_row(self.last_eval),
            "elapsed_s": round(st.train_time, 4),
        }
        if self.schedule is not None:
            loss = self.task.metric("loss")  # every task's held-out mean loss
            self.schedule.after_epoch(test_loss=self.last_eval[loss.key])
        if self.config.keep_best:
            row["best"] = self._keep_best()
        self.writer.log(row)
        st.epoch += 1
        st.batch = 0
        self.emit(ProgressEvent(kind="epoch", step=st.step, row=dict(row)))

    def _keep_best(self) -> bool:
        """Write the weights to best.safetensors when the held-out metric improved."""
        st = self.state
        metric = self.task.metric(self.config.keep_best)  # its key and direction
        value = float(self.last_eval[metric.key])
        if st.best_value is not None and not metric.better(value, st.best_value):
            return False
        st.best_value, st.best_epoch, st.best_step = value, st.epoch + 1, st.step
        self.writer.best_weights(self.model, model_name=self.config.model)
        return True

    # ---- checkpoints, dumps, stop ----------------------------------------------------------
    def checkpoint(self) -> None:
        """The run's checkpoint (collective under DDP/FSDP2; see modelkit.training.state)."""
        ckpt, keep = capture(self), self.config.keep_checkpoints
        if self.sharded:
            from modelkit.training.sharded_checkpoint import save_sharded

            if self.buffers:  # DCP saves a replicated tensor from any rank: make it rank 0's
                sharding.sync_buffers(self.model, self.world)
            save_sharded(self, ckpt, keep=keep)
        else:
            self.writer.checkpoint(ckpt, keep=keep)

    def dump(self, directory: Path) -> None:
        """A full state checkpoint into ``directory`` (collective under DDP; rank 0 writes)."""
        self.writer.dump(directory, capture(self))

    def _stop(self) -> str:
        if self.options.dump_dir is not None:
            self.dump(self.options.dump_dir)
        return "stopped"
