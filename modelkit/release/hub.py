"""The Hugging Face Hub target: one atomic commit, an immutable tag, retries on 429/5xx everywhere.

* every call goes through :meth:`HubTarget.call`: 429 / 5xx / dropped connections are retried with
  exponential backoff (``Retry-After`` honoured);
* the commit is one ``create_commit(..., parent_commit=<head we read>)``; ``create_tag`` targets
  that commit's oid. Neither is retried blindly: after an ambiguous failure (no answer, 5xx) the
  refs are read first, so a commit or tag that did land is recognised instead of duplicated;
* the token comes from ``HF_TOKEN`` or ``hf auth login`` and is never printed or stored.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelkit.errors import BadInputError, CheckFailed, ModelkitError
from modelkit.release.targets import RemoteFile, RemoteState

T = TypeVar("T")
RECORDS = ".modelkit/releases"  # release records on main: the commit each tag was created on
TRANSIENT = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    attempts: int = 6
    base_s: float = 1.0
    max_s: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Defaults, or ``MODELKIT_RETRY_BASE_S`` / ``MODELKIT_RETRY_ATTEMPTS``."""
        return cls(
            attempts=int(os.environ.get("MODELKIT_RETRY_ATTEMPTS", cls.attempts)),
            base_s=float(os.environ.get("MODELKIT_RETRY_BASE_S", cls.base_s)),
        )


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """429/5xx answers, dropped or timed-out connections, and downloads that got no answer."""
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    if _status(exc) in TRANSIENT:
        return True
    if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError)):
        return True
    return isinstance(exc.__cause__ or exc.__context__, httpx2.TransportError)


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    value = getattr(resp, "headers", {}).get("Retry-After") if resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def resolve_token(*, required: bool) -> str | None:
    """``HF_TOKEN`` or the token saved by ``hf auth login`` (never printed)."""
    token = os.environ.get("HF_TOKEN") or None
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    if token is None and required:
        raise BadInputError(
            "no Hugging Face token found",
            hint="run `hf auth login` (or set HF_TOKEN to a write token), then re-run",
        )
    return token


