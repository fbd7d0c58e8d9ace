"""Everything a run needs before its first step, in the order it is built.

:func:`setup` joins the process group (under torchrun), then: determinism (seeds, threads),
data, model (its init consumes the seeded RNG), optimizer + LR schedule + grad scaler + loss +
augmentation. The result is one :class:`Setup`; the loop (:mod:`modelkit.training.trainer`)
takes it as it is. Under DDP a failure on any rank stops every rank here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from modelkit.config import TrainConfig, recipe
from modelkit.data import load_dataset
from modelkit.data.augment import build_augment
from modelkit.errors import BadInputError, DataError
from modelkit.models.registry import build_model, resolve_model
from modelkit.runs.perturb import parse_perturb
from modelkit.runs.rng import configure_determinism, seed_all
from modelkit.tasks import get_task
from modelkit.training import accel, meta_init, sharding
from modelkit.training import distributed as D
from modelkit.training.options import RunOptions


@dataclass
class Setup:
    """One run's live objects, built by :func:`setup`."""

    config: TrainConfig  # resolved: model_kwargs filled in
    device: torch.device
    data: Any
    model: torch.nn.Module
    determinism: dict[str, Any]
    load_s: float
    world: D.World = D.SINGLE
    placement: str = "device"  # device | host (pinned host batches)
    mf: torch.memory_format = torch.contiguous_format
    accel: dict[str, Any] = field(default_factory=dict)  # run.json["accel"]
    fsdp_units: int | None = None  # how many modules FSDP2 sharded (a sharded run)
    fsdp_init: dict[str, Any] = field(default_factory=dict)  # {"init": "meta" | "full", ...}
    task: Any = None  # modelkit.tasks.Task: the loss, the held-out metrics
    optimizer: Any = None
    schedule: Any = None  # modelkit.training.optim.Schedule | None
    scaler: Any = None  # a GradScaler, enabled for fp16 only
    loss_fn: Any = None
    augment: Any = None
    meta: Any = None  # modelkit.training.meta_init.MetaPlan: a meta-built sharded model

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the training split (the last batch may be short)."""
        return math.ceil(len(self.data.x_train) / self.config.batch_size)


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


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` after model init (rank 0 keeps ``seed``: a single run's RNG)."""
    return seed if rank == 0 else seed * 1_000_003 + 7_919 * rank


def setup(config: TrainConfig, *, project: Any, download: bool, options: RunOptions) -> Setup:
    """Build a run's :class:`Setup` (collective under torchrun: every rank or none)."""
    _, size, local_rank = D.env_world()
    device = resolve_device(config.device, local_rank=local_rank if size > 1 else None)
    world = D.join(device.type)
    error: BaseException | None = None
    try:
        sharding.check_config(config, world_size=world.size, options=options)
        s = _setup_data_and_model(config, project, download, options, device)
        s.world = world
        if config.shard:  # every rank builds the same model (same seed); each keeps its part
            s.world = replace(world, sharded=True)
            s.fsdp_units = sharding.shard_model(s.model, world, device)
            s.accel["fsdp_units"] = s.fsdp_units
            if s.meta is not None:  # its init draws from the seeded RNG here, as a build would
                meta_init.materialize(s.model, s.meta, world, device)
        if world.rank > 0:  # different dropout masks per rank; rank 0 stays a single run's
            seed_all(rank_seed(config.seed, world.rank))
            s.determinism["rank_seed"] = rank_seed(config.seed, world.rank)
        _setup_optimizer(s)
    except Exception as exc:
        error = exc
    D.agree(world, error)
    return s


def _setup_data_and_model(
    config: TrainConfig,
    project: Any,
    download: bool,
    options: RunOptions,
    device: torch.device,
) -> Setup:

    # determinism first: the model's init below consumes the seeded RNG
    accel.check_precision(config.precision, device)
    tf32 = accel.set_tf32(config.tf32)
    determinism = configure_determinism(
        seed=config.seed,
        threads=options.threads or config.threads,
        deterministic=config.deterministic or options.force_deterministic,
    )
    data, task, placement, t_load = _load_data(config, project, download, options, device)
    # model: its kwargs resolved against the data (classes, channels, image size)
    model, model_kwargs, meta, init = _build(config, project, data, task, device)
    config = config.replace(model_kwargs=model_kwargs)  # the resolved config is what we save
    mf = accel.memory_format(model, device, enabled=config.channels_last)
    if meta is None:
        check_fit(model, data, config, task)
        model.to(device)
        if mf is not torch.contiguous_format:
            model.to(memory_format=mf)
    model.train()
    if options.perturb:
        parse_perturb(options.perturb, model)  # fail before anything is written
    scaler = accel.grad_scaler(config.precision, device)
    record = accel.accel_record(
        precision=config.precision,
        device=device,
        scaler=scaler,
        tf32=tf32,
        compiled=config.compile,
        mf=mf,
        placement=placement,
    )
    s = Setup(config, device, data, model, determinism, t_load, D.SINGLE, placement, mf, record)
    s.scaler, s.task, s.meta = scaler, task, meta
    if init:
        s.fsdp_init = s.accel["fsdp_init"] = init
    return s


