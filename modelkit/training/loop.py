"""The training loop: data as tensors on the device, batched by index, no DataLoader.

``train(config, out=...)`` writes a complete run directory (see modelkit.runs) and returns
the run record; ``resume(run_dir)`` continues a killed run from its newest good checkpoint
and ends bitwise identical to an uninterrupted run. Neither prints: progress goes to the
optional ``on_event`` callback.

Structure: :func:`_setup` builds everything a run needs (determinism, data, model, optimizer,
scheduler) into a :class:`Trainer`; :class:`TrainState` is the position (epoch, batch, step)
plus the logging accumulators, i.e. exactly what a checkpoint must restore besides the
model/optimizer/scheduler/RNG states. ``Trainer.fit`` runs from wherever the state says.

Inside a torchrun worker (see :mod:`modelkit.training.distributed`) the same code trains with
DistributedDataParallel: each step takes the same global batch as a single process, split
across ranks; only rank 0 writes the run directory; metrics are summed across ranks. The GPU
path (mixed precision, channels_last, torch.compile, TF32, pinned host batches) lives in
:mod:`modelkit.training.accel`. The single-process fp32 step is a separate, unchanged fast path.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from modelkit.config import TrainConfig
from modelkit.errors import BadInputError, DataError, ModelkitError, TrainingError
from modelkit.runs import RUN_RECORD_VERSION, RunDir, now_iso, open_run, prepare_run_dir
from modelkit.training import accel
from modelkit.training import distributed as D
from modelkit.training.checkpoint import (
    find_resume_checkpoint,
    list_checkpoints,
    remove_stale_temps,
    save_checkpoint,
    split_tensors,
    unflatten_optimizer,
)
from modelkit.training.determinism import (
    capture_rng,
    configure_determinism,
    epoch_permutation,
    restore_rng,
    seed_everything,
)
from modelkit.training.evaluate import evaluate_counts, summarize
from modelkit.training.fingerprint import step_fingerprint

__all__ = [
    "RunOptions",
    "TrainState",
    "Trainer",
    "epoch_permutation",
    "make_optimizer",
    "make_scheduler",
    "resolve_device",
    "resume",
    "seed_everything",
    "train",
]

Event = dict[str, Any]
PERTURB_ENV = "MODELKIT_PERTURB"


@dataclass(frozen=True)
class RunOptions:
    """Runtime knobs that do not change the config (so not its digest or the weights' metadata).

    ``perturb`` ("STEP:PARAM") is a test hook: after optimizer step STEP (0 = before training)
    the first element of parameter PARAM is moved by one ULP. ``dump_steps`` write a full
    state checkpoint into ``dump_dir`` at those steps (used by ``modelkit repro`` to name the
    tensors that differ). ``stop_at_step`` ends the run early (a repro prefix).
    """

    stop_at_step: int | None = None
    threads: int | None = None
    force_deterministic: bool = False
    fingerprint_every: int | None = None
    perturb: str | None = None
    dump_steps: tuple[int, ...] = ()
    dump_dir: Path | None = None
    expect_data_fingerprint: str | None = None
    data_placement: str = "auto"  # auto | device | host (pinned host batches, CUDA only)

    @classmethod
    def from_env(cls) -> RunOptions:
        """Options from the environment (only the ``MODELKIT_PERTURB`` test hook)."""
        return cls(perturb=os.environ.get(PERTURB_ENV) or None)


@dataclass
class TrainState:
    """Where training is: the exact data position plus the logging accumulators."""

    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # next batch index within the epoch
    step: int = 0  # optimizer steps taken
    samples: int = 0
    train_time: float = 0.0
    since_log: int = 0
    last_train_loss: float | None = None
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def to_meta(self) -> dict[str, Any]:
        """JSON part of the state (``loss_sum`` travels as a tensor)."""
        return {k: v for k, v in asdict(self).items() if k != "loss_sum"}


def resolve_device(name: str, *, local_rank: int | None = None) -> torch.device:
    """``auto`` -> cuda if available else cpu; refuse cuda when there is none.

    ``local_rank`` (a DDP worker) maps ``cuda``/``auto`` to that rank's own GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(
            "--device cuda asked for, but no CUDA device is available",
            hint="use --device cpu (or auto)",
        )
    if local_rank is not None and name.startswith("cuda"):
        if name != "cuda":
            raise BadInputError(
                f"--device {name} names one GPU, but each rank uses its own (cuda:LOCAL_RANK)",
                hint="use --device cuda with --nproc-per-node",
            )
        return torch.device("cuda", local_rank)
    return torch.device(name)


