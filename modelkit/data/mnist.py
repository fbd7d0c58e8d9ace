"""``mnist:PATH``: MNIST in its original IDX format (``.gz`` or raw) from a directory.

Two layouts are read:
- the full four files torchvision downloads (in PATH, PATH/raw or PATH/MNIST/raw):
  train (60,000) for training, t10k (10,000) held out;
- only the official test split (like ../shared/data/mnist): split deterministically,
  the first 8,000 for training and the last 2,000 held out.
``download=True`` fetches the four files with torchvision (needs network).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from modelkit.data.base import Dataset, fingerprint_tensors
from modelkit.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
TEST_ONLY_TRAIN = 8000
NUM_CLASSES = 10


def read_idx(path: Path, *, expect_magic: int) -> np.ndarray:
    """Parse one IDX file (gzipped or raw), checking magic number and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"cannot read {path} (truncated or corrupt): {exc}", hint="re-download it"
        ) from None
    if len(raw) < 8:
        raise DataError(f"{path} is truncated ({len(raw)} bytes)", hint="re-download it")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expect_magic:
        raise DataError(
            f"{path} has wrong magic number {magic} (expected {expect_magic})",
            hint="this is not an MNIST IDX file of that kind; check the file name",
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated: {len(raw)} bytes, header promises {expected}",
            hint="re-download it",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for d in (root, root / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _pair(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    img = _find(root, f"{prefix}-images-idx3-ubyte")
    lab = _find(root, f"{prefix}-labels-idx1-ubyte")
    if img is None and lab is None:
        return None
    if img is None or lab is None:
        missing = f"{prefix}-{'images-idx3' if img is None else 'labels-idx1'}-ubyte[.gz]"
        raise DataError(
            f"{root}: found half of the {prefix} split, {missing} is missing",
            hint="copy the missing file or re-download with --download",
        )
    x, y = read_idx(img, expect_magic=IMAGES_MAGIC), read_idx(lab, expect_magic=LABELS_MAGIC)
    if len(x) != len(y):
        raise DataError(
            f"{img} has {len(x)} images but {lab} has {len(y)} labels",
            hint="the two files do not belong together",
        )
    if x.ndim != 3:
        raise DataError(
            f"{img} holds {x.ndim}-d data, expected images (count, height, width)",
            hint="this is not an MNIST image file",
        )
    if y.ndim != 1:
        raise DataError(f"{lab} holds {y.ndim}-d data, expected labels", hint="check the file")
    bad = np.flatnonzero(y >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{lab}: label {int(y.flat[bad[0]])} at index {int(bad[0])} is outside the classes "
            f"0..{NUM_CLASSES - 1} ({bad.size} such labels)",
            hint="the labels file is corrupt or not MNIST's; re-download it",
        )
    return x, y


def load_mnist_dataset(path: str, *, download: bool = False) -> Dataset:
    """Load MNIST from ``path`` (see module docstring)."""
    root = Path(path).expanduser()
    if download:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    if not root.is_dir():
        raise DataError(
            f"MNIST directory not found: {root}",
            hint="pass mnist:PATH to a folder of IDX files, or add --download",
        )
    test = _pair(root, "t10k")
    train = _pair(root, "train")
    if test is None and train is None:
        raise DataError(
            f"no MNIST IDX files in {root}",
            hint="expected t10k-images-idx3-ubyte.gz etc.; or add --download",
        )
    if train is not None and test is not None:
        (xtr, ytr), (xte, yte) = train, test
        split = "official train / t10k"
    else:
        x, y = test if test is not None else train  # type: ignore[misc]
        xtr, ytr, xte, yte = (
            x[:TEST_ONLY_TRAIN],
            y[:TEST_ONLY_TRAIN],
            x[TEST_ONLY_TRAIN:],
            y[TEST_ONLY_TRAIN:],
        )
        split = f"one split only: first {TEST_ONLY_TRAIN} train, last {len(x) - TEST_ONLY_TRAIN} held out"
    t = [torch.from_numpy(np.array(a, copy=True)) for a in (xtr, ytr, xte, yte)]
    ds = Dataset(
        spec=f"mnist:{path}",
        x_train=(t[0].float() / 255.0).unsqueeze(1),
        y_train=t[1].long(),
        x_test=(t[2].float() / 255.0).unsqueeze(1),
        y_test=t[3].long(),
        classes=[str(i) for i in range(10)],
        fingerprint=fingerprint_tensors(*t, extra="mnist-v1"),
        info={"split": split},
    )
    return ds