def _build(
    config: TrainConfig, project: Any, data: Any, task: Any, device: torch.device
) -> tuple[torch.nn.Module, dict[str, Any], Any, dict[str, str]]:
    """``(model, resolved kwargs, meta plan, init note)``: a sharded run's model on the meta
    device when its initialisation replays exactly (:mod:`modelkit.training.meta_init`),
    else (and for any other run) the whole model built here."""

    def build() -> tuple[torch.nn.Module, dict[str, Any]]:
        hints = data.model_hints()
        return build_model(
            config.model, project=project, kwargs=config.model_kwargs, data_hints=hints
        )

    def check(model: torch.nn.Module) -> None:
        if (
            accel.memory_format(model, device, enabled=config.channels_last)
            is not torch.contiguous_format
        ):
            raise BadInputError("channels_last is applied to a whole model")
        check_fit(model, data, config, task, device=torch.device("meta"))

    if not config.shard:
        return (*build(), None, {})
    resolve_model(config.model, project=project)  # its module imported here, not on meta
    built, plan, why = meta_init.meta_build(build, check)
    if plan is not None:
        return (*built, plan, {"init": "meta"})
    return (*build(), None, {"init": "full", "init_note": str(why)})


def _load_data(
    config: TrainConfig, project: Any, download: bool, options: RunOptions, device: torch.device
) -> tuple[Any, Any, str, float]:
    """The data, its task, where it lives (on the device when it fits, else pinned host
    batches) and the seconds loading took."""
    t_load = time.perf_counter()
    data = load_dataset(
        config.data,
        project=project,
        skip_bad_files=config.skip_bad_files,
        download=download,
        image_size=config.image_size,
        channels=config.channels,
        normalize=config.normalize,
        context_length=config.context_length or int(config.model_kwargs.get("context_length", 0)),
    )
    task = run_task(config, data, project=project)
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
    return data, task, placement, t_load


def _setup_optimizer(s: Setup) -> None:
    """Optimizer, LR schedule, loss and augmentation from the config's recipe tables."""
    from modelkit.training.dryrun import dry_build
    from modelkit.training.losses import build_loss
    from modelkit.training.optim import build_optimizer, build_scheduler

    tables = recipe(s.config)
    s.optimizer = build_optimizer(tables["optimizer"], s.model.parameters())
    s.schedule = build_scheduler(
        tables["lr_schedule"],
        s.optimizer,
        steps_per_epoch=s.steps_per_epoch,
        epochs=s.config.epochs,
        max_steps=s.config.max_steps,
    )
    s.loss_fn = build_loss(s.config.loss)
    s.augment = build_augment(s.config.augment)
    dry_build(s, tables)  # every table exercised once, before the first step


def run_task(config: TrainConfig, data: Any, *, project: Any) -> Any:
    """The run's task: the data's (token windows: language modelling), which a registered
    model's declared task must match; ``keep_best`` must name one of its metrics."""

    task = get_task(getattr(data, "task", None))
    declared = resolve_model(config.model, project=project).task
    if declared and declared != task.name:
        raise BadInputError(
            f"model '{config.model}' is a {declared} model; data '{config.data}' is "
            f"{task.name} data",
            hint="pick data for the model's task (see `modelkit models`)",
        )
    if config.keep_best:
        task.metric(config.keep_best)  # an UnknownName listing the task's metrics
    return task


def check_fit(
    model: torch.nn.Module, data: Any, config: TrainConfig, task: Any, device: Any = None
) -> None:
    """Run two samples through the model so a shape mismatch fails before training starts
    (``device``: where the model is, the CPU by default; ``meta`` checks shapes only)."""
    x, y = data.x_train[:2].cpu(), data.y_train[:2].cpu()
    try:
        with torch.no_grad():
            out = task.forward(model.eval(), x.to(device or "cpu"), y.to(device or "cpu"))
    except Exception as exc:
        raise BadInputError(
            f"model '{config.model}' cannot take data '{config.data}' "
            f"(input shape {list(data.input_shape)}): {str(exc).splitlines()[0]}",
            hint="pick matching --model/--data, or set model_kwargs",
        ) from None
    problem = task.check_fit(out, y, data)
    if problem is not None:
        raise BadInputError(
            f"model '{config.model}' does not fit data '{config.data}': {problem}",
            hint="set model_kwargs to match the data (or let the factory take them from it)",
        )
