"""`modelkit train`: train a model into a run directory."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import (
    DataOpt,
    DeviceOpt,
    FormatOpt,
    ModelOpt,
    NumberOpt,
    OutputFormat,
    QuietOpt,
    SkipBadOpt,
)
from modelkit.errors import ModelkitError

EXAMPLES = """
Examples:

  modelkit train                                  # mnist-mlp on the bundled digits (offline)

  modelkit train --data mnist:../shared/data/mnist --out runs/mnist

  modelkit train -m small-cnn -d imagefolder:../shared/data/catsdogs --epochs 15

  modelkit train -c configs/mnist.toml --lr 1e-3  # a config file + overrides

  modelkit train -m my_pkg.models:build --data my_pkg.data:load

  modelkit train --deterministic --fingerprint-every 10 --out runs/a

  modelkit train --resume runs/a                  # continue a killed run, bitwise

  modelkit train --resume runs/a --fallback-checkpoint   # newest checkpoint is corrupt

  modelkit train --nproc-per-node 2 --device cpu  # 2 processes, DDP over gloo (torchrun)

  modelkit train --nproc-per-node 8 --precision bf16 --compile   # 8 GPUs, DDP over nccl

  modelkit train --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr node0 --master-port 29500

  torchrun --nproc-per-node 2 -m modelkit train --device cpu   # plain torchrun works too
"""

LAUNCH = "Launch (torchrun)"
SPEED = "Precision and speed"


def _worker_rank() -> int | None:
    """This process's rank under torchrun with more than one process (None otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


