"""The training loop: data as tensors on the device, batched by index, no DataLoader.

``train(config, out=...)`` writes a complete run directory (see modelkit.runs) and returns
the run record. It never prints: progress goes to the optional ``on_event`` callback.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modelkit.config import TrainConfig
from modelkit.errors import BadInputError, TrainingError
from modelkit.runs import RUN_RECORD_VERSION, RunDir, now_iso, prepare_run_dir
from modelkit.training.checkpoint import list_checkpoints, save_checkpoint
from modelkit.training.evaluate import evaluate

Event = dict[str, Any]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; refuse cuda when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(
            "--device cuda asked for, but no CUDA device is available",
            hint="use --device cpu (or auto)",
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_permutation(n: int, *, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Data order for one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` (a registry, not an if-chain)."""
    factories: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        ),
    }
    return factories[config.optimizer]()


def train(
    config: TrainConfig,
    *,
    out: Path | str,
    project: Any = None,
    overwrite: bool = False,
    download: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into the run directory ``out``; returns the run record."""
    from modelkit.data import load_dataset
    from modelkit.env import environment
    from modelkit.gitinfo import git_info
    from modelkit.io import sha256_file
    from modelkit.models.registry import build_model
    from modelkit.models.weights import model_config, save_weights

    emit = on_event or (lambda _e: None)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    seed_everything(config.seed)

    t_load = time.perf_counter()
    data = load_dataset(
        config.data, project=project, skip_bad_files=config.skip_bad_files, download=download
    ).to(device)
    t_load = time.perf_counter() - t_load
    model, model_kwargs = build_model(
        config.model, project=project, kwargs=config.model_kwargs, data_hints=data.model_hints()
    )
    config = config.replace(model_kwargs=model_kwargs)  # the resolved config is what we save
    _check_fit(model, data, config)
    model.to(device).train()
    optimizer = make_optimizer(config, model.parameters())

    run = prepare_run_dir(out, overwrite=overwrite)
    config_json = model_config(config.model, model_kwargs, config.to_dict())
    from modelkit.io import write_json_atomic

    write_json_atomic(run.config, config_json)
    record: dict[str, Any] = {
        "version": RUN_RECORD_VERSION,
        "status": "running",
        "started": now_iso(),
        "model": config.model,
        "seed": config.seed,
        "config_sha256": config.digest(),
        "git": git_info(getattr(project, "root", None) or Path.cwd()),
        "env": environment(device),
        "data": data.summary(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    run.write_record(record)

    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    emit(
        {
            "kind": "start",
            "total_steps": total_steps,
            "device": str(device),
            "run_dir": str(run.path),
        }
    )
    step, samples, train_time = 0, 0, 0.0
    history: list[dict[str, Any]] = []
    last_eval: dict[str, Any] = {}
    try:
        for epoch in range(config.epochs):
            perm = epoch_permutation(n, seed=config.seed, epoch=epoch, device=device)
            loss_sum = torch.zeros((), device=device)
            since_log, rows = 0, []
            t0 = time.perf_counter()
            for b in range(steps_per_epoch):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
                xb, yb = data.x_train[idx], data.y_train[idx]
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                samples += len(idx)
                loss_sum += loss.detach()
                since_log += 1
                if since_log == config.log_every or b == steps_per_epoch - 1:
                    mean_loss = float(loss_sum) / since_log  # one sync per log interval
                    if not math.isfinite(mean_loss):
                        raise TrainingError(
                            f"loss became {mean_loss} at step {step} (epoch {epoch + 1})",
                            hint="lower --lr or check the data; the last good checkpoint is kept",
                        )
                    elapsed = train_time + time.perf_counter() - t0
                    rows.append(
                        {"kind": "step", "step": step, "epoch": epoch + 1, "loss": mean_loss}
                    )
                    emit(
                        {
                            "kind": "step",
                            "step": step,
                            "epoch": epoch + 1,
                            "loss": mean_loss,
                            "samples_per_second": samples / elapsed if elapsed else 0.0,
                        }
                    )
                    loss_sum.zero_()
                    since_log = 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t0
            last_eval = evaluate(
                model,
                data.x_test,
                data.y_test,
                num_classes=data.num_classes,
                batch_size=config.eval_batch_size,
                classes=data.classes,
            )
            epoch_row = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": step,
                "train_loss": rows[-1]["loss"],
                "test_loss": last_eval["loss"],
                "test_accuracy": last_eval["accuracy"],
                "elapsed_s": round(train_time, 4),
            }
            history.append(epoch_row)
            run.append_metrics([*rows, epoch_row])
            save_checkpoint(
                run.checkpoints,
                step=step,
                model=model,
                optimizer=optimizer,
                state={"epoch": epoch + 1, "batch": 0, "step": step, "samples": samples},
                extra_tensors={"rng.torch": torch.get_rng_state()},
                keep=config.keep_checkpoints,
            )
            emit({"kind": "epoch", **epoch_row})
    except TrainingError as exc:
        record.update(
            status="failed", error=str(exc), finished=now_iso(), last_good_checkpoint=_last(run)
        )
        run.write_record(record)
        raise
    except BaseException as exc:
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            finished=now_iso(),
            last_good_checkpoint=_last(run),
        )
        run.write_record(record)
        raise

    save_weights(
        model,
        run.weights,
        metadata={
            "format": "pt",
            "modelkit.model": config.model,
            "modelkit.config_sha256": config.digest(),
        },
    )
    record.update(
        status="complete",
        finished=now_iso(),
        steps=step,
        samples_seen=samples,
        timings={"data_load_s": round(t_load, 4), "train_s": round(train_time, 4)},
        samples_per_second=samples / train_time if train_time else 0.0,
        metrics={
            "test_accuracy": last_eval["accuracy"],
            "test_loss": last_eval["loss"],
            "train_loss": history[-1]["train_loss"],
        },
        weights_sha256=sha256_file(run.weights),
    )
    run.write_record(record)
    emit({"kind": "end", "record": record})
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
