"""``imagefolder:PATH``: class-per-folder images (the layout torchvision's ImageFolder reads).

Images are decoded once, converted to RGB, resized to ``image_size`` and cached as a
safetensors file keyed by the content fingerprint (sha256 over sorted relative paths, labels
and file bytes), so later runs load tensors, not JPEGs. If PATH holds ``train/`` and
``val/`` (or ``test/``) those splits are used; otherwise ~20% of each class is held out,
chosen by a hash of the relative path (stable when files are added).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from modelkit.data.base import Dataset
from modelkit.errors import DataError
from modelkit.io import atomic_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
HELD_OUT_PERCENT = 20


def cache_dir() -> Path:
    """Where decoded tensors are cached (``$MODELKIT_CACHE`` or ~/.cache/modelkit)."""
    base = os.environ.get("MODELKIT_CACHE") or Path.home() / ".cache" / "modelkit"
    return Path(base) / "imagefolder"


def _check_name(path: Path) -> None:
    """File names must be UTF-8: they go into the fingerprint, the cache and run.json."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise DataError(
            f"image file name is not UTF-8: {shown}",
            hint="rename the file (file names must be UTF-8 text)",
        ) from None


def _check_not_bomb(path: Path) -> None:
    """Refuse an image whose header promises more pixels than PIL's limit (a decompression
    bomb) before decoding it: a bad file like any other (--skip-bad-files skips it)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path):  # reads the header only; the size check happens here
                pass
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {path} is too large to decode safely: {exc}",
            hint="remove or shrink the file, or pass --skip-bad-files",
        ) from None
    except Exception:  # not an image at all: the decoder reports it with the usual message
        return


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"no class folders in {root}", hint="expected PATH/<class>/<image> (e.g. cats/, dogs/)"
        )
    return classes


def _files(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        for p in files:
            _check_name(p)
        if not files:
            raise DataError(
                f"empty class folder: {root / name}", hint="add images to it or remove the folder"
            )
        out += [(p.relative_to(root).as_posix(), label) for p in files]
    return out


def _decode(path: Path, size: int, channels: int = 3) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    _check_not_bomb(path)

    try:
        with Image.open(path) as img:
            img.load()
            mode = "RGB" if channels == 3 else "L"
            rgb = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot decode image {path}: {exc}",
            hint="remove or fix the file, or pass --skip-bad-files",
        ) from None
    pixels = np.asarray(rgb, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, size, size)


def _split_of(relpath: str) -> str:
    h = int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16)
    return "test" if h % 100 < HELD_OUT_PERCENT else "train"


# one image: (split "train" | "test", the folder its path is relative to, relative path, label)
Entry = tuple[str, Path, str, int]


def _entries(root: Path) -> tuple[list[str], list[Entry], str]:
    """``(classes, entries, how the split was made)``: ``train/`` + ``val/`` (or ``test/``)
    folders when ``root`` has them, else a stable hash of each relative path."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs and ("val" in split_dirs or "test" in split_dirs):
        held = split_dirs.get("val") or split_dirs["test"]
        classes = _classes(split_dirs["train"])
        entries = [
            ("train", split_dirs["train"], f, y) for f, y in _files(split_dirs["train"], classes)
        ]
        held_classes = _classes(held)
        if held_classes != classes:
            raise DataError(
                f"class folders differ between {split_dirs['train']} and {held}",
                hint=f"both need the same classes: {classes}",
            )
        entries += [("test", held, f, y) for f, y in _files(held, classes)]
        return classes, entries, f"folders train/ and {held.name}/"
    classes = _classes(root)
    entries = [(_split_of(f), root, f, y) for f, y in _files(root, classes)]
    return classes, entries, f"hash of relative path, {HELD_OUT_PERCENT}% held out"


def _fingerprint(entries: list[Entry]) -> str:
    """sha256 over each image's split, relative path, label and file bytes."""
    h = hashlib.sha256(b"imagefolder-v1|")
    for part, base, rel, label in entries:
        h.update(f"{part}/{rel}|{label}|".encode())
        h.update(hashlib.sha256((base / rel).read_bytes()).digest())
    return "sha256:" + h.hexdigest()


def _cache_path(fingerprint: str, image_size: int, channels: int, skip_bad_files: bool) -> Path:
    """The decoded tensors' cache file: keyed by the fingerprint and the decoding options."""
    return (
        cache_dir() / f"{fingerprint[7:31]}-{image_size}{'' if channels == 3 else f'-c{channels}'}"
        f"{'-skip' if skip_bad_files else ''}.safetensors"
    )


def _decode_all(
    root: Path, entries: list[Entry], image_size: int, channels: int, skip_bad_files: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``({x_train, y_train, x_test, y_test} as uint8/int64 tensors, skipped relative paths)``."""
    xs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ys: dict[str, list[int]] = {"train": [], "test": []}
    skipped: list[str] = []
    for part, base, rel, label in entries:
        try:
            xs[part].append(_decode(base / rel, image_size, channels))
        except DataError:
            if not skip_bad_files:
                raise
            skipped.append(rel)
            continue
        ys[part].append(label)
    for part in ("train", "test"):
        if not xs[part]:
            raise DataError(
                f"{root}: no usable images in the {part} split",
                hint="add images (or check --skip-bad-files counts)",
            )
    tensors = {
        "x_train": torch.from_numpy(np.stack(xs["train"])),
        "y_train": torch.tensor(ys["train"], dtype=torch.int64),
        "x_test": torch.from_numpy(np.stack(xs["test"])),
        "y_test": torch.tensor(ys["test"], dtype=torch.int64),
    }
    return {k: v.contiguous() for k, v in tensors.items()}, skipped


def load_imagefolder_dataset(
    path: str, *, image_size: int = 28, channels: int = 3, skip_bad_files: bool = False
) -> Dataset:
    """Load an image folder (see module docstring): ``image_size`` square, ``channels`` 3 (RGB)
    or 1 (grayscale)."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}", hint="channels = 3 (RGB)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder not found: {root}",
            hint="pass imagefolder:PATH to a folder of class folders",
        )
    classes, entries, split = _entries(root)
    fingerprint = _fingerprint(entries)
    cache = _cache_path(fingerprint, image_size, channels, skip_bad_files)
    tensors, skipped = _load_cache(cache)
    if tensors is None:
        tensors, skipped = _decode_all(root, entries, image_size, channels, skip_bad_files)
        _save_cache(cache, tensors, skipped)
    return Dataset(
        spec=f"imagefolder:{path}",
        x_train=tensors["x_train"].float() / 255.0,
        y_train=tensors["y_train"],
        x_test=tensors["x_test"].float() / 255.0,
        y_test=tensors["y_test"],
        classes=classes,
        fingerprint=fingerprint,
        info={
            "split": split,
            "image_size": image_size,
            "channels": channels,
            "skipped_files": len(skipped),
            "skipped": skipped[:20],
        },
    )


def _load_cache(path: Path) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    if not path.is_file():
        return None, []
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("x_train", "y_train", "x_test", "y_test")}
        skipped = [s for s in meta.get("skipped", "").split("\n") if s]
        return tensors, skipped
    except Exception:  # a corrupt cache is rebuilt, never trusted
        return None, []


def _save_cache(path: Path, tensors: dict[str, torch.Tensor], skipped: list[str]) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"skipped": "\n".join(skipped)})
    except OSError:
        pass  # caching is an optimisation; an unwritable cache dir must not fail the run