def _ranked(fn):  # noqa: ANN001, ANN202
    """Under torchrun, every error line says which rank it comes from."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ModelkitError as exc:
            rank = _worker_rank()
            if rank is not None and not exc.message.startswith("rank "):
                exc.message = f"[rank {rank}] {exc.message}"
            raise
        except Exception as exc:
            rank = _worker_rank()
            if rank is None or o.debug():
                raise
            first = (str(exc).splitlines() or [""])[0]
            raise ModelkitError(
                f"[rank {rank}] {type(exc).__name__}: {first}",
                hint="re-run with MODELKIT_DEBUG=1 for the traceback",
            ) from None

    return wrapper


@o.handle_errors
@_ranked
def command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML or YAML config file.")
    ] = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    epochs: Annotated[int | None, NumberOpt(help="Passes over the training split.", ge=1)] = None,
    batch_size: Annotated[int | None, NumberOpt(help="Samples per step.", ge=1)] = None,
    lr: Annotated[float | None, NumberOpt(help="Learning rate.", gt=0)] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam | adamw | sgd.")] = None,
    seed: Annotated[int | None, NumberOpt(help="Random seed.", ge=0, le=2**32 - 1)] = None,
    device: DeviceOpt = None,
    threads: Annotated[int | None, NumberOpt(help="CPU threads (0 = torch default).", ge=0)] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms."),
    ] = None,
    fingerprint_every: Annotated[
        int | None,
        NumberOpt(help="Steps between state fingerprints in metrics.jsonl (0 = off).", ge=0),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the killed run in RUN_DIR from its newest good checkpoint.",
            metavar="RUN_DIR",
        ),
    ] = None,
    fallback_checkpoint: Annotated[
        bool,
        typer.Option(help="With --resume: if the newest checkpoint is corrupt, use the previous."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing non-empty --out run.")
    ] = False,
    skip_bad_files: SkipBadOpt = False,
    download: Annotated[
        bool, typer.Option(help="Download MNIST with torchvision (needs network).")
    ] = False,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32 | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only).",
            rich_help_panel=SPEED,
        ),
    ] = None,
    tf32: Annotated[
        bool | None,
        typer.Option(
            "--tf32/--no-tf32", help="TF32 matmuls on CUDA (default off).", rich_help_panel=SPEED
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="channels_last for conv nets on CUDA (default on).",
            rich_help_panel=SPEED,
        ),
    ] = None,
    compile_model: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile", help="torch.compile the model.", rich_help_panel=SPEED
        ),
    ] = None,
    data_placement: Annotated[
        str,
        typer.Option(
            help="auto | device | host (pinned host batches, non-blocking copies; CUDA).",
            rich_help_panel=SPEED,
        ),
    ] = "auto",
    nproc_per_node: Annotated[
        int | None,
        NumberOpt(
            help="Processes on this node (one per GPU, or CPU cores); >1 runs torchrun + DDP.",
            ge=1,
            rich_help_panel=LAUNCH,
        ),
    ] = None,
    nnodes: Annotated[
        int | None, NumberOpt(help="Number of nodes.", ge=1, rich_help_panel=LAUNCH)
    ] = None,
    node_rank: Annotated[
        int, NumberOpt(help="This node's rank (0..nnodes-1).", ge=0, rich_help_panel=LAUNCH)
    ] = 0,
    master_addr: Annotated[
        str, typer.Option(help="Rank 0's host (static rendezvous).", rich_help_panel=LAUNCH)
    ] = "127.0.0.1",
    master_port: Annotated[
        int | None,
        NumberOpt(
            help="Rank 0's port (default: a free one, single node).",
            ge=1,
            le=65535,
            rich_help_panel=LAUNCH,
        ),
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of a c10d rendezvous (elastic, multi-node) instead of master-addr/port.",
            rich_help_panel=LAUNCH,
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and write a run directory (config, run record, metrics, weights)."""
    import dataclasses
    import time

    from modelkit.config import resolve_config
    from modelkit.errors import BadInputError
    from modelkit.project import load_project
    from modelkit.training import distributed as dist
    from modelkit.training.loop import RunOptions, train
    from modelkit.training.loop import resume as resume_run

    project = load_project()
    options = dataclasses.replace(RunOptions.from_env(), data_placement=data_placement)
    launch = dist.LaunchConfig(
        nproc_per_node=nproc_per_node or 1,
        nnodes=nnodes or 1,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        rdzv_endpoint=rdzv_endpoint,
    )
    launching = nproc_per_node is not None or nnodes is not None or rdzv_endpoint is not None
    if launching and dist.in_worker():
        raise BadInputError(
            "already running under torchrun; --nproc-per-node/--nnodes are torchrun's flags here",
            hint="drop them, or use `modelkit train --nproc-per-node N` without torchrun",
        )
    rank = dist.env_world()[0]
    if rank != 0:
        quiet = True  # only rank 0 reports
    if fallback_checkpoint and resume is None:
        raise BadInputError(
            "--fallback-checkpoint only applies with --resume",
            hint="modelkit train --resume RUN_DIR --fallback-checkpoint",
        )
    overrides = dict(
        model=model,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        device=device,
        threads=threads,
        deterministic=deterministic,
        fingerprint_every=fingerprint_every,
        skip_bad_files=skip_bad_files or None,
        precision=precision,
        tf32=tf32,
        channels_last=channels_last,
        compile=compile_model,
    )
    worker_flags = ["--format", fmt.value] + (["--quiet"] if quiet else [])
    if data_placement != "auto":
        worker_flags += ["--data-placement", data_placement]
    if resume is not None:
        flags = {
            **overrides,
            "config": config,
            "out": out,
            "overwrite": overwrite or None,
            "download": download or None,
        }
        given = [name for name, value in flags.items() if value is not None]
        if given:
            raise BadInputError(
                f"--resume takes the run's own config; --{given[0].replace('_', '-')} "
                "cannot be combined with it",
                hint=f"modelkit train --resume {resume}",
            )
        if launch.distributed:
            dist.launch_resume(
                resume, launch, fallback=fallback_checkpoint, worker_flags=worker_flags
            )
            return
        with o.training_progress(enabled=not quiet and fmt is OutputFormat.text) as on_event:
            record = resume_run(
                resume,
                project=project,
                fallback=fallback_checkpoint,
                on_event=on_event,
                options=options,
            )
        if rank != 0:
            return
        out = resume
        if record.get("already_complete"):
            o.info(f"{resume} is already complete; nothing to resume")
        else:
            last = record["resumes"][-1]
            for bad in last["rejected_checkpoints"]:
                o.info(f"skipped corrupt checkpoint {bad['checkpoint']}: {bad['reason']}")
            o.info(
                f"resumed from step {last['from_step']} ({last['checkpoint'] or 'no checkpoint yet'})"
            )
        _render(record, out, fmt)
        return
    cfg = resolve_config(config_file=config, overrides=overrides, project=project)
    out = (
        out
        or Path("runs")
        / f"{cfg.model.replace(':', '-').replace('.', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if launch.distributed:
        if download:
            raise BadInputError(
                "--download cannot be combined with --nproc-per-node (every rank would download)",
                hint="download once with a single-process `modelkit train --download --epochs 1`",
            )
        dist.launch_train(cfg, out, launch, overwrite=overwrite, worker_flags=worker_flags)
        return
    with o.training_progress(enabled=not quiet and fmt is OutputFormat.text) as on_event:
        record = train(
            cfg,
            out=out,
            project=project,
            overwrite=overwrite,
            download=download,
            on_event=on_event,
            options=options,
        )
    if rank != 0:
        return
    _render(record, out, fmt)


def _render(record: dict, out: Path, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        o.print_json({"run_dir": str(out), **record})
        return
    m = record["metrics"]
    o.success(f"run written to {out}")
    o.table(
        None,
        ["model", "data", "held-out accuracy", "loss", "samples/s", "train time"],
        [
            [
                record["model"],
                record["data"]["spec"],
                f"{m['test_accuracy']:.4f}",
                f"{m['test_loss']:.4f}",
                f"{record['samples_per_second']:,.0f}",
                f"{record['timings']['train_s']:.1f}s",
            ]
        ],
    )
    skipped = record["data"].get("skipped_files")
    if skipped:
        o.info(f"skipped {skipped} undecodable file(s) (listed in run.json)")
    o.info(f"next: modelkit eval {out}")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
