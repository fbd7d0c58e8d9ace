"""Data specs on real data: bundled digits, MNIST IDX, image folders, and every bad-input case."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from modelkit.data import load_dataset
from modelkit.errors import DataError, UnknownNameError


def test_digits_is_real_adapted_and_deterministic() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_test) == 1797
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    assert torch.equal(a.x_train, b.x_train)
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    assert set(a.y_test.tolist()) == set(range(10))  # stratified


def test_mnist_test_split_only(mnist_dir: Path) -> None:
    ds = load_dataset(f"mnist:{mnist_dir}")
    assert (len(ds.x_train), len(ds.x_test)) == (8000, 2000)
    assert ds.input_shape == (1, 28, 28)
    assert ds.y_train[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official t10k order


def test_mnist_raw_and_gz_share_a_fingerprint(mnist_dir: Path, tmp_path: Path) -> None:
    for f in mnist_dir.glob("*.gz"):
        (tmp_path / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    assert (
        load_dataset(f"mnist:{tmp_path}").fingerprint
        == load_dataset(f"mnist:{mnist_dir}").fingerprint
    )


def test_mnist_four_file_layout(mnist_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in mnist_dir.glob("t10k-*.gz"):
        shutil.copy(f, raw / f.name)
        shutil.copy(f, raw / f.name.replace("t10k", "train"))
    ds = load_dataset(f"mnist:{tmp_path}")
    assert (len(ds.x_train), len(ds.x_test)) == (10000, 10000)
    assert "official" in ds.info["split"]


def test_mnist_truncated_file(mnist_dir: Path, tmp_path: Path) -> None:
    data = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError, match="truncated"):
        load_dataset(f"mnist:{tmp_path}")


def test_mnist_truncated_gzip(mnist_dir: Path, tmp_path: Path) -> None:
    data = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(data[:1000])
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(f"mnist:{tmp_path}")


def test_mnist_wrong_magic(mnist_dir: Path, tmp_path: Path) -> None:
    # labels file where the images file should be
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError, match="wrong magic number 2049"):
        load_dataset(f"mnist:{tmp_path}")


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_empty_mnist_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_dataset(f"mnist:{tmp_path}")


def test_unknown_spec_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as e:
        load_dataset("digit")
    assert "did you mean 'digits'" in str(e.value) and "imagefolder" in str(e.value)


def test_path_spec_without_path() -> None:
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("mnist")


@pytest.fixture()
def small_folder(catsdogs_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for f in sorted((catsdogs_dir / cls).iterdir())[:12]:
            shutil.copy(f, root / cls / f.name)
    return root


def test_imagefolder_real_photos(catsdogs_dir: Path) -> None:
    ds = load_dataset(f"imagefolder:{catsdogs_dir}")
    assert ds.classes == ["cats", "dogs"] and ds.input_shape == (3, 28, 28)
    assert len(ds.x_train) + len(ds.x_test) == 200 and 20 <= len(ds.x_test) <= 60
    again = load_dataset(f"imagefolder:{catsdogs_dir}")  # served from the tensor cache
    assert again.fingerprint == ds.fingerprint and torch.equal(again.x_train, ds.x_train)


def test_imagefolder_cache_is_keyed_by_content(small_folder: Path) -> None:
    a = load_dataset(f"imagefolder:{small_folder}")
    victim = sorted((small_folder / "cats").iterdir())[0]
    victim.write_bytes(
        (
            small_folder / "dogs" / sorted(p.name for p in (small_folder / "dogs").iterdir())[0]
        ).read_bytes()
    )
    b = load_dataset(f"imagefolder:{small_folder}")
    assert a.fingerprint != b.fingerprint


def test_imagefolder_corrupt_jpeg_named(small_folder: Path) -> None:
    bad = small_folder / "cats" / "broken.jpg"
    good = next((small_folder / "cats").iterdir()).read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset(f"imagefolder:{small_folder}")
    ds = load_dataset(f"imagefolder:{small_folder}", skip_bad_files=True)
    assert ds.info["skipped_files"] == 1 and ds.info["skipped"] == ["cats/broken.jpg"]


def test_imagefolder_non_image_file(small_folder: Path) -> None:
    (small_folder / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt"):
        load_dataset(f"imagefolder:{small_folder}")
    assert (
        load_dataset(f"imagefolder:{small_folder}", skip_bad_files=True).info["skipped_files"] == 1
    )


def test_imagefolder_empty_class(small_folder: Path) -> None:
    (small_folder / "birds").mkdir()
    with pytest.raises(DataError, match="empty class folder"):
        load_dataset(f"imagefolder:{small_folder}")


def test_imagefolder_explicit_splits(small_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "split"
    shutil.copytree(small_folder, root / "train")
    shutil.copytree(small_folder, root / "val")
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds.x_train) == len(ds.x_test) == 24
