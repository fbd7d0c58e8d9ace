"""A local registry in the Hugging Face cache layout, so stock huggingface_hub loads from it offline.

::

    PATH/models--ORG--NAME/
      blobs/<sha256 | git oid>          content-addressed files (LFS files by sha256, like the Hub's ETag)
      snapshots/<commit>/<file>         relative symlinks into blobs/
      refs/main, refs/v1.2              the commit each ref points at (tags are created once, never moved)
      releases/v1.2.json                the release record: the commit v1.2 was created on, the
                                        manifest's sha256 (what `verify` checks the tag against)
      .tmp/                             temp files of a write in progress (never listed by
                                        readers; whatever a killed write left is removed by the next)
      .lock                             held (fcntl) by a write: a second release of the repo waits

``hf_hub_download(repo_id, "model.safetensors", revision="v1.2", cache_dir=PATH,
local_files_only=True)`` resolves ``refs/v1.2`` -> ``snapshots/<commit>/model.safetensors``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from modelkit.errors import BadInputError, CheckFailed, ModelkitError
from modelkit.io import fsync_dir
from modelkit.release.files import FileId, file_id
from modelkit.release.package import git_blob_oid, read_manifest
from modelkit.release.records import ReleaseRecord
from modelkit.release.remote import RemoteFile, RemoteState
from modelkit.release.version import parse_version
from modelkit.weights.hashing import hash_file, in_threads

CHUNK = 4 << 20
T = TypeVar("T")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
TMP = ".tmp"


def _exclusive(method: Callable[..., T]) -> Callable[..., T]:
    """Run a write holding the repo's lock (:meth:`LocalRegistry.serialised`)."""

    @functools.wraps(method)
    def locked(self: LocalRegistry, *args: Any, **kwargs: Any) -> T:
        with self.serialised():
            return method(self, *args, **kwargs)

    return locked


