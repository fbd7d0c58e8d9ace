"""Verify a release: remote metadata vs manifest, a clean-cache download, hashes, weights load
(either layout; the load check holds one shard in memory at a time)."""

from __future__ import annotations

import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelkit.errors import CheckFailed, RunDirError
from modelkit.release.files import FileId, file_id
from modelkit.release.loadcheck import check_loads, import_load_check, load_whole, re_evaluate
from modelkit.release.package import MANIFEST, read_manifest
from modelkit.release.paths import check_relpath
from modelkit.release.records import Manifest, ReleaseRecord
from modelkit.release.reports import VerifyReport
from modelkit.release.signing import PUBLIC_KEY, SIGNATURE, verify_manifest
from modelkit.release.version import parse_version
from modelkit.weights import read_weights_record
from modelkit.weights.hashing import hash_file, in_threads
from modelkit.weights.layout import WEIGHTS_FILE_RE


def check_snapshot(
    snapshot: Path, manifest: Manifest, *, written: dict[str, FileId] | None = None
) -> list[str]:
    """Hash every downloaded file against the manifest (files concurrently, one thread per
    core); returns the problems. A file in ``written`` that is still the very file written
    (and hashed) while releasing (same device, inode, size and mtime) is taken at the
    manifest's hash instead of being read again."""
    entries = [
        (name, want, snapshot / check_relpath(name, source=MANIFEST))  # read only (HF caches link)
        for name, want in sorted(manifest.files.items())
    ]

    def hashed(entry: tuple[str, Any, Path]) -> tuple[str, int] | None:
        name, want, p = entry
        if not p.is_file():
            return None
        if written and written.get(name) == file_id(p):
            return want.sha256, p.stat().st_size
        return hash_file(p)

    problems = []
    for (name, want, _), found in zip(entries, in_threads(hashed, entries), strict=True):
        if found is None:
            problems.append(f"{name}: not downloaded")
            continue
        sha, size = found
        if size != want.size:
            problems.append(f"{name}: size {size} != manifest {want.size}")
        if sha != want.sha256:
            problems.append(f"{name}: sha256 {sha[:12]}… != manifest {want.sha256[:12]}…")
    return problems


def check_tag(target: Any, version: str, commit: str) -> tuple[ReleaseRecord | None, list[str]]:
    """The release record of ``version`` and the problems with the tag against it.

    The record (written at release time, beside the refs) names the commit the tag was
    created on; a tag that points elsewhere now was moved or deleted and re-created.
    """
    reader = getattr(target, "read_release_record", None)
    record = reader(version) if reader is not None else None
    if record is None:
        return None, []
    if record.error is not None:
        return record, [f"release record: {record.error}"]
    if record.commit != commit:
        return record, [
            f"tag {version} points at {commit[:12]} but was released on "
            f"{str(record.commit)[:12]}: the tag was moved or re-created"
        ]
    return record, []


def check_weights_agree(snapshot: Path, manifest: Manifest) -> list[str]:
    """run.json's record of the weights vs the manifest: every weights file's sha256 (the
    files themselves were hashed against the manifest) and the weights' identity."""
    try:
        record = read_weights_record(snapshot)
    except RunDirError as exc:  # a malformed run.json in a release: a failed check
        return [f"run.json: {exc.message}"]
    if record is None or not record.files:
        return ["run.json records no weights_sha256 for the weights"]
    listed = {
        name: entry.sha256 for name, entry in manifest.files.items() if WEIGHTS_FILE_RE.match(name)
    }
    problems = [
        f"{name} sha256 {str(listed.get(name))[:12]}… (manifest) != run.json weights.files "
        f"({str(record.files.get(name))[:12]}…)"
        for name in sorted(set(listed) | set(record.files))
        if listed.get(name) != record.files.get(name)
    ]
    claim = manifest.run.weights_sha256
    if claim != record.weights_sha256:
        problems.append(
            f"manifest run.weights_sha256 {str(claim)[:12]}… != run.json weights_sha256 "
            f"({str(record.weights_sha256)[:12]}…)"
        )
    return problems


UNSIGNED = "the release is not signed (no manifest.sig / signer.pub)"


def check_signature(
    snapshot: Path,
    *,
    record: ReleaseRecord | None,
    require: bool,
    trusted_key: bytes | None,
) -> tuple[str | None, list[str]]:
    """Check manifest.sig when present; ``(signer fingerprint or None, problems)``."""
    sig, pub = snapshot / SIGNATURE, snapshot / PUBLIC_KEY
    if not sig.is_file() or not pub.is_file():
        if require or trusted_key is not None:
            return None, [UNSIGNED]
        if record and record.signer:
            return None, [
                f"the release record says it was signed by {record.signer}, "
                "but the signature is gone"
            ]
        return None, []
    signer = verify_manifest(
        (snapshot / MANIFEST).read_bytes(),
        bundle=sig.read_bytes(),
        public_key=pub.read_bytes(),
        trusted_key=trusted_key,
    )
    if record and record.signer and record.signer != signer:
        return signer, [f"signed by {signer}, but the release record names {record.signer}"]
    return signer, []


