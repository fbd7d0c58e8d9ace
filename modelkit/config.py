"""Run configuration: frozen dataclasses, loaded from TOML/YAML + CLI overrides.

The resolved :class:`TrainConfig` is saved verbatim (sorted keys) in the run directory,
the checkpoint and the model card: one source of truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from modelkit.data.augment import Augment, normalize_spec
from modelkit.errors import ConfigError, InvalidArgument, did_you_mean
from modelkit.models.registry import builtin_models
from modelkit.readers import loads_json, loads_toml, loads_yaml
from modelkit.tasks import metric_directions
from modelkit.validation import Ge, Le, validate_fields
from modelkit.weights.save import parse_shard_size

if sys.version_info >= (3, 11):
    import tomllib  # noqa: F401 (re-exported: modelkit.config.tomllib)
else:  # pragma: no cover
    import tomli as tomllib  # noqa: F401

OPTIMIZERS = ("adam", "adamw", "sgd")  # the short names; any torch.optim class works
LR_SCHEDULES = ("none", "cosine", "step")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
# the data order seeds torch.Generator with seed * 1_000_003 + epoch, which must fit 64 bits
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run."""

    model: str = "mnist-mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    # a torch.optim name ("adam", "Adadelta", ...) or a table {name = "...", **kwargs}
    optimizer: str | dict[str, Any] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: Annotated[int, Ge(0), Le(SEED_MAX)] = 0
    device: str = "auto"
    threads: int = 0  # 0: keep torch's default
    deterministic: bool = False
    skip_bad_files: bool = False
    eval_batch_size: Annotated[int, Ge(1)] = 1024
    checkpoint_every: int = 0  # steps; 0 = once per epoch
    keep_checkpoints: int = 2
    log_every: int = 10  # steps between metrics.jsonl step records
    # none | cosine (to 0 over the run) | step (x0.5 each epoch) | a torch.optim.lr_scheduler
    # name or table {name = "StepLR", step_size = 1, gamma = 0.7, interval = "epoch" | "step"}
    lr_schedule: str | dict[str, Any] = "none"
    fingerprint_every: int = 25  # steps between state fingerprints (0 = off); <=3% overhead
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only)
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA (faster, ~1e-3 relative error)
    channels_last: bool = True  # channels_last memory format for conv nets on CUDA
    compile: bool = False  # torch.compile the model
    # cross_entropy | nll | package.module:function, or a table {name = ..., label_smoothing = 0.1}
    loss: str | dict[str, Any] = "cross_entropy"
    grad_clip: float = 0.0  # max global L2 norm of the gradients (0 = no clipping)
    max_steps: int = 0  # stop after this many optimizer steps (0 = run every epoch)
    # test_<metric> of the task (test_accuracy, test_loss, test_perplexity): keep the best
    # epoch's weights (best.safetensors), judged in the metric's direction
    keep_best: str = ""
    image_size: int = 0  # image folders: resize to this side (0 = the data's default, 28)
    channels: int = 0  # image folders: 1 (grayscale) or 3 (RGB); 0 = the data's default (3)
    normalize: dict[str, float | list[float]] = field(default_factory=dict)  # {mean, std}
    context_length: Annotated[int, Ge(0)] = 0  # text: tokens per window (0 = the model's)
    augment: dict[str, Any] = field(default_factory=dict)  # {random_crop, horizontal_flip, ...}
    # the final weights: shards above this size ("5GB": the Hub's default; or bytes, "200MB")
    max_shard_size: str = "5GB"
    # shard parameters, gradients and optimizer state across the torchrun processes (FSDP2,
    # torch.distributed.fsdp.fully_shard) instead of replicating them (DDP); see docs/distributed.md
    shard: bool = False

    def __post_init__(self) -> None:
        # types and Annotated ranges of every field (a value built in Python, not read)
        validate_fields(type(self), self.__dict__, source="config")
        _check(self.epochs >= 1, "epochs must be >= 1", "pass e.g. --epochs 5")
        _check(self.batch_size >= 1, "batch-size must be >= 1", "pass e.g. --batch-size 128")
        _check(self.lr > 0, "lr must be > 0", "pass e.g. --lr 1e-3")
        _check(
            self.device in DEVICES or self.device.startswith("cuda:"),
            f"unknown device '{self.device}' (valid: auto, cpu, cuda, cuda:N)",
            "pass --device cpu",
        )
        _check(self.threads >= 0, "threads must be >= 0", "pass --threads 2 (0 = torch default)")
        _check(self.keep_checkpoints >= 1, "keep-checkpoints must be >= 1", "use 2")
        _check(self.checkpoint_every >= 0, "checkpoint-every must be >= 0", "0 = once per epoch")
        _check(self.fingerprint_every >= 0, "fingerprint-every must be >= 0", "0 = off, e.g. 10")
        _check(self.log_every >= 1, "log-every must be >= 1", "use 10")
        _check(
            self.precision in PRECISIONS,
            f"unknown precision '{self.precision}' (valid: {', '.join(PRECISIONS)})",
            "pass --precision fp32 (or bf16 | fp16)",
        )
        _check(self.max_steps >= 0, "max-steps must be >= 0", "0 = every epoch, e.g. 500")
        _check(self.grad_clip >= 0, "grad-clip must be >= 0", "0 = off, e.g. 1.0")
        valid = keep_best_metrics()
        _check(
            not self.keep_best or self.keep_best in valid,
            f"unknown keep_best metric '{self.keep_best}'"
            f"{did_you_mean(self.keep_best, valid)} (valid: {', '.join(valid)})",
            'keep_best = "test_accuracy" (or leave it out)',
        )
        _check(self.image_size >= 0, "image-size must be >= 0", "0 = the data's default, e.g. 32")
        _check(self.channels in (0, 1, 3), "channels must be 1 or 3", "0 = the data's default")
        _check(
            _is_size(self.max_shard_size),
            f"max-shard-size must be a size like '5GB' or '200MB', got '{self.max_shard_size}'",
            "pass --max-shard-size 5GB (the Hub's default)",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, so equal configs give equal bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    def digest(self) -> str:
        """sha256 of the canonical JSON (short form used in file metadata)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a suggestion."""
        validate_train_mapping(data, source=source)  # keys, types and ranges, naming the file
        try:
            return cls(**data)
        except ConfigError as exc:  # a range check in __post_init__: name the file
            raise exc.with_context(f"{source}: ") from None


def validate_train_mapping(data: dict[str, Any], *, source: str) -> None:
    """Check a mapping of :class:`TrainConfig` keys: unknown keys (with a suggestion), then the
    type and range of every value from the field annotations (:mod:`modelkit.validation`)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"{source}: unknown key '{key}'{did_you_mean(key, names)}",
            hint=f"valid keys: {', '.join(sorted(names))}",
        )
    validate_fields(TrainConfig, data, source=source)


def _is_size(value: str) -> bool:
    """A shard size huggingface_hub reads (``"5GB"``, ``"200MB"``, ``"10KB"``, a byte count)."""
    try:
        parse_shard_size(value)
    except InvalidArgument:
        return False
    return True


def _check(ok: bool, message: str, hint: str) -> None:
    if not ok:
        raise ConfigError(message, hint=hint)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict (keys may use dashes or underscores)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass an existing .toml or .yaml")
    text = read_text_file(path, what="config file")
    try:
        if path.suffix == ".toml":
            data = loads_toml(text, source=str(path), error=ConfigError)
        elif path.suffix in (".yaml", ".yml"):
            data = loads_yaml(text, source=str(path), error=ConfigError) or {}
        elif path.suffix == ".json":
            data = loads_json(text, source=str(path), error=ConfigError)
        else:
            raise ConfigError(
                f"unsupported config format '{path.suffix}': {path}",
                hint="use .toml, .yaml/.yml or .json",
            )
    except ConfigError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse {path}: {first}", hint="fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table/mapping", hint="use key = value")
    # a config may nest the training keys under [train]
    if "train" in data and isinstance(data["train"], dict):
        data = {**{k: v for k, v in data.items() if k != "train"}, **data["train"]}
    return normalise_keys(data)


def read_text_file(path: Path, *, what: str) -> str:
    """A user-given text file as UTF-8, with one clear line when it cannot be read or decoded."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror or exc}",
            hint="check the path and its permissions",
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line})",
            hint="save the file as UTF-8",
        ) from None


