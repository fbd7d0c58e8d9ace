"""The files of a release: each hashed in one streaming pass, with the identity of the file
that was hashed (device, inode, size, mtime).

The weights are hashed on every core (one thread per core; ``hashlib`` and reads release
the GIL), and a release starts hashing them in the background (:class:`Hashing`) before it
checks the card, so the hash pass overlaps that work (and the import of torch it implies).

A target that copies files (a local registry) copies with the kernel (``copy_file_range`` /
``sendfile``; a reflink where the file system can) instead of hashing again: the source is
still the file that was hashed when its identity is unchanged before and after the copy (else
it is copied while hashed again, and a change is an error). The copy's own identity then
lets verification recognise the file it wrote, so a release hashes its weights once.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.release.paths import open_nofollow, run_member

CHUNK = 8 << 20
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files >= 10 MB in LFS
# the Hub's default .gitattributes (the patterns that matter for model repos) + images
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack",
    "*.npy", "*.npz", "*.pkl", "*.pickle", "*.tar", "*.tar.*", "*.gz", "*.zip", "*.zst",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp",
)  # fmt: skip
FileId = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def file_id(path: Path) -> FileId:
    """What identifies the file at ``path`` (links followed) as the one that was written."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class PackageFile:
    """One file of a release: where it comes from, its size and hashes, regular or LFS."""

    path: str
    size: int
    sha256: str
    lfs: bool
    source: Path | None = None  # read from disk...
    data: bytes | None = None  # ...or held in memory (card, manifest)
    git_oid: str | None = None  # git blob sha1 (regular files: what the Hub reports as blob id)
    source_id: FileId | None = None  # the identity of ``source`` when it was hashed

    def open(self) -> Any:
        """A binary file object over the content."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        return open_nofollow(self.source)


def git_blob_oid(data: bytes) -> str:
    """The git blob id (sha1 of ``blob <size>\\0`` + content), what the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, *, size: int, sample: bytes) -> bool:
    """Whether the Hub stores ``path`` in LFS: a binary pattern, >= 10 MB, or binary content."""
    name = path.rsplit("/", 1)[-1]
    return (
        any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)
        or size >= LFS_THRESHOLD
        or b"\0" in sample[:8000]
    )


def memory_file(name: str, data: bytes) -> PackageFile:
    """A package file held in memory (the card, the manifest)."""
    lfs = is_lfs(name, size=len(data), sample=data[:8000])
    return PackageFile(
        name,
        len(data),
        hashlib.sha256(data).hexdigest(),
        lfs,
        data=data,
        git_oid=None if lfs else git_blob_oid(data),
    )


def disk_file(run_dir: Path, rel: str, name: str | None = None) -> PackageFile:
    """``rel`` of the run (released as ``name``, default ``rel``), read once: its sha256 and
    the git blob id of a small regular file. Only a regular file inside the run, reached
    through no symlink (:func:`run_member`)."""
    path = run_member(run_dir, rel)
    name = name or rel
    sha, oid = hashlib.sha256(), None
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open_nofollow(path) as f:
        st = os.fstat(f.fileno())
        n = f.readinto(buf)
        lfs = is_lfs(name, size=st.st_size, sample=bytes(view[: min(n, 8000)]))
        oid = None if lfs else hashlib.sha1(b"blob %d\0" % st.st_size)
        while n:
            sha.update(view[:n])
            if oid is not None:
                oid.update(view[:n])
            n = f.readinto(buf)
        after = os.fstat(f.fileno())
    source_id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    same = source_id == (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns)
    return PackageFile(
        name, st.st_size, sha.hexdigest(), lfs, source=path,
        git_oid=oid.hexdigest() if oid else None, source_id=source_id if same else None,
    )  # fmt: skip


class Hashing:
    """Files of one run hashed in the background (:func:`disk_file`, one thread per core)
    while the caller does other work; :meth:`file` gives each result, with the error hashing
    it raised (a file not queued is hashed then). A context manager: leaving it cancels what
    has not started and waits for the rest, so no thread outlives it."""

    def __init__(self, run_dir: Path, names: Iterable[str] = ()) -> None:
        self.run_dir = Path(run_dir)
        self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="modelkit-hash")
        self._queued: dict[str, Future[PackageFile]] = {
            name: self._pool.submit(disk_file, self.run_dir, name) for name in names
        }

    def file(self, name: str) -> PackageFile:
        """``name``'s :class:`PackageFile` (hashed in the background, or now)."""
        queued = self._queued.pop(name, None)
        return queued.result() if queued is not None else disk_file(self.run_dir, name)

    def files(self, names: Iterable[str]) -> list[PackageFile]:
        """:meth:`file` of each name, in order (those not queued are hashed concurrently)."""
        names = list(names)
        for name in names:
            if name not in self._queued:
                self._queued[name] = self._pool.submit(disk_file, self.run_dir, name)
        return [self.file(name) for name in names]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
