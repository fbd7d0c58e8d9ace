"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real samples, offline).

Adapted to the MLP's 1x28x28 input the way MNIST was made: each 8x8 digit is resized to
20x20 (bilinear) and centred in a 28x28 frame. A fixed stratified split holds out 20%.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modelkit.data.base import Dataset, fingerprint_tensors


def load_digits_dataset(*, test_fraction: float = 0.2) -> Dataset:
    """Load, adapt and split the bundled digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = torch.tensor(bunch.target, dtype=torch.int64)
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
