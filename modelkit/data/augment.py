"""Deterministic image augmentation on batched tensors, and per-channel normalisation.

Config::

    augment = {random_crop = 4, horizontal_flip = true}   # pad 4 px, crop back; flip p=0.5
    normalize = {mean = [0.4914, 0.4822, 0.4465], std = [0.247, 0.243, 0.261]}

Augmentation runs on the training device, per batch, after the batch is gathered: every
sample gets its own crop offset and flip, drawn from a generator seeded from
``(seed, epoch, batch)`` alone. So a batch's augmentation does not depend on what ran before
it (a resumed run and a repro draw the same), does not touch the global RNG (dropout and data
order stay as they were), and costs two small gathers. Padding uses
``torchvision.transforms.v2.functional.pad`` (``padding_mode`` constant 0, edge, reflect or
symmetric); normalisation is applied to the dataset once, before training, so a constant
pad is the normalised value 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelkit.errors import ConfigError, did_you_mean

KEYS = ("random_crop", "horizontal_flip", "vertical_flip", "padding_mode")
PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


@dataclass(frozen=True)
class Augment:
    """A checked augmentation recipe (see the module docstring); call it on a batch."""

    random_crop: int = 0  # pixels of padding each side before cropping back to size; 0 = off
    horizontal_flip: float = 0.0  # probability
    vertical_flip: float = 0.0
    padding_mode: str = "constant"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Augment | None:
        """Check an ``augment`` table; ``None`` when it asks for nothing."""
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"augment must be a table, got {spec!r}",
                hint="e.g. augment = {random_crop = 4, horizontal_flip = true}",
            )
        table = {str(k).replace("-", "_"): v for k, v in spec.items()}
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ConfigError(
                f"augment: unknown key '{unknown[0]}'{did_you_mean(unknown[0], KEYS)}",
                hint=f"valid keys: {', '.join(KEYS)}",
            )
        crop = table.get("random_crop", 0)
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
            raise ConfigError(
                f"augment.random_crop must be an integer >= 0 (pixels of padding), got {crop!r}",
                hint="e.g. random_crop = 4",
            )
        probs = {
            k: _probability(k, table.get(k, 0.0)) for k in ("horizontal_flip", "vertical_flip")
        }
        mode = table.get("padding_mode", "constant")
        if mode not in PADDING_MODES:
            raise ConfigError(
                f"augment.padding_mode '{mode}'{did_you_mean(str(mode), PADDING_MODES)} "
                f"(valid: {', '.join(PADDING_MODES)})",
                hint='e.g. padding_mode = "reflect"',
            )
        out = cls(random_crop=crop, padding_mode=mode, **probs)
        return out if out.active else None

    @property
    def active(self) -> bool:
        """Whether anything is changed at all."""
        return bool(self.random_crop or self.horizontal_flip or self.vertical_flip)

    def __call__(
        self,
        xb: Any,
        *,
        seed: int,
        epoch: int,
        batch: int,
        positions: Any = None,
        total: int | None = None,
    ) -> Any:
        """Augment the image batch ``xb`` (N, C, H, W) of global batch ``batch`` of ``epoch``.

        The draws are made for the whole global batch (``total`` samples, default ``len(xb)``)
        and ``positions`` picks this process's rows (DDP ranks hold strided shares), so every
        world size augments each sample identically.
        """
        import torch

        n = len(xb)
        total = total or n
        g = torch.Generator().manual_seed(augment_seed(seed, epoch, batch))
        offsets = torch.randint(0, 2 * self.random_crop + 1, (total, 2), generator=g)
        hflip = torch.rand(total, generator=g) < self.horizontal_flip
        vflip = torch.rand(total, generator=g) < self.vertical_flip
        if positions is not None:
            pos = positions.cpu()
            offsets, hflip, vflip = offsets[pos], hflip[pos], vflip[pos]
        dev = xb.device
        if self.random_crop:
            xb = _crop(xb, offsets.to(dev), self.random_crop, self.padding_mode)
        if self.horizontal_flip:
            xb = torch.where(hflip.to(dev).view(n, 1, 1, 1), xb.flip(-1), xb)
        if self.vertical_flip:
            xb = torch.where(vflip.to(dev).view(n, 1, 1, 1), xb.flip(-2), xb)
        return xb


def _probability(key: str, value: Any) -> float:
    if value is True:
        return 0.5
    if value is False:
        return 0.0
    if isinstance(value, int | float) and 0.0 <= value <= 1.0:
        return float(value)
    raise ConfigError(
        f"augment.{key} must be true/false or a probability in [0, 1], got {value!r}",
        hint=f"e.g. {key} = true (p = 0.5)",
    )


def _crop(xb: Any, offsets: Any, pad: int, mode: str) -> Any:
    """Pad by ``pad`` and cut each sample's (H, W) window at its own (dy, dx) offset."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    n, c, h, w = xb.shape
    padded = TF.pad(xb, [pad, pad, pad, pad], fill=0, padding_mode=mode)
    dev = xb.device
    rows = (offsets[:, 0:1] + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=dev)).view(n, 1, 1, w)
    b = torch.arange(n, device=dev).view(n, 1, 1, 1)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[b, ch, rows, cols]


