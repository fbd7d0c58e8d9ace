"""`modelkit train`: train a model into a run directory (the options, then one library call)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelkit.cli import _options as opt
from modelkit.cli import _output as o
from modelkit.cli._options import OutputFormat
from modelkit.tasks import task_of
from modelkit.training.launch import LaunchConfig

if TYPE_CHECKING:
    from modelkit.runs import RunRecord
    from modelkit.training.entry import TrainRequest

EXAMPLES = """
Examples:

\b
  modelkit train                                  # mnist-mlp on the bundled digits (offline)
  modelkit train --data mnist:../shared/data/mnist --out runs/mnist
  modelkit train -m small-cnn -d imagefolder:../shared/data/catsdogs --epochs 15
  modelkit train -c configs/mnist.toml --lr 1e-3  # a config file + overrides
  modelkit train -m my_pkg.models:build --data my_pkg.data:load
  modelkit train --optimizer Adadelta --lr 1.0 --lr-schedule OneCycleLR --max-steps 500
  modelkit train --deterministic --fingerprint-every 10 --out runs/a
  modelkit train --resume runs/a                  # continue a killed run, bitwise
  modelkit train --resume runs/a --fallback-checkpoint   # newest checkpoint is corrupt
  modelkit train --nproc-per-node 2 --device cpu  # 2 processes, DDP over gloo (torchrun)
  modelkit train --nproc-per-node 8 --precision bf16 --compile   # 8 GPUs, DDP over nccl
  modelkit train --nproc-per-node 2 --shard --device cpu   # FSDP2: each rank holds half the state
  modelkit train --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr node0 --master-port 29500
  torchrun --nproc-per-node 2 -m modelkit train --device cpu   # plain torchrun works too
"""
# flag parameter -> TrainConfig key (None: not given, the config file's or the default wins)
CONFIG_FLAGS = {
    k: k
    for k in ("model", "data", "epochs", "batch_size", "lr", "optimizer", "lr_schedule", "loss")
    + ("grad_clip", "max_steps", "keep_best", "image_size", "channels", "seed", "device")
    + ("threads", "deterministic", "fingerprint_every", "precision", "tf32", "channels_last")
    + ("max_shard_size", "shard")
} | {"compile_model": "compile"}
REQUEST_FLAGS = ("out", "resume", "fallback_checkpoint", "overwrite", "download", "data_placement")
# LaunchConfig.requested's arguments, in order
LAUNCH_FLAGS = (
    "nproc_per_node",
    "nnodes",
    "node_rank",
    "master_addr",
    "master_port",
    "rdzv_endpoint",
)


@o.handle_errors
def command(
    config: opt.ConfigOpt = None,
    model: opt.ModelOpt = None,
    data: opt.DataOpt = None,
    epochs: opt.EpochsOpt = None,
    batch_size: opt.BatchSizeOpt = None,
    lr: opt.LrOpt = None,
    optimizer: opt.OptimizerOpt = None,
    lr_schedule: opt.LrScheduleOpt = None,
    loss: opt.LossOpt = None,
    grad_clip: opt.GradClipOpt = None,
    max_steps: opt.MaxStepsOpt = None,
    keep_best: opt.KeepBestOpt = None,
    max_shard_size: opt.MaxShardSizeOpt = None,
    image_size: opt.ImageSizeOpt = None,
    channels: opt.ChannelsOpt = None,
    seed: opt.SeedOpt = None,
    device: opt.DeviceOpt = None,
    threads: opt.ThreadsOpt = None,
    deterministic: opt.DeterministicOpt = None,
    fingerprint_every: opt.FingerprintEveryOpt = None,
    out: opt.OutOpt = None,
    resume: opt.ResumeOpt = None,
    fallback_checkpoint: opt.FallbackOpt = False,
    overwrite: opt.OverwriteOpt = False,
    skip_bad_files: opt.SkipBadOpt = False,
    download: opt.DownloadOpt = False,
    precision: opt.PrecisionOpt = None,
    tf32: opt.Tf32Opt = None,
    channels_last: opt.ChannelsLastOpt = None,
    compile_model: opt.CompileOpt = None,
    data_placement: opt.DataPlacementOpt = "auto",
    nproc_per_node: opt.NprocOpt = None,
    shard: opt.ShardOpt = None,
    nnodes: opt.NnodesOpt = None,
    node_rank: opt.NodeRankOpt = 0,
    master_addr: opt.MasterAddrOpt = "127.0.0.1",
    master_port: opt.MasterPortOpt = None,
    rdzv_endpoint: opt.RdzvEndpointOpt = None,
    fmt: opt.FormatOpt = OutputFormat.text,
    quiet: opt.QuietOpt = False,
) -> None:
    """Train a model and write a run directory (config, run record, metrics, weights)."""
    from modelkit.training.entry import run_training, worker_rank

    request = _request(**locals())
    shown = not quiet and fmt is OutputFormat.text and worker_rank() in (None, 0)
    with o.training_progress(enabled=shown) as on_event:
        result = run_training(request, on_event=on_event)
    if result.record is not None:
        _render(result.record, str(result.out), result.notes(), fmt)


def _request(
    *, fmt: OutputFormat, quiet: bool, config: Any, skip_bad_files: Any, **given: Any
) -> TrainRequest:
    """The library's training request from the verb's flags (``command``'s locals)."""
    from modelkit.training.entry import TrainRequest

    return TrainRequest(
        config_file=config,
        overrides={key: given[flag] for flag, key in CONFIG_FLAGS.items()}
        | {"skip_bad_files": skip_bad_files or None},
        launch=LaunchConfig.requested(*(given[k] for k in LAUNCH_FLAGS)),
        worker_flags=("--format", fmt.value, *(["--quiet"] if quiet else [])),
        **{k: given[k] for k in REQUEST_FLAGS},
    )


def _render(record: RunRecord, out: str, notes: list[str], fmt: OutputFormat) -> None:
    for note in notes:
        o.info(note)
    if fmt is OutputFormat.json:
        o.print_json({"run_dir": out, **record.to_dict()})
        return

    m, task = record.metrics, task_of(record)
    o.success(f"run written to {out}")
    shown = [x for x in task.metrics[:2] if f"test_{x.key}" in m]  # the primary, then loss
    unit = task.unit
    speed = record.tokens_per_second if unit == "tokens" else None
    speed = record.samples_per_second or 0.0 if speed is None else speed
    head = ["model", "data", *(f"held-out {x.key}" for x in shown), f"{unit}/s", "train time"]
    row = [record.model, record.data.spec, *(f"{m[f'test_{x.key}']:.4f}" for x in shown)]
    o.table(None, head, [[*row, f"{speed:,.0f}", f"{record.train_s:.1f}s"]])
    if skipped := record.data.skipped_files:
        o.info(f"skipped {skipped} undecodable file(s) (listed in run.json)")
    o.info(f"next: modelkit eval {out}")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
