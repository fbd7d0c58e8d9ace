"""The Hugging Face Hub target: one commit per release (a compare-and-swap on the ``main``
head it was built on), an immutable tag, release records on ``main``.

Every call retries transient failures (:mod:`modelkit.release.hub_client`); large files go
through the Hub's LFS path (pre-upload, batch, PUT, verify) before the commit, and a file the
Hub already holds is not uploaded again, so a release re-run after a dropped connection
uploads only what is missing and publishes nothing until the one commit lands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.release.hub_client import HubClient, RetryPolicy, is_transient, resolve_token
from modelkit.release.package import read_manifest
from modelkit.release.records import Manifest, ReleaseRecord
from modelkit.release.remote import ParentMoved, RemoteFile, RemoteState
from modelkit.release.signing import PUBLIC_KEY, SIGNATURE
from modelkit.release.version import parse_version

RECORDS = ".modelkit/releases"  # release records on main: the commit each tag was created on


class HubTarget(HubClient):
    """A model repo on the Hub (or any Hub-compatible endpoint: ``HF_ENDPOINT``)."""

    kind = "hub"

    @contextlib.contextmanager
    def serialised(self) -> Iterator[None]:
        """No lock on the Hub: the commit's ``parent_commit`` is the compare-and-swap."""
        yield

    # ------------------------------------------------------------------ reading
    def state(self) -> RemoteState:
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self.call("list refs", self.api.list_repo_refs, self.repo_id)
        except RepositoryNotFoundError:
            return RemoteState(exists=False, head=None)
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        return RemoteState(
            exists=True, head=head, tags={t.name: t.target_commit for t in refs.tags}
        )

    def files_at(self, revision: str) -> dict[str, RemoteFile]:
        info = self.call(
            "read model info",
            self.api.model_info,
            self.repo_id,
            revision=revision,
            files_metadata=True,
        )
        out = {}
        for s in info.siblings or []:
            out[s.rfilename] = RemoteFile(
                s.rfilename,
                s.size if s.size is not None else -1,
                s.lfs.sha256 if s.lfs else None,
                None if s.lfs else s.blob_id,
            )
        return out

    def read_file(self, revision: str, path: str) -> bytes | None:
        import tempfile

        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        with tempfile.TemporaryDirectory() as cache:
            try:
                p = self.call(
                    f"download {path}",
                    hf_hub_download,
                    self.repo_id,
                    path,
                    revision=revision,
                    cache_dir=cache,
                    endpoint=self.endpoint,
                    token=self._token or False,
                )
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
                return None
            return Path(p).read_bytes()

    # ------------------------------------------------------------------ writing
    def publish(self, package: Any, *, parent: str | None) -> str:
        """One atomic commit of the package on top of ``parent``; returns its oid.

        :class:`ParentMoved` when ``main`` is no longer ``parent`` (no repo: its initial
        commit), so the caller re-reads the refs and decides the order again."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.call("create repo", self.api.create_repo, self.repo_id, exist_ok=True)
        if parent is None:  # a new repo: build on its initial commit, if nobody released yet
            parent = self.state().head
            if parent is not None and set(self.files_at(parent)) - {".gitattributes"}:
                raise ParentMoved(self.describe(), None)
        existing = self.files_at(parent) if parent else {}
        if parent is not None and self._matches(existing, package):
            self.log.append("main already holds exactly these files; no new commit")
            return parent

        def operations() -> list[Any]:
            ops: list[Any] = []
            for f in package.files:
                op = CommitOperationAdd(
                    path_in_repo=f.path,
                    path_or_fileobj=f.data if f.data is not None else str(f.source),
                )
                op.upload_info.sha256 = bytes.fromhex(f.sha256)  # hashed once, while packaging
                ops.append(op)
            keep = {f.path for f in package.files} | {".gitattributes"}
            ops += [
                CommitOperationDelete(path_in_repo=p)
                for p in existing
                if p not in keep and not p.startswith(RECORDS + "/")
            ]
            return ops

        def commit() -> str:
            info = self.api.create_commit(
                self.repo_id,
                operations(),
                commit_message=f"Release {package.version}",
                commit_description=f"modelkit release; manifest sha256 {package.file('manifest.json').sha256}",
                parent_commit=parent,
            )
            return info.oid

        def landed() -> str | None:
            head = self.state().head
            if head and head != parent and self._matches(self.files_at(head), package):
                return head
            return None

        return self.ambiguous("commit", commit, landed, parent=parent)

    @staticmethod
    def _matches(remote: dict[str, RemoteFile], package: Any) -> bool:
        """True when ``remote`` holds exactly the package's files (by sha256 / git oid)."""
        for f in package.files:
            r = remote.get(f.path)
            if r is None or r.size != f.size:
                return False
            same = (
                (r.sha256 == f.sha256)
                if f.lfs
                else (r.git_oid == f.git_oid or r.sha256 == f.sha256)
            )
            if not same:
                return False
        extra = set(remote) - {f.path for f in package.files} - {".gitattributes"}
        return not {p for p in extra if not p.startswith(RECORDS + "/")}

    def tag(self, version: str, commit: str) -> None:
        """Create tag ``version`` on ``commit``; never moves an existing tag."""

        parse_version(version)

        def create() -> None:
            self.api.create_tag(self.repo_id, tag=version, revision=commit, exist_ok=False)

        def landed() -> bool | None:
            at = self.state().tags.get(version)
            if at is None:
                return None
            if at != commit:
                raise BadInputError(
                    f"tag {version} appeared on {self.describe()} at another commit ({at[:12]})",
                    hint="someone else released this version concurrently; nothing was moved",
                )
            return True

        self.ambiguous("create tag", create, landed)

    def download(self, version: str, cache_dir: Path) -> Path:
        """Download ``version`` into a clean cache with stock huggingface_hub; returns the snapshot dir."""
        from huggingface_hub import hf_hub_download

        def get(name: str) -> Path:
            return Path(
                self.call(
                    f"download {name}",
                    hf_hub_download,
                    self.repo_id,
                    name,
                    revision=version,
                    cache_dir=str(cache_dir),
                    endpoint=self.endpoint,
                    token=self._token or False,
                )
            )

        from huggingface_hub.errors import EntryNotFoundError

        m_path = get("manifest.json")
        manifest = read_manifest(m_path.read_bytes(), source=self.describe())
        for name in manifest.files:
            get(name)
        for name in (SIGNATURE, PUBLIC_KEY):  # present only in signed releases
            with contextlib.suppress(EntryNotFoundError):
                get(name)
        return m_path.parent

    # ------------------------------------------------------------ release records
    def read_release_record(self, version: str) -> ReleaseRecord | None:
        """The record written on ``main`` when ``version`` was released (None if none)."""
        data = self.read_file("main", f"{RECORDS}/{version}.json")
        if data is None:
            return None
        return ReleaseRecord.parse(data, source=f"{RECORDS}/{version}.json")

    def write_release_record(self, version: str, record: ReleaseRecord) -> None:
        """Commit ``.modelkit/releases/<version>.json`` to ``main`` (once; never replaced),
        on whatever head ``main`` has now (another release may land meanwhile: re-read)."""
        from huggingface_hub import CommitOperationAdd

        parse_version(version)
        path = f"{RECORDS}/{version}.json"
        data = record.to_json()
        for _ in range(self.retry.attempts):
            head = self.state().head
            if head is not None and path in self.files_at(head):
                return

            def commit(head: str | None = head) -> str:
                info = self.api.create_commit(
                    self.repo_id,
                    [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)],
                    commit_message=f"Release record {version}",
                    parent_commit=head,
                )
                return info.oid

            def landed() -> str | None:
                now = self.state().head
                return now if now and path in self.files_at(now) else None

            with contextlib.suppress(ParentMoved):
                self.ambiguous("commit the release record", commit, landed, parent=head)
                return
        raise ParentMoved(self.describe(), None)

    def check_metadata(self, version: str, manifest: Manifest) -> list[str]:
        """Compare the remote per-file sha256 (LFS) / git oid and size with the manifest."""
        remote = self.files_at(version)
        problems = []
        for name, want in manifest.files.items():
            r = remote.get(name)
            if r is None:
                problems.append(f"{name}: missing on the remote")
                continue
            if r.size != want.size:
                problems.append(f"{name}: remote size {r.size} != manifest {want.size}")
            if r.sha256 is not None and r.sha256 != want.sha256:
                problems.append(
                    f"{name}: remote sha256 {r.sha256[:12]}… != manifest {want.sha256[:12]}…"
                )
            if r.sha256 is None and want.git_oid and r.git_oid != want.git_oid:
                problems.append(f"{name}: remote blob id {str(r.git_oid)[:12]}… != manifest")
        return problems


__all__ = ["HubTarget", "RetryPolicy", "is_transient", "resolve_token"]