def augment_seed(seed: int, epoch: int, batch: int) -> int:
    """The generator seed of one batch's augmentation: a hash of (seed, epoch, batch), so it
    never coincides with the data-order seeds."""
    digest = hashlib.sha256(f"modelkit-augment|{seed}|{epoch}|{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def build_augment(spec: Mapping[str, Any] | None) -> Augment | None:
    """The augmentation an ``augment`` table asks for (``None``: none)."""
    return Augment.from_spec(spec) if spec else None


# ---- normalisation ------------------------------------------------------------------------
def normalize_spec(
    spec: Mapping[str, Any], *, channels: int | None = None
) -> dict[str, list[float]]:
    """Check a ``normalize`` table: ``mean`` and ``std``, one number or one per channel."""
    if not isinstance(spec, Mapping) or set(spec) != {"mean", "std"}:
        raise ConfigError(
            f"normalize must be a table with exactly 'mean' and 'std', got {spec!r}",
            hint="e.g. normalize = {mean = [0.1307], std = [0.3081]}",
        )
    out: dict[str, list[float]] = {}
    for key in ("mean", "std"):
        raw = spec[key]
        values = raw if isinstance(raw, list | tuple) else [raw]
        if not values or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise ConfigError(
                f"normalize.{key} must be a number or a list of numbers, got {raw!r}",
                hint="e.g. normalize = {mean = [0.1307], std = [0.3081]}",
            )
        out[key] = [float(v) for v in values]
    if any(s <= 0 for s in out["std"]):
        raise ConfigError("normalize.std values must be > 0", hint="use the data's std per channel")
    for key, values in out.items():
        if channels is not None and len(values) not in (1, channels):
            raise ConfigError(
                f"normalize.{key} has {len(values)} values, the data has {channels} channel(s)",
                hint="give one value, or one per channel",
            )
    return out


def normalize_(dataset: Any, spec: Mapping[str, Any]) -> None:
    """Normalise ``dataset``'s images in place, per channel: ``(x - mean) / std``."""
    import torch

    checked = normalize_spec(spec, channels=dataset.input_shape[0])
    shape = (1, -1, 1, 1)
    mean = torch.tensor(checked["mean"], dtype=dataset.x_train.dtype).view(shape)
    std = torch.tensor(checked["std"], dtype=dataset.x_train.dtype).view(shape)
    for name in ("x_train", "x_test"):
        x = getattr(dataset, name)
        setattr(dataset, name, (x - mean.to(x.device)) / std.to(x.device))
    dataset.info["normalize"] = checked