class LocalRegistry:
    """A release target on the local disk (same semantics as the Hub target)."""

    kind = "local"

    def __init__(self, root: Path, repo_id: str) -> None:
        self.root = Path(root)
        self.repo_id = repo_id
        org, name = repo_id.split("/")
        self.repo = self.root / f"models--{org}--{name}"
        self._held = threading.local()  # how deep this thread holds the lock (re-entrant)
        self.written: dict[str, FileId] = {}  # blobs this object wrote: name -> identity

    @contextlib.contextmanager
    def serialised(self) -> Iterator[None]:
        """Hold the repo's lock (``.lock``, fcntl): every other writer of the repo, in this or
        another process, waits; re-entrant in the thread that holds it."""
        depth = getattr(self._held, "depth", 0)
        if depth == 0:
            self.repo.mkdir(parents=True, exist_ok=True)
            lock = open(self.repo / ".lock", "a+b")  # noqa: SIM115 - held across the yield
            fcntl.flock(lock, fcntl.LOCK_EX)
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth
            if depth == 0:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()

    @staticmethod
    def only_repo(root: Path) -> str | None:
        """The repo id when ``root`` holds exactly one repo."""
        if not Path(root).is_dir():
            return None
        repos = [p.name for p in Path(root).glob("models--*--*") if p.is_dir()]
        if len(repos) != 1:
            return None
        _, org, name = repos[0].split("--", 2)
        return f"{org}/{name}"

    def describe(self) -> str:
        return f"{self.root} ({self.repo_id})"

    # ---------------------------------------------------------------- reading
    def _ref(self, name: str) -> str | None:
        """The commit ``refs/<name>`` points at, when it is a valid ref (else None)."""
        if name.startswith(".") or "/" in name:
            return None
        p = self.repo / "refs" / name
        try:
            commit = p.read_text(encoding="ascii").strip() if p.is_file() else None
        except (OSError, UnicodeDecodeError):
            return None
        return commit if commit and COMMIT_RE.match(commit) else None

    def state(self) -> RemoteState:
        """The repo's head and tags: only valid refs (a temp file of a killed write is none)."""
        refs = self.repo / "refs"
        if not refs.is_dir():
            return RemoteState(exists=self.repo.is_dir(), head=None)
        tags = {}
        for p in refs.iterdir():
            commit = self._ref(p.name) if p.name != "main" else None
            if commit is not None:
                tags[p.name] = commit
        return RemoteState(exists=True, head=self._ref("main"), tags=tags)

    def snapshot(self, revision: str) -> Path | None:
        """The snapshot folder of ``revision`` (a ref or a commit), or None."""
        commit = self._ref(revision) or (revision if COMMIT_RE.match(revision) else None)
        snap = self.repo / "snapshots" / commit if commit else None
        return snap if snap is not None and snap.is_dir() else None

    def read_release_record(self, version: str) -> ReleaseRecord | None:
        """The record written when ``version`` was released (None when there is none)."""
        p = self.repo / "releases" / f"{version}.json"
        if not p.is_file():
            return None
        try:
            return ReleaseRecord.parse(p.read_bytes(), source=str(p))
        except OSError:
            return ReleaseRecord(error=f"{p} is not JSON")

    @_exclusive
    def write_release_record(self, version: str, record: ReleaseRecord) -> None:
        """Write the release record once (create-if-absent); an existing one is never replaced."""
        parse_version(version)
        d = self.repo / "releases"
        d.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_file(record.to_json())
        try:
            os.link(tmp, d / f"{version}.json")
            fsync_dir(d)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    def files_at(self, revision: str) -> dict[str, RemoteFile]:
        commit = self._ref(revision) or revision
        snap = self.repo / "snapshots" / commit
        out: dict[str, RemoteFile] = {}
        if not snap.is_dir():
            return out
        for p in sorted(snap.rglob("*")):
            if p.is_file():
                sha = _sha256(p)
                rel = p.relative_to(snap).as_posix()
                out[rel] = RemoteFile(
                    rel,
                    p.stat().st_size,
                    sha,
                    git_blob_oid(p.read_bytes()) if p.stat().st_size < (10 << 20) else None,
                )
        return out

    def read_file(self, revision: str, path: str) -> bytes | None:
        commit = self._ref(revision) or revision
        p = self.repo / "snapshots" / commit / path
        return p.read_bytes() if p.is_file() else None

    # ---------------------------------------------------------------- writing
    @_exclusive
    def publish(self, package: Any, *, parent: str | None) -> str:
        """Copy blobs (streamed, verified), build the snapshot atomically; returns the commit id."""
        manifest = package.file("manifest.json")
        commit = hashlib.sha1(
            f"modelkit-local-commit\n{parent or ''}\n{manifest.sha256}\n".encode()
        ).hexdigest()
        blobs = self.repo / "blobs"
        snaps = self.repo / "snapshots"
        for d in (blobs, snaps, self.repo / "refs"):
            d.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()
        self._copy_blobs(package.files, blobs)
        fsync_dir(blobs)
        final = snaps / commit
        if not final.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f"snap-{commit}.", dir=self._tmp_dir()))
            try:
                for f in package.files:
                    link = tmp / f.path
                    link.parent.mkdir(parents=True, exist_ok=True)
                    # relative to where the link will live: snapshots/<commit>/<path>
                    depth = len(Path(f.path).parts) - 1
                    blob_name = f.sha256 if f.lfs else f.git_oid
                    rel = os.path.join(*([".."] * (depth + 2)), "blobs", blob_name)
                    os.symlink(rel, link)
                os.rename(tmp, final)
                fsync_dir(snaps)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if not final.is_dir():
                    raise
        return commit

    def _copy_blobs(self, files: list[Any], blobs: Path) -> None:
        """Copy every file that has no blob yet (each content once; files concurrently, so
        one file's copy overlaps another's fsync); records what it wrote in ``written``."""
        todo: dict[str, list[Any]] = {}
        for f in files:
            name = f.sha256 if f.lfs else f.git_oid
            if not ((blobs / name).is_file() and (blobs / name).stat().st_size == f.size):
                todo.setdefault(name, []).append(f)
        tmp_dir = self._tmp_dir()

        def copy(name: str) -> FileId:
            f, blob = todo[name][0], blobs / name
            if not _copy_unchanged(f, blob, tmp_dir=tmp_dir):
                _copy_verified(f, blob, tmp_dir=tmp_dir)
            return file_id(blob)

        for name, written in zip(todo, in_threads(copy, todo), strict=True):
            self.written.update({f.path: written for f in todo[name]})

    @_exclusive
    def tag(self, version: str, commit: str) -> None:
        """Create ``refs/<version>`` once (atomic create-if-absent), then move ``refs/main``."""
        parse_version(version)  # the one grammar: a ref name never escapes refs/
        refs = self.repo / "refs"
        tmp = self._tmp_file(commit.encode())
        try:
            try:
                os.link(tmp, refs / version)  # fails if the tag exists: tags never move
            except FileExistsError:
                existing = (refs / version).read_text().strip()
                if existing != commit:
                    raise BadInputError(
                        f"tag {version} already exists on {self.describe()} at {existing[:12]}",
                        hint="tags are immutable; release a new version",
                    ) from None
            os.replace(tmp, refs / "main")
            fsync_dir(refs)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _tmp_dir(self) -> Path:
        d = self.repo / TMP
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _tmp_file(self, data: bytes) -> Path:
        fd, tmp = tempfile.mkstemp(prefix="ref-", dir=self._tmp_dir())
        try:
            os.write(fd, data)
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        return Path(tmp)

    def _clean_tmp(self) -> None:
        """Remove what a killed write left in .tmp/ (and old-style dot temp files)."""
        shutil.rmtree(self.repo / TMP, ignore_errors=True)
        for sub in ("blobs", "refs", "snapshots"):
            d = self.repo / sub
            if d.is_dir():
                for p in d.glob(".*"):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)

    def download(self, version: str, cache_dir: Path) -> Path:
        """Resolve ``version`` with stock huggingface_hub (offline, from this registry); the
        registry is already an HF cache, so its snapshot is read in place (nothing is copied;
        ``cache_dir`` is for targets that download)."""
        from huggingface_hub import hf_hub_download

        def get(name: str) -> Path:
            try:
                return Path(
                    hf_hub_download(
                        self.repo_id,
                        name,
                        revision=version,
                        cache_dir=self.root,
                        local_files_only=True,
                    )
                )
            except Exception as exc:
                raise CheckFailed(
                    f"{name} at {version} cannot be loaded from {self.describe()}: {type(exc).__name__}",
                    hint="the registry is incomplete or was modified",
                ) from None

        manifest = read_manifest(get("manifest.json").read_bytes(), source=self.describe())
        for name in manifest.files:
            get(name)  # resolvable through refs/ and snapshots/ the way stock loaders do it
        return get("manifest.json").parent


