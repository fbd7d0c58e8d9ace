"""The files of a release: each hashed in one streaming pass, with the identity of the file
that was hashed (device, inode, size, mtime).

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