def keep_best_metrics() -> list[str]:
    """``test_<metric>`` of every task's metrics (the run's task checks its own at setup)."""

    names = {f"test_{m}" for table in metric_directions().values() for m in table}
    return sorted(names)


def normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Map ``batch-size`` style keys to ``batch_size``."""
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_config(
    *,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    project: Any = None,
) -> TrainConfig:
    """Defaults < the model's registered defaults < ``[tool.modelkit.defaults]`` < config file
    < CLI overrides."""
    merged: dict[str, Any] = {}
    if project is not None:
        merged.update(normalise_keys(project.defaults))
    if config_file is not None:
        merged.update(read_config_file(config_file))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged.update(given)
    model = merged.get("model", TrainConfig.model)
    merged = {**model_defaults(str(model), project=project), **merged}
    table = merged.get("optimizer")
    if isinstance(table, dict):  # --lr/--weight-decay/--momentum win over the table's keys
        merged["optimizer"] = {
            **table,
            **{
                k: given[k] for k in ("lr", "weight_decay", "momentum") if k in given and k in table
            },
        }
    config = TrainConfig.from_dict(merged, source=str(config_file or "config"))
    recipe(config)  # unknown optimizer/schedule/loss names and arguments fail here, exit 2
    return config


def recipe(config: TrainConfig) -> dict[str, Any]:
    """The normalised recipe tables the loop builds from (recorded in run.json as ``recipe``).

    Raises :class:`ConfigError` for unknown names or arguments (imports torch).
    """
    from modelkit.training.losses import loss_spec
    from modelkit.training.optim import optimizer_spec, schedule_spec

    augment = Augment.from_spec(config.augment)
    return {
        "optimizer": optimizer_spec(
            config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
        ),
        "lr_schedule": schedule_spec(config.lr_schedule),
        "loss": loss_spec(config.loss),
        "augment": dataclasses.asdict(augment) if augment else None,
        "normalize": normalize_spec(config.normalize) if config.normalize else None,
    }


def model_defaults(model: str, *, project: Any = None) -> dict[str, Any]:
    """The recommended hyperparameters a registered model declares (empty for others)."""
    if ":" in model or model in (getattr(project, "models", None) or {}):
        return {}

    entry = builtin_models().get(model)
    return dict(entry.defaults or {}) if entry else {}