def _sha256(path: Path) -> str:
    return hash_file(path)[0]


def _copy_unchanged(f: Any, blob: Path, *, tmp_dir: Path) -> bool:
    """Copy ``f``'s source with the kernel (no second hash) when it is provably the file that
    was hashed: the same identity before and after the copy. False when it is not."""
    if f.source is None or f.source_id is None or file_id(f.source) != f.source_id:
        return False
    fd, tmp = tempfile.mkstemp(prefix="blob-", dir=tmp_dir)
    os.close(fd)
    try:
        shutil.copyfile(f.source, tmp, follow_symlinks=False)  # copy_file_range / sendfile
        with open(tmp, "rb") as out:
            os.fsync(out.fileno())
        if file_id(f.source) != f.source_id or os.path.getsize(tmp) != f.size:
            return False  # it changed meanwhile: copy it again, hashing
        os.chmod(tmp, 0o644)
        os.replace(tmp, blob)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _copy_verified(f: Any, blob: Path, *, tmp_dir: Path) -> None:
    """Stream ``f`` into ``blob`` through a temp file, hashing as it goes; rename when it matches."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix="blob-", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out, f.open() as src:
            while block := src.read(CHUNK):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != f.sha256:
            raise ModelkitError(
                f"{f.path} changed while it was being released (sha256 mismatch)",
                hint="do not modify the run directory during a release; re-run",
            )
        os.replace(tmp, blob)
    finally:
        Path(tmp).unlink(missing_ok=True)