def verify_release(
    target: Any,
    version: str,
    *,
    project: Any = None,
    expected_manifest: Manifest | None = None,
    evaluate: bool = False,
    require_signature: bool = False,
    public_key: bytes | None = None,
    written: dict[str, FileId] | None = None,
) -> VerifyReport:
    """Re-download ``version`` into a clean cache and check it; CheckFailed when anything is off.

    In order: the tag vs the release record; every file's size and sha256 vs the manifest
    (remote and downloaded); run.json's record of the weights vs the manifest; the signature;
    the model rebuilds on ``meta`` and every shard loads into it (strict, one shard in memory
    at a time); ``evaluate`` re-evaluates the whole model. ``report.checks`` lists them.
    """
    parse_version(version)
    commit = _tagged_commit(target, version)
    record, problems = check_tag(target, version, commit)
    checks = _tag_checked(version, commit, record=record, problems=problems)
    evaluated = None
    with tempfile.TemporaryDirectory(prefix="modelkit-verify-") as cache:
        snapshot = target.download(version, Path(cache))
        with ThreadPoolExecutor(1, thread_name_prefix="modelkit-verify") as one:
            checked = one.submit(
                _check_files, target, version, snapshot, record=record,
                expected=expected_manifest, log=checks, problems=problems, written=written,
            )  # fmt: skip
            import_load_check()  # torch meanwhile: it reads nothing, the load waits for the hashes
            manifest = checked.result()
        signer = _check_signed(
            snapshot, record=record, problems=problems, log=checks,
            require=require_signature, trusted_key=public_key,
        )  # fmt: skip
        _raise_problems(target, version, problems)
        num_parameters = check_loads(target, version, snapshot, project=project, log=checks)
        if evaluate:
            model = load_whole(target, version, snapshot, project=project)
            evaluated = re_evaluate(snapshot, model, project=project)
            checks.append(f"re-evaluated {evaluated.metric} == {evaluated.file}")
    return VerifyReport(
        target=target.describe(), repo_id=target.repo_id, version=version, commit=commit,
        release_record=record, signer=signer,
        files={name: f.size for name, f in manifest.files.items()},
        num_parameters=num_parameters, eval=evaluated, checks=checks,
    )  # fmt: skip


def _tag_checked(
    version: str, commit: str, *, record: ReleaseRecord | None, problems: list[str]
) -> list[str]:
    """What the tag check established (nothing when it found a problem)."""
    if record is None:
        return [f"tag {version} -> {commit[:12]} (no release record: cannot tell if it moved)"]
    if problems:
        return []
    return [f"tag {version} -> {commit[:12]}, the commit recorded at release time"]


def _tagged_commit(target: Any, version: str) -> str:
    state = target.state()
    if version not in state.tags:
        raise CheckFailed(
            f"{target.describe()} has no release {version}",
            hint="released versions: " + (", ".join(sorted(state.tags)) or "none"),
        )
    return str(state.tags[version])


def _check_files(
    target: Any,
    version: str,
    snapshot: Path,
    *,
    record: ReleaseRecord | None,
    expected: Manifest | None,
    problems: list[str],
    log: list[str],
    written: dict[str, FileId] | None = None,
) -> Manifest:
    """The manifest (vs the release record and ``expected``), every file vs the manifest, and
    run.json's record of the weights vs the manifest; appends problems and what was checked."""
    manifest_bytes = (snapshot / MANIFEST).read_bytes()
    manifest = read_manifest(manifest_bytes, source=target.describe())
    if expected is not None and manifest.document != expected.document:
        problems.append("the remote manifest differs from the one just released")
    if manifest.version != version:
        problems.append(f"manifest names version {manifest.version}, not {version}")
    recorded = record.manifest_sha256 if record is not None else None
    if recorded not in (None, hashlib.sha256(manifest_bytes).hexdigest()):
        problems.append("manifest.json differs from the one recorded at release time")
    elif recorded:
        log.append("manifest.json sha256 == the release record's")
    if hasattr(target, "check_metadata"):
        problems += target.check_metadata(version, manifest)
        log.append("remote sizes and sha256 / blob ids == manifest")
    problems += check_snapshot(snapshot, manifest, written=written)
    log.append(
        f"{len(manifest.files)} downloaded files: size and sha256 == manifest"
        + (f" ({len(written)} hashed while they were written)" if written else "")
    )
    weight_problems = check_weights_agree(snapshot, manifest)
    problems += weight_problems
    if not weight_problems:
        log.append(
            "weights files sha256 == run.json weights.files == manifest's; "
            "run.json weights_sha256 == manifest's"
        )
    return manifest


def _check_signed(
    snapshot: Path,
    *,
    record: ReleaseRecord | None,
    problems: list[str],
    log: list[str],
    require: bool,
    trusted_key: bytes | None,
) -> str | None:
    """The signature step (skipped when something else is wrong already)."""
    if problems:
        return None
    signer, sig_problems = check_signature(
        snapshot, record=record, require=require, trusted_key=trusted_key
    )
    problems += sig_problems
    if signer and not sig_problems:
        log.append(
            f"signature (model-signing, manifest.sig) by {signer}"
            + (" == the trusted key" if trusted_key is not None else "")
        )
    return signer


def _raise_problems(target: Any, version: str, problems: list[str]) -> None:
    if not problems:
        return
    unsigned = problems == [UNSIGNED]  # nothing wrong but the signature you asked for
    raise CheckFailed(
        f"{target.describe()}@{version} failed verification: " + "; ".join(problems),
        hint="it was released without --sign-key: do not trust it as signed "
        "(release a signed version, or verify without --require-signature/--public-key)"
        if unsigned
        else "the release was modified or is incomplete; do not use it",
    )