def make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` (a registry, not an if-chain).

    Fused kernels (one pass over all parameters; 3x faster than foreach for the MLP on CPU)."""
    wd = config.weight_decay
    factories: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=config.lr, weight_decay=wd, fused=True),
        "adamw": lambda: torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, fused=True),
        "sgd": lambda: torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=wd, fused=True
        ),
    }
    return factories[config.optimizer]()


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step LR schedule named by ``config.lr_schedule`` (None for ``none``)."""
    total = steps_per_epoch * config.epochs
    factories: dict[str, Callable[[], Any]] = {
        "none": lambda: None,
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
        "step": lambda: torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=steps_per_epoch, gamma=0.5
        ),
    }
    return factories[config.lr_schedule]()


class Trainer:
    """One run's live objects and its :class:`TrainState`; ``fit`` trains from that state.

    ``model`` is always the plain module (fingerprints, checkpoints and weights use its
    names); ``forward`` is what the step calls: the module, or DDP and/or torch.compile
    around it.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        run: RunDir,
        data: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        device: torch.device,
        options: RunOptions,
        emit: Callable[[Event], None],
        scaler: Any = None,
        world: D.World = D.SINGLE,
        placement: str = "device",
        mf: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.config, self.run, self.data, self.model = config, run, data, model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.device, self.options, self.emit = device, options, emit
        self.world, self.placement, self.mf = world, placement, mf
        self.n = len(data.x_train)
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.state = TrainState(loss_sum=torch.zeros((), device=device))
        every = options.fingerprint_every
        self.fingerprint_every = config.fingerprint_every if every is None else every
        self.perturb = _parse_perturb(options.perturb, model) if options.perturb else None
        self.pending: list[dict[str, Any]] = []  # metrics rows not yet on disk
        self.last_eval: dict[str, Any] = {}
        self.autocast_dtype = accel.AUTOCAST_DTYPES[config.precision]
        forward: torch.nn.Module = model
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            forward = DDP(model, device_ids=ids)  # broadcasts rank 0's weights to every rank
        self.forward = accel.maybe_compile(forward, enabled=config.compile)
        # the plain single-process fp32 step: no autocast, no scaler, no reshuffled memory
        self.fast = (
            not world.distributed
            and self.autocast_dtype is None
            and scaler is None
            and placement == "device"
            and mf is torch.contiguous_format
        )
        self.batcher = None
        if placement == "host":
            self.batcher = accel.PinnedBatcher(
                data.x_train, data.y_train, device=device, batch_size=config.batch_size, mf=mf
            )
        # each rank evaluates a contiguous shard of the held-out split; the counts are summed
        self.x_test = data.x_test.tensor_split(world.size)[world.rank]
        self.y_test = data.y_test.tensor_split(world.size)[world.rank]

    def _autocast(self) -> Any:
        return accel.autocast(self.config.precision, self.device)

    # ---- checkpoint state -------------------------------------------------------------
    def save(self, directory: Path, *, keep: int) -> Path | None:
        """Checkpoint everything needed to continue bitwise: model, optimizer, scheduler,
        scaler, every RNG state, the data position and the logging accumulators.

        Under DDP every rank calls this (it is collective): each rank's RNG states and loss
        accumulator are gathered and rank 0 writes one file (``rank{r}.`` prefixes for r > 0).
        """
        world = self.world
        cuda = (
            [self.device.index or 0] if world.distributed and self.device.type == "cuda" else None
        )
        rng_tensors, rng_meta = capture_rng(cuda)
        extra = {**rng_tensors, "loss_sum": self.state.loss_sum}
        objects: dict[str, Any] = {"rng": rng_meta, "distributed": world.record()}
        if self.scheduler is not None:
            objects["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            objects["scaler"] = self.scaler.state_dict()
        if world.distributed:
            names = sorted(extra)
            metas = D.all_gather_json({"names": names, "rng": rng_meta}, world)
            parts = [D.all_gather_tensor(extra[name], world) for name in names]
            for r in range(1, world.size):
                for i, name in enumerate(metas[r]["names"]):
                    extra[f"rank{r}.{name}"] = parts[i][r]
            objects["rank_rng"] = [metas[r]["rng"] for r in range(1, world.size)]
            if not world.main:
                return None
        return save_checkpoint(
            directory,
            step=self.state.step,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state.to_meta(),
            extra_tensors=extra,
            objects=objects,
            keep=keep,
        )

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Load a verified checkpoint (see :meth:`save`) into the live objects."""
        objects = meta.get("objects", {})
        saved_world = int((objects.get("distributed") or {}).get("world_size") or 1)
        if saved_world != self.world.size:
            raise BadInputError(
                f"checkpoint step {meta['step']} was written by {saved_world} process(es); "
                f"this run has {self.world.size}",
                hint=f"resume with --nproc-per-node {saved_world} (the same world size)",
            )
        model_state, optim_tensors, extra = split_tensors(tensors)
        self.model.load_state_dict(model_state, strict=True)
        optim_state = unflatten_optimizer(optim_tensors, meta["optimizer"])
        self.optimizer.load_state_dict(optim_state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(objects["scheduler"])
        if self.scaler is not None and "scaler" in objects:
            self.scaler.load_state_dict(objects["scaler"])
        rank, rng_meta = self.world.rank, objects["rng"]
        if rank > 0:
            prefix = f"rank{rank}."
            extra = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
            rng_meta = objects["rank_rng"][rank - 1]
        else:
            extra = {k: v for k, v in extra.items() if not k.startswith("rank")}
        fields = meta["state"]
        self.state = TrainState(**fields, loss_sum=extra["loss_sum"].to(self.device, copy=True))
        restore_rng({k: v for k, v in extra.items() if k.startswith("rng.")}, rng_meta)

    # ---- the loop ---------------------------------------------------------------------
    def fit(self) -> str:
        """Train from ``self.state`` to the end (or ``stop_at_step``); 'complete' or 'stopped'."""
        cfg, st, data, opts = self.config, self.state, self.data, self.options
        stop_at = opts.stop_at_step
        if st.step == 0 and st.batch == 0 and st.epoch == 0:
            self._after_step(None)  # step 0: the initial state
            if stop_at == 0:
                return self._stop()
            if 0 in opts.dump_steps and opts.dump_dir is not None:
                self.save(opts.dump_dir, keep=10**9)
        perm_device = self.device if self.batcher is None else torch.device("cpu")
        while st.epoch < cfg.epochs:
            perm = epoch_permutation(self.n, seed=cfg.seed, epoch=st.epoch, device=perm_device)
            t0 = time.perf_counter()
            for b in range(st.batch, self.steps_per_epoch):
                if self.fast:
                    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    xb, yb = data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)
                    loss = F.cross_entropy(self.forward(xb), yb)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    n = len(idx)
                    loss = loss.detach()
                else:
                    n, loss = self._step(perm, b)
                if self.scheduler is not None:
                    self.scheduler.step()
                st.step += 1
                st.batch = b + 1
                st.samples += n
                st.loss_sum += loss
                st.since_log += 1
                end_of_epoch = st.batch == self.steps_per_epoch
                if st.since_log == cfg.log_every or end_of_epoch:
                    self._log(time.perf_counter() - t0)
                self._after_step(loss)
                ckpt_due = bool(cfg.checkpoint_every) and st.step % cfg.checkpoint_every == 0
                dump_due = st.step in opts.dump_steps and opts.dump_dir is not None
                stop = stop_at is not None and st.step >= stop_at
                if end_of_epoch or ckpt_due or dump_due or stop:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    st.train_time += time.perf_counter() - t0  # eval + checkpoint not timed
                    if end_of_epoch:
                        self._end_epoch()
                    if end_of_epoch or ckpt_due:
                        self._checkpoint()
                    if stop:
                        return self._stop()
                    if dump_due:
                        self.save(opts.dump_dir, keep=10**9)
                    t0 = time.perf_counter()
        return "complete"

    def _step(self, perm: torch.Tensor, b: int) -> tuple[int, torch.Tensor]:
        """One optimizer step on global batch ``b`` (DDP, mixed precision, host data);
        returns (global batch size, this rank's share of the batch's mean loss)."""
        bs, world = self.config.batch_size, self.world
        idx = perm[b * bs : (b + 1) * bs]
        n = len(idx)
        if world.distributed:
            idx = idx[world.rank :: world.size]  # this rank's share of the global batch
        if self.batcher is not None:
            xb, yb = self.batcher(idx)
        else:
            xb = self.data.x_train.index_select(0, idx)
            yb = self.data.y_train.index_select(0, idx)
            if self.mf is not torch.contiguous_format:
                xb = xb.contiguous(memory_format=self.mf)
        if self.autocast_dtype is None:
            logits = self.forward(xb)
        else:
            with self._autocast():
                logits = self.forward(xb)
        if world.distributed:
            # DDP averages gradients over ranks: world/n * (sum over this rank's samples)
            # makes that average the mean over the whole global batch
            total = F.cross_entropy(logits.float(), yb, reduction="sum")
            loss = total * (world.size / n)
            share = total.detach() / n
        else:
            loss = F.cross_entropy(logits.float(), yb)
            share = loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return n, share

    def _log(self, elapsed: float) -> None:
        st = self.state
        total = st.loss_sum
        if self.world.distributed:
            total = D.all_reduce_sum(total.clone(), self.world)
        mean_loss = float(total) / st.since_log  # one sync per log interval
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"loss became {mean_loss} at step {st.step} (epoch {st.epoch + 1})",
                hint="lower --lr or check the data; the last good checkpoint is kept",
            )
        st.last_train_loss = mean_loss
        row = {"kind": "step", "step": st.step, "epoch": st.epoch + 1, "loss": mean_loss}
        if self.scheduler is not None:
            row["lr"] = self.scheduler.get_last_lr()[0]
        if self.world.main:
            self.pending.append(row)
        total_time = st.train_time + elapsed
        self.emit(
            {
                **row,
                "samples_per_second": st.samples / total_time if total_time else 0.0,
            }
        )
        st.loss_sum.zero_()
        st.since_log = 0

    def _after_step(self, loss: torch.Tensor | None) -> None:
        """Perturbation hook, then the step fingerprint when one is due."""
        st = self.state
        if self.perturb is not None and self.perturb[0] == st.step:
            with torch.no_grad():
                p = self.perturb[1].view(-1)
                p[0] = torch.nextafter(p[0], torch.tensor(math.inf, dtype=p.dtype))
        every = self.fingerprint_every
        due = st.step == 0 or st.step == self.total_steps or st.step == self.options.stop_at_step
        if every and (due or st.step % every == 0):
            if loss is not None and self.world.distributed:
                loss = D.all_reduce_sum(loss.clone(), self.world)  # the global batch's loss
            if not self.world.main:
                return
            self.pending.append(
                {
                    "kind": "fingerprint",
                    "step": st.step,
                    "epoch": st.epoch + 1,
                    "sha256": step_fingerprint(self.model, loss),
                    "loss": None if loss is None else float(loss.detach()),
                }
            )

    def _end_epoch(self) -> None:
        st, data, world = self.state, self.data, self.world
        fast = self.fast and not world.distributed
        confusion, loss_sum = evaluate_counts(
            self.model,
            self.x_test,
            self.y_test,
            num_classes=data.num_classes,
            batch_size=self.config.eval_batch_size,
            device=None if fast else self.device,
            autocast=None if self.autocast_dtype is None else self._autocast,
            memory_format=None if self.mf is torch.contiguous_format else self.mf,
        )
        if world.distributed:
            comm = self.device if world.backend == "nccl" else torch.device("cpu")
            confusion = D.all_reduce_sum(confusion.to(comm), world).cpu()
            loss_sum = D.all_reduce_sum(loss_sum.to(comm), world)
        self.last_eval = summarize(confusion, loss_sum, classes=data.classes)
        row = {
            "kind": "epoch",
            "epoch": st.epoch + 1,
            "step": st.step,
            "train_loss": st.last_train_loss,
            "test_loss": self.last_eval["loss"],
            "test_accuracy": self.last_eval["accuracy"],
            "elapsed_s": round(st.train_time, 4),
        }
        if world.main:
            self.pending.append(row)
        st.epoch += 1
        st.batch = 0
        self.emit(dict(row))

    def _flush(self) -> None:
        if self.world.main:
            self.run.append_metrics(self.pending)
        self.pending = []

    def _checkpoint(self) -> None:
        """Metrics first, then the checkpoint: rows past the newest checkpoint are cut on resume."""
        self._flush()
        self.save(self.run.checkpoints, keep=self.config.keep_checkpoints)

    def _stop(self) -> str:
        self._flush()
        if self.options.dump_dir is not None:
            self.save(self.options.dump_dir, keep=10**9)
        return "stopped"


def _parse_perturb(spec: str, model: torch.nn.Module) -> tuple[int, torch.Tensor]:
    step_s, _, name = spec.partition(":")
    params = dict(model.named_parameters())
    if not step_s.isdigit() or name not in params:
        from modelkit.errors import did_you_mean

        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' must be STEP:PARAM{did_you_mean(name, params)}",
            hint=f"parameters: {', '.join(params)}",
        )
    return int(step_s), params[name]


@dataclass
class _Setup:
    config: TrainConfig
    device: torch.device
    data: Any
    model: torch.nn.Module
    determinism: dict[str, Any]
    load_s: float
    world: D.World = D.SINGLE
    placement: str = "device"
    mf: torch.memory_format = torch.contiguous_format
    accel: dict[str, Any] = field(default_factory=dict)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` after model init (rank 0 keeps ``seed``: a single run's RNG)."""
    return seed if rank == 0 else seed * 1_000_003 + 7_919 * rank


def _setup(config: TrainConfig, *, project: Any, download: bool, options: RunOptions) -> _Setup:
    """Join the process group (under torchrun), then determinism, data, model (its init
    consumes the seeded RNG). Under DDP a failure on any rank stops every rank here."""
    _, size, local_rank = D.env_world()
    device = resolve_device(config.device, local_rank=local_rank if size > 1 else None)
    world = D.join(device.type)
    error: BaseException | None = None
    try:
        s = _setup_rank(config, project=project, download=download, options=options, device=device)
        s.world = world
        if world.rank > 0:  # different dropout masks per rank; rank 0 stays a single run's
            seed_everything(rank_seed(config.seed, world.rank))
            s.determinism["rank_seed"] = rank_seed(config.seed, world.rank)
    except Exception as exc:
        error = exc
    D.agree(world, error)
    return s


def _setup_rank(
    config: TrainConfig, *, project: Any, download: bool, options: RunOptions, device: torch.device
) -> _Setup:
    from modelkit.data import load_dataset
    from modelkit.models.registry import build_model

    accel.check_precision(config.precision, device)
    tf32 = accel.set_tf32(config.tf32)
    determinism = configure_determinism(
        seed=config.seed,
        threads=options.threads or config.threads,
        deterministic=config.deterministic or options.force_deterministic,
    )
    t_load = time.perf_counter()
    data = load_dataset(
        config.data, project=project, skip_bad_files=config.skip_bad_files, download=download
    )
    expected = options.expect_data_fingerprint
    if expected and data.fingerprint != expected:
        raise DataError(
            f"data '{config.data}' has fingerprint {data.fingerprint}, "
            f"but the recorded run used {expected}",
            hint="reproduce on the same data; a different dataset cannot reproduce the run",
        )
    placement = accel.choose_placement(
        accel.data_nbytes(data), device, requested=options.data_placement
    )
    if placement == "device":
        data.to(device)
    t_load = time.perf_counter() - t_load
    model, model_kwargs = build_model(
        config.model, project=project, kwargs=config.model_kwargs, data_hints=data.model_hints()
    )
    config = config.replace(model_kwargs=model_kwargs)  # the resolved config is what we save
    _check_fit(model, data, config)
    mf = accel.memory_format(model, device, enabled=config.channels_last)
    model.to(device).train()
    if mf is not torch.contiguous_format:
        model.to(memory_format=mf)
    if options.perturb:
        _parse_perturb(options.perturb, model)  # fail before anything is written
    record = accel.accel_record(
        precision=config.precision,
        device=device,
        scaler=accel.grad_scaler(config.precision, device),
        tf32=tf32,
        compiled=config.compile,
        mf=mf,
        placement=placement,
    )
    return _Setup(config, device, data, model, determinism, t_load, D.SINGLE, placement, mf, record)


def _trainer(s: _Setup, run: RunDir, options: RunOptions, emit: Callable[[Event], None]) -> Trainer:
    optimizer = make_optimizer(s.config, s.model.parameters())
    steps_per_epoch = math.ceil(len(s.data.x_train) / s.config.batch_size)
    scheduler = make_scheduler(s.config, optimizer, steps_per_epoch=steps_per_epoch)
    return Trainer(
        s.config,
        run=run,
        data=s.data,
        model=s.model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=s.device,
        options=options,
        emit=emit if s.world.main else (lambda _e: None),
        scaler=accel.grad_scaler(s.config.precision, s.device),
        world=s.world,
        placement=s.placement,
        mf=s.mf,
    )


def _base_record(s: _Setup, *, project: Any, fingerprint_every: int) -> dict[str, Any]:
    from modelkit.env import environment
    from modelkit.gitinfo import git_info

    return {
        "version": RUN_RECORD_VERSION,
        "started": now_iso(),
        "model": s.config.model,
        "seed": s.config.seed,
        "config_sha256": s.config.digest(),
        "git": git_info(getattr(project, "root", None) or Path.cwd()),
        "env": environment(s.device),
        "determinism": s.determinism,
        "distributed": s.world.record(),
        "accel": s.accel,
        "fingerprint_every": fingerprint_every,
        "data": s.data.summary(),
        "num_parameters": sum(p.numel() for p in s.model.parameters()),
    }


def _worker_errors(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Under torchrun, write a failing rank's error where the launcher reads it."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            if D.in_worker():
                D.write_error_file(exc, D.World(*D.env_world()[:2]))
            raise

    return wrapper


@_worker_errors
def train(
    config: TrainConfig,
    *,
    out: Path | str,
    project: Any = None,
    overwrite: bool = False,
    download: bool = False,
    on_event: Callable[[Event], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into the run directory ``out``; returns the run record.

    Under torchrun every rank calls this; rank 0 writes the run directory.
    """
    from modelkit.io import write_json_atomic
    from modelkit.models.weights import model_config

    options = options or RunOptions.from_env()
    emit = on_event or (lambda _e: None)
    s = _setup(config, project=project, download=download, options=options)
    every = options.fingerprint_every
    record: dict[str, Any] = {}
    run = RunDir(Path(out))
    error: BaseException | None = None
    if s.world.main:
        try:
            run = prepare_run_dir(out, overwrite=overwrite)
            write_json_atomic(
                run.config,
                model_config(
                    s.config.model, s.config.model_kwargs, s.config.to_dict(), project=project
                ),
            )
            record = {
                "status": "running",
                **_base_record(
                    s,
                    project=project,
                    fingerprint_every=s.config.fingerprint_every if every is None else every,
                ),
            }
            if options.perturb:
                record["perturbed"] = options.perturb  # a test hook was active: never a real result
            run.write_record(record)
        except Exception as exc:
            error = exc
    D.agree(s.world, error)
    trainer = _trainer(s, run, options, emit)
    return _fit(trainer, record, t_load=s.load_s)


@_worker_errors
def resume(
    run_dir: Path | str,
    *,
    project: Any = None,
    fallback: bool = False,
    on_event: Callable[[Event], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Continue a killed run from its newest verified checkpoint; returns the run record.

    A corrupt newest checkpoint raises RunDirError unless ``fallback`` (then the previous good
    one is used and the rejected files are listed in ``run.json["resumes"]``). Metrics rows past
    the checkpoint are cut, so the finished run equals an uninterrupted one, bit for bit.
    A run resumes only at the world size (number of processes) it was started with.
    """
    from modelkit.env import environment

    options = options or RunOptions.from_env()
    emit = on_event or (lambda _e: None)
    run = open_run(run_dir, require=("config.json",))
    record = run.read_record() if run.record.is_file() else {}
    if record.get("status") == "complete" and run.weights.is_file():
        return {**record, "already_complete": True}
    rank, size, _ = D.env_world()
    recorded_world = int((record.get("distributed") or {}).get("world_size") or 1)
    if record and recorded_world != size:
        raise BadInputError(
            f"{run_dir} was trained by {recorded_world} process(es); this resume has {size}",
            hint=f"modelkit train --resume {run_dir}"
            + (f" --nproc-per-node {recorded_world}" if recorded_world > 1 else ""),
        )
    config = run.train_config()
    removed = remove_stale_temps(run.checkpoints) if rank == 0 else []
    path, tensors, meta, rejected = find_resume_checkpoint(run.checkpoints, fallback=fallback)
    recorded_threads = record.get("determinism", {}).get("threads")
    recorded_perturb = record.get("perturbed")
    recorded_placement = (record.get("accel") or {}).get("data_placement")
    options = replace(options, threads=options.threads or recorded_threads)
    if recorded_perturb and not options.perturb:
        options = replace(options, perturb=recorded_perturb)
    if recorded_placement and options.data_placement == "auto":
        options = replace(options, data_placement=recorded_placement)
    s = _setup(config, project=project, download=False, options=options)
    if record.get("data", {}).get("fingerprint") not in (None, s.data.fingerprint):
        raise DataError(
            f"data '{config.data}' now has fingerprint {s.data.fingerprint}, "
            f"the run started on {record['data']['fingerprint']}",
            hint="resume only on the data the run started with",
        )
    trainer = _trainer(s, run, options, emit)
    if path is not None:
        trainer.restore(tensors, meta)
    if not s.world.main:
        return _fit(trainer, {}, t_load=s.load_s)
    _truncate_metrics(run, trainer.state.step if path is not None else -1)
    if not record:  # killed between config.json and run.json: rebuild the record
        record = _base_record(s, project=project, fingerprint_every=trainer.fingerprint_every)
    from modelkit.env import diff_environments

    record.setdefault("resumes", []).append(
        {
            "at": now_iso(),
            "from_step": trainer.state.step,
            "checkpoint": path.name if path is not None else None,
            "rejected_checkpoints": rejected,
            "removed_temp_files": removed,
            "env_diff": diff_environments(record.get("env", {}), environment(s.device)),
        }
    )
    record.update(status="running")
    record.pop("error", None)
    run.write_record(record)
    return _fit(trainer, record, t_load=s.load_s)


def _truncate_metrics(run: RunDir, step: int) -> None:
    """Keep only the metrics rows up to ``step`` (-1: none), atomically."""
    from modelkit.io import write_bytes_atomic

    if not run.metrics.is_file():
        return
    import json

    rows = [r for r in run.read_metrics() if int(r.get("step", 0)) <= step]
    body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_bytes_atomic(run.metrics, body.encode())


def _fit(trainer: Trainer, record: dict[str, Any], *, t_load: float) -> dict[str, Any]:
    from modelkit.io import sha256_file
    from modelkit.models.weights import save_weights

    run, cfg = trainer.run, trainer.config
    trainer.emit(
        {
            "kind": "start",
            "total_steps": trainer.total_steps,
            "device": str(trainer.device),
            "run_dir": str(run.path),
            "step": trainer.state.step,
        }
    )
    world = trainer.world
    try:
        status = trainer.fit()
        if status == "complete" and trainer.options.dump_dir is not None:
            trainer.save(trainer.options.dump_dir, keep=10**9)  # the final state, for repro
    except BaseException as exc:
        if world.distributed:
            D.mark_failing()  # a SIGTERM from torchrun must not cut the record short
            if not isinstance(exc, ModelkitError) and D.is_peer_failure(exc):
                exc = D.peer_failure(exc)
        error = str(exc) if isinstance(exc, ModelkitError) else f"{type(exc).__name__}: {exc}"
        if world.main:
            record.update(
                status="failed", error=error, finished=now_iso(), last_good_checkpoint=_last(run)
            )
            run.write_record(record)
        if isinstance(exc, D.PeerFailure):
            raise exc from None
        raise
    st = trainer.state
    if not world.main:
        D.leave(world)
        return {"distributed": world.record(), "rank": world.rank, "status": status}
    if status == "stopped":
        record.update(status="stopped", stopped_at_step=st.step, finished=now_iso())
        run.write_record(record)
        D.leave(world)
        return record
    save_weights(
        trainer.model,
        run.weights,
        metadata={
            "format": "pt",
            "modelkit.model": cfg.model,
            "modelkit.config_sha256": cfg.digest(),
        },
    )
    epochs = [r for r in run.read_metrics() if r.get("kind") == "epoch"]
    last = trainer.last_eval or {
        "accuracy": epochs[-1]["test_accuracy"],
        "loss": epochs[-1]["test_loss"],
    }
    record.update(
        status="complete",
        finished=now_iso(),
        steps=st.step,
        samples_seen=st.samples,
        timings={"data_load_s": round(t_load, 4), "train_s": round(st.train_time, 4)},
        samples_per_second=st.samples / st.train_time if st.train_time else 0.0,
        metrics={
            "test_accuracy": last["accuracy"],
            "test_loss": last["loss"],
            "train_loss": epochs[-1]["train_loss"] if epochs else st.last_train_loss,
        },
        weights_sha256=sha256_file(run.weights),
    )
    run.write_record(record)
    D.leave(world)
    trainer.emit({"kind": "end", "record": record})
    return record


def _last(run: RunDir) -> str | None:
    ckpts = list_checkpoints(run.checkpoints)
    return ckpts[-1].name if ckpts else None


def _check_fit(model: torch.nn.Module, data: Any, config: TrainConfig) -> None:
    """Run one sample through the model so a shape mismatch fails before training starts."""
    try:
        with torch.no_grad():
            out = model.eval()(data.x_train[:2].cpu())
    except Exception as exc:
        raise BadInputError(
            f"model '{config.model}' cannot take data '{config.data}' "
            f"(input shape {list(data.input_shape)}): {str(exc).splitlines()[0]}",
            hint="pick matching --model/--data, or set model_kwargs",
        ) from None
    if out.ndim != 2 or out.shape[1] < data.num_classes:
        raise BadInputError(
            f"model '{config.model}' outputs shape {list(out.shape)}, data has {data.num_classes} classes",
            hint="set num_classes in model_kwargs (or let the factory take num_classes)",
        )
