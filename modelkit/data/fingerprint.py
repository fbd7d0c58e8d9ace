"""What a run trained on, as ``{"name", "fingerprint", "size", "method"}``: any data object.

modelkit's own datasets carry their fingerprint; for anything else a training loop passes to
:func:`modelkit.start_run` the fingerprint is computed here (a registry of kinds, tried in
order). It is ``"unknown"`` (with the reason in ``method``) when it cannot be computed, never
null. Importing this module does not import torch.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelkit.io import sha256_file

__all__ = ["DATA_SAMPLE_ITEMS", "UNKNOWN", "data_summary"]

DATA_SAMPLE_ITEMS = 1024  # a torch Dataset larger than this is fingerprinted from a sample
UNKNOWN = "unknown"


def data_summary(data: Any) -> dict[str, Any]:
    """``{"name", "fingerprint", "size", "method", ...}`` for what the run trained on.

    Accepted: a modelkit dataset (its own fingerprint), a ``TensorDataset``, a tensor or a
    tuple of tensors (every byte hashed), a torchvision-style dataset with ``data`` and
    ``targets`` arrays (both hashed), any map-style torch ``Dataset`` (every item hashed when it
    has at most :data:`DATA_SAMPLE_ITEMS` items, else that many evenly spaced items plus the
    length; RNG states are restored afterwards so random transforms do not shift training), a
    ``DataLoader`` (its dataset), or a file or directory path (content hash of every file).
    Anything else, or a failure, gives ``fingerprint: "unknown"`` with the reason — never null.
    """
    if data is None:
        return {"name": UNKNOWN, "fingerprint": UNKNOWN, "size": None, "method": "not given"}
    for accepts, describe in _DATA_KINDS:
        if accepts(data):
            try:
                return describe(data)
            except Exception as exc:  # an odd dataset must not stop the run from being recorded
                return {
                    "name": _data_name(data),
                    "fingerprint": UNKNOWN,
                    "size": _len(data),
                    "method": f"failed: {type(exc).__name__}: {str(exc)[:200]}",
                }
    return {
        "name": _data_name(data),
        "fingerprint": UNKNOWN,
        "size": _len(data),
        "method": f"cannot fingerprint a {type(data).__name__} (pass a Dataset or a path)",
    }


def _data_name(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    root = getattr(data, "root", None)
    name = type(data).__name__
    return f"{name}({root})" if isinstance(root, (str, os.PathLike)) else name


def _len(data: Any) -> int | None:
    try:
        return int(len(data))
    except Exception:
        return None


def _is_modelkit_dataset(data: Any) -> bool:
    return all(hasattr(data, a) for a in ("fingerprint", "summary", "x_train", "spec"))


def _modelkit_summary(data: Any) -> dict[str, Any]:
    size = int(data.x_train.shape[0])  # the summary's train_size
    return {"name": data.spec, "size": size, "method": "modelkit dataset", **data.summary()}


def _is_tensors(data: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    if isinstance(data, torch.Tensor):
        return True
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return True
    return isinstance(getattr(data, "tensors", None), tuple)  # TensorDataset


def _tensors_summary(data: Any) -> dict[str, Any]:
    import torch

    from modelkit.data.base import fingerprint_tensors

    tensors = (
        (data,)
        if isinstance(data, torch.Tensor)
        else tuple(data.tensors if hasattr(data, "tensors") else data)
    )
    return {
        "name": type(data).__name__,
        "fingerprint": fingerprint_tensors(*tensors, extra="tensors-v1"),
        "size": int(tensors[0].shape[0]) if tensors[0].ndim else 1,
        "method": "every tensor byte",
        "shapes": [list(t.shape) for t in tensors],
    }


def _is_loader(data: Any) -> bool:
    return hasattr(data, "dataset") and hasattr(data, "batch_size") and hasattr(data, "sampler")


def _loader_summary(data: Any) -> dict[str, Any]:
    return data_summary(data.dataset)


def _is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _path_summary(data: Any) -> dict[str, Any]:
    path = Path(os.fspath(data))
    if path.is_file():
        return {
            "name": str(data),
            "fingerprint": "sha256:" + sha256_file(path),
            "size": path.stat().st_size,
            "method": "file content",
        }
    if path.is_dir():
        h = hashlib.sha256(b"dir-v1")
        count = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                f = Path(root) / name
                if not f.is_file():
                    continue
                rel = f.relative_to(path).as_posix()
                h.update(f"{rel}\0{sha256_file(f)}\n".encode())
                count += 1
        return {
            "name": str(data),
            "fingerprint": "sha256:" + h.hexdigest(),
            "size": count,
            "method": "every file (relative path + content)",
        }
    return {
        "name": str(data),
        "fingerprint": UNKNOWN,
        "size": None,
        "method": "path not found",
    }


def _is_data_targets(data: Any) -> bool:
    return _array_like(getattr(data, "data", None)) and _array_like(getattr(data, "targets", None))


def _array_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") or isinstance(value, list)


def _data_targets_summary(data: Any) -> dict[str, Any]:
    h = hashlib.sha256(b"data-targets-v1")
    for part in (data.data, data.targets):
        _hash_item(h, part)
    return {
        "name": _data_name(data),
        "fingerprint": "sha256:" + h.hexdigest(),
        "size": _len(data),
        "method": "data and targets arrays (every byte)",
    }


def _is_map_dataset(data: Any) -> bool:
    return hasattr(data, "__getitem__") and hasattr(data, "__len__")


def _items_summary(data: Any) -> dict[str, Any]:
    from modelkit.runs.rng import capture_rng, restore_rng

    n = len(data)
    if n <= DATA_SAMPLE_ITEMS:
        indices: Iterable[int] = range(n)
        method = "every item"
    else:
        indices = [i * n // DATA_SAMPLE_ITEMS for i in range(DATA_SAMPLE_ITEMS)]
        method = f"{DATA_SAMPLE_ITEMS} evenly spaced items of {n} (i * n // {DATA_SAMPLE_ITEMS})"
    h = hashlib.sha256(f"items-v1|{n}|".encode())
    tensors, meta = capture_rng()
    try:
        for i in indices:
            _hash_item(h, data[i])
    finally:
        restore_rng(tensors, meta)
    return {
        "name": _data_name(data),
        "fingerprint": "sha256:" + h.hexdigest(),
        "size": n,
        "method": method,
    }


def _hash_item(h: Any, item: Any) -> None:
    """Feed one dataset item (tensors, arrays, images, numbers, nested tuples/dicts) into ``h``."""
    if isinstance(item, (tuple, list)):
        h.update(f"({len(item)}|".encode())
        for part in item:
            _hash_item(h, part)
        return
    if isinstance(item, dict):
        h.update(f"{{{len(item)}|".encode())
        for key in sorted(item, key=str):
            h.update(f"{key}=".encode())
            _hash_item(h, item[key])
        return
    if isinstance(item, (bool, int, float, str, bytes)) or item is None:
        h.update(f"{type(item).__name__}:{item!r}|".encode())
        return
    if "torch" in sys.modules:
        import torch

        if isinstance(item, torch.Tensor):
            from modelkit.runs.fingerprint import hash_tensors

            hash_tensors([("t", item)], h)
            return
    if hasattr(item, "__array__") and hasattr(item, "dtype"):  # numpy arrays and scalars
        import numpy as np

        a = np.ascontiguousarray(np.asarray(item))
        h.update(f"nd{a.shape}|{a.dtype}|".encode())
        h.update(a.tobytes())
        return
    if hasattr(item, "tobytes") and hasattr(item, "mode") and hasattr(item, "size"):  # PIL
        h.update(f"img|{item.mode}|{item.size}|".encode())
        h.update(item.tobytes())
        return
    raise TypeError(f"cannot hash a dataset item of type {type(item).__name__}")


_DATA_KINDS: list[tuple[Callable[[Any], bool], Callable[[Any], dict[str, Any]]]] = [
    (_is_modelkit_dataset, _modelkit_summary),
    (_is_path, _path_summary),
    (_is_tensors, _tensors_summary),
    (_is_loader, _loader_summary),
    (_is_data_targets, _data_targets_summary),
    (_is_map_dataset, _items_summary),
]
