"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real samples, offline).

Adapted to the MLP's 1x28x28 input the way MNIST was made: each 8x8 digit is resized to
20x20 (bilinear) and centred in a 28x28 frame. A fixed stratified split holds out 20%.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

from modelkit.data.base import Dataset, fingerprint_tensors


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled 8x8 digits as (images, labels): the CSV that scikit-learn ships, read directly
    (importing sklearn costs ~1 s per process); falls back to ``load_digits``."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits_dataset(*, test_fraction: float = 0.2) -> Dataset:
    """Load, adapt and split the bundled digits."""
    images, target = _digits_arrays()
    raw = torch.tensor(images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = torch.tensor(target, dtype=torch.int64)
    x = F.interpolate(raw[:, None], size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4)).clamp_(0.0, 1.0)  # (1797, 1, 28, 28)
    # stratified, deterministic split: every 5th sample of each class is held out
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    every = max(2, round(1 / test_fraction))
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        test_mask[idx[::every]] = True
    ds = Dataset(
        spec="digits",
        x_train=x[~test_mask].contiguous(),
        y_train=labels[~test_mask].contiguous(),
        x_test=x[test_mask].contiguous(),
        y_test=labels[test_mask].contiguous(),
        classes=[str(i) for i in range(10)],
        fingerprint="",
        info={"source": "sklearn.datasets.load_digits", "split": f"every {every}th per class"},
    )
    ds.fingerprint = fingerprint_tensors(raw, labels, test_mask, extra="digits-v1")
    return ds
