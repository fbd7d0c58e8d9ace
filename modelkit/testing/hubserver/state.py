"""The test Hub's state: repos (commits, branches, tags) in memory, file contents on disk."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

LFS_PATTERNS = re.compile(
    r".*\.(safetensors|bin|pt|pth|ckpt|h5|onnx|msgpack|npy|npz|pkl|png|jpg|jpeg|gz|zip|tar)$"
)
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
LICENSES = {"apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "other", "unknown", "gpl-3.0"}


def git_oid(data: bytes) -> str:
    """The git blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer_oid(sha256: str, size: int) -> str:
    """The git blob id of the LFS pointer file of an object."""
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return git_oid(pointer.encode())


@dataclass
class Entry:
    """One file of a commit: its content's sha256 and size, LFS or regular, its oid."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git oid (regular) or sha256 (lfs) - what preupload reports


@dataclass
class Repo:
    """commits: oid -> (parent, files, summary); branches and tags: name -> oid."""

    commits: dict[str, tuple[str | None, dict[str, Entry], str]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Store:
    """Repos by id, blobs by sha256 under ``storage``."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.repos: dict[str, Repo] = {}

    def blob(self, sha256: str) -> Path:
        """Where the content with ``sha256`` lives."""
        return self.storage / sha256

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        self.blob(sha).write_bytes(data)
        return sha

    def resolve(self, repo: Repo, rev: str) -> str | None:
        """A branch, tag or commit id -> the commit id (None when unknown)."""
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        return rev if rev in repo.commits else None

    def new_repo(self, repo_id: str) -> Repo:
        """A repo with its initial commit (``.gitattributes``) on ``main``."""
        repo = Repo()
        sha = self.put(GITATTRIBUTES)
        oid = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        entry = Entry(sha, len(GITATTRIBUTES), False, git_oid(GITATTRIBUTES))
        repo.commits[oid] = (None, {".gitattributes": entry}, "initial commit")
        repo.branches["main"] = oid
        self.repos[repo_id] = repo
        return repo

    def tamper(self, repo_id: str, revision: str, path: str, data: bytes) -> None:
        """Overwrite a file's stored bytes in place (for verify tests): metadata stays as it was."""
        repo = self.repos[repo_id]
        commit = self.resolve(repo, revision)
        assert commit is not None
        entry = repo.commits[commit][1][path]
        self.blob(entry.sha256).write_bytes(data)