class HubTarget:
    """A model repo on the Hub (or any Hub-compatible endpoint: ``HF_ENDPOINT``)."""

    kind = "hub"

    def __init__(
        self,
        repo_id: str,
        *,
        endpoint: str | None = None,
        token_required: bool = True,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the library never prints; the CLI reports
        self.repo_id = repo_id
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip(
            "/"
        )
        self._token = resolve_token(required=token_required)
        self.api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self.retry = retry or RetryPolicy.from_env()
        self._sleep = sleep
        self.log: list[str] = []  # what happened (retries, recoveries), for the report

    def describe(self) -> str:
        return f"hf://{self.repo_id}" + (
            "" if "huggingface.co" in self.endpoint else f" at {self.endpoint}"
        )

    # ------------------------------------------------------------------ retries
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``; retry transient failures with backoff; map the rest to typed errors."""
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        delay = self.retry.base_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
                if _status(exc) == 404 or _status(exc) is None:
                    raise
                raise self._typed(what, exc) from None
            except EntryNotFoundError as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.retry.attempts:
                    raise self._typed(what, exc) from None
                self.log.append(f"{what}: no answer; retry {attempt}")
                self._sleep(delay)
                delay = min(self.retry.max_s, delay * 2)
            except Exception as exc:
                if not is_transient(exc) or attempt == self.retry.attempts:
                    raise self._typed(what, exc) from None
                wait = _retry_after(exc)
                wait = min(self.retry.max_s, delay if wait is None else wait)
                self.log.append(f"{what}: {self._short(exc)}; retry {attempt} in {wait:.1f}s")
                self._sleep(wait)
                delay = min(self.retry.max_s, delay * 2)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ambiguous(self, what: str, fn: Callable[[], T], landed: Callable[[], T | None]) -> T:
        """Like :meth:`call` for a non-idempotent write: after a failure, look before retrying."""
        delay = self.retry.base_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                status = _status(exc)
                definite = status is not None and status not in TRANSIENT
                if attempt == self.retry.attempts or (definite and status not in (409, 412)):
                    raise self._typed(what, exc) from None
                if not definite:
                    wait = _retry_after(exc)
                    wait = min(self.retry.max_s, delay if wait is None else wait)
                    self._sleep(wait)
                    delay = min(self.retry.max_s, delay * 2)
                self.log.append(f"{what}: {self._short(exc)}; checking refs before retrying")
                done = landed()
                if done is not None:
                    self.log.append(f"{what}: it had landed; not repeating it")
                    return done
                if definite:  # 409/412 and it did not land: someone else moved the repo
                    raise self._typed(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _short(exc: BaseException) -> str:
        status = _status(exc)
        return f"HTTP {status}" if status else type(exc).__name__

    def _typed(self, what: str, exc: BaseException) -> ModelkitError:
        if isinstance(exc, ModelkitError):
            return exc
        status = _status(exc)
        detail = (str(exc).splitlines() or [""])[0][:200]
        if status in (401, 403):
            return BadInputError(
                f"the Hub refused {what} on {self.repo_id} (HTTP {status}): not authorised",
                hint="run `hf auth login` with a token that can write to this repo (or set HF_TOKEN)",
            )
        if is_transient(exc):
            return ModelkitError(
                f"{what} kept failing ({self._short(exc)}) after {self.retry.attempts} attempts",
                hint="no tag was created unless reported; re-run the same command (it is idempotent)",
            )
        return ModelkitError(f"{what} failed: {self._short(exc)}: {detail}", hint="see the message")

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
        """One atomic commit of the package on top of ``parent``; returns its oid."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.call("create repo", self.api.create_repo, self.repo_id, exist_ok=True)
        if parent is None:
            parent = self.state().head
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

        return self._ambiguous("commit", commit, landed)

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

        self._ambiguous("create tag", create, landed)

    def download(self, version: str, cache_dir: Path) -> Path:
        """Download ``version`` into a clean cache with stock huggingface_hub; returns the snapshot dir."""
        from huggingface_hub import hf_hub_download

        from modelkit.release.package import read_manifest

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

        from modelkit.release.signing import PUBLIC_KEY, SIGNATURE

        m_path = get("manifest.json")
        manifest = read_manifest(m_path.read_bytes(), source=self.describe())
        for name in manifest["files"]:
            get(name)
        for name in (SIGNATURE, PUBLIC_KEY):  # present only in signed releases
            with contextlib.suppress(EntryNotFoundError):
                get(name)
        return m_path.parent

    # ------------------------------------------------------------ release records
    def read_release_record(self, version: str) -> dict[str, Any] | None:
        """The record written on ``main`` when ``version`` was released (None if none)."""
        import json

        data = self.read_file("main", f"{RECORDS}/{version}.json")
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return {"error": f"{RECORDS}/{version}.json is not JSON"}

    def write_release_record(self, version: str, record: dict[str, Any]) -> None:
        """Commit ``.modelkit/releases/<version>.json`` to ``main`` (once; never replaced)."""
        import json

        from huggingface_hub import CommitOperationAdd

        path = f"{RECORDS}/{version}.json"
        data = (json.dumps(record, sort_keys=True, indent=2) + "\n").encode()
        head = self.state().head
        if head is not None and path in self.files_at(head):
            return

        def commit() -> str:
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

        self._ambiguous("commit the release record", commit, landed)

    def check_metadata(self, version: str, manifest: dict[str, Any]) -> list[str]:
        """Compare the remote per-file sha256 (LFS) / git oid and size with the manifest."""
        remote = self.files_at(version)
        problems = []
        for name, want in manifest["files"].items():
            r = remote.get(name)
            if r is None:
                problems.append(f"{name}: missing on the remote")
                continue
            if r.size != want["size"]:
                problems.append(f"{name}: remote size {r.size} != manifest {want['size']}")
            if r.sha256 is not None and r.sha256 != want["sha256"]:
                problems.append(
                    f"{name}: remote sha256 {r.sha256[:12]}… != manifest {want['sha256'][:12]}…"
                )
            if r.sha256 is None and want.get("git_oid") and r.git_oid != want["git_oid"]:
                problems.append(f"{name}: remote blob id {str(r.git_oid)[:12]}… != manifest")
        return problems


__all__ = ["CheckFailed", "HubTarget", "RetryPolicy", "is_transient", "resolve_token"]
