"""Verify a release: remote metadata vs manifest, a clean-cache download, hashes, weights load
(either layout; the load check holds one shard in memory at a time)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, CheckFailed, ModelkitError, NotImportable, RunDirError
from modelkit.release.package import MANIFEST, read_manifest
from modelkit.release.paths import check_relpath
from modelkit.weights import read_layout, read_weights_record
from modelkit.weights.hashing import hash_file
from modelkit.weights.layout import WEIGHTS_FILE_RE


def check_snapshot(snapshot: Path, manifest: dict[str, Any]) -> list[str]:
    """Hash every downloaded file against the manifest; returns the problems."""
    problems = []
    for name, want in sorted(manifest["files"].items()):
        p = snapshot / check_relpath(name, source=MANIFEST)  # read only (HF caches link)
        if not p.is_file():
            problems.append(f"{name}: not downloaded")
            continue
        sha, size = hash_file(p)
        if size != want["size"]:
            problems.append(f"{name}: size {size} != manifest {want['size']}")
        if sha != want["sha256"]:
            problems.append(f"{name}: sha256 {sha[:12]}… != manifest {want['sha256'][:12]}…")
    return problems


def check_tag(target: Any, version: str, commit: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The release record of ``version`` and the problems with the tag against it.

    The record (written at release time, beside the refs) names the commit the tag was
    created on; a tag that points elsewhere now was moved or deleted and re-created.
    """
    reader = getattr(target, "read_release_record", None)
    record = reader(version) if reader is not None else None
    if record is None:
        return None, []
    if "error" in record:
        return record, [f"release record: {record['error']}"]
    if record.get("commit") != commit:
        return record, [
            f"tag {version} points at {commit[:12]} but was released on "
            f"{str(record.get('commit'))[:12]}: the tag was moved or re-created"
        ]
    return record, []


def check_weights_agree(snapshot: Path, manifest: dict[str, Any]) -> list[str]:
    """run.json's record of the weights vs the manifest: every weights file's sha256 (the
    files themselves were hashed against the manifest) and the weights' identity."""
    try:
        record = read_weights_record(snapshot)
    except RunDirError as exc:  # a malformed run.json in a release: a failed check
        return [f"run.json: {exc.message}"]
    if record is None or not record.files:
        return ["run.json records no weights_sha256 for the weights"]
    listed = {
        name: entry["sha256"]
        for name, entry in manifest["files"].items()
        if WEIGHTS_FILE_RE.match(name)
    }
    problems = [
        f"{name} sha256 {str(listed.get(name))[:12]}… (manifest) != run.json weights.files "
        f"({str(record.files.get(name))[:12]}…)"
        for name in sorted(set(listed) | set(record.files))
        if listed.get(name) != record.files.get(name)
    ]
    claim = (manifest.get("run") or {}).get("weights_sha256")
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
    record: dict[str, Any] | None,
    require: bool,
    trusted_key: bytes | None,
) -> tuple[str | None, list[str]]:
    """Check manifest.sig when present; ``(signer fingerprint or None, problems)``."""
    from modelkit.release.signing import PUBLIC_KEY, SIGNATURE, verify_manifest

    sig, pub = snapshot / SIGNATURE, snapshot / PUBLIC_KEY
    if not sig.is_file() or not pub.is_file():
        if require or trusted_key is not None:
            return None, [UNSIGNED]
        if record and record.get("signer"):
            return None, [
                f"the release record says it was signed by {record['signer']}, "
                "but the signature is gone"
            ]
        return None, []
    signer = verify_manifest(
        (snapshot / MANIFEST).read_bytes(),
        bundle=sig.read_bytes(),
        public_key=pub.read_bytes(),
        trusted_key=trusted_key,
    )
    if record and record.get("signer") and record["signer"] != signer:
        return signer, [f"signed by {signer}, but the release record names {record['signer']}"]
    return signer, []


def verify_release(
    target: Any,
    version: str,
    *,
    project: Any = None,
    expected_manifest: dict[str, Any] | None = None,
    evaluate: bool = False,
    require_signature: bool = False,
    public_key: bytes | None = None,
) -> dict[str, Any]:
    """Re-download ``version`` into a clean cache and check it; CheckFailed when anything is off.

    In order: the tag vs the release record; every file's size and sha256 vs the manifest
    (remote and downloaded); run.json's record of the weights vs the manifest; the signature;
    the model rebuilds on ``meta`` and every shard loads into it (strict, one shard in memory
    at a time); ``evaluate`` re-evaluates the whole model. ``report["checks"]`` lists them.
    """
    from modelkit.release.version import parse_version

    parse_version(version)
    commit = _tagged_commit(target, version)
    report: dict[str, Any] = {
        "target": target.describe(),
        "repo_id": target.repo_id,
        "version": version,
        "commit": commit,
    }
    record, problems = check_tag(target, version, commit)
    checks = _tag_checked(version, commit, record=record, problems=problems)
    report["release_record"] = record
    with tempfile.TemporaryDirectory(prefix="modelkit-verify-") as cache:
        snapshot = target.download(version, Path(cache))
        manifest = _check_files(
            target,
            version,
            snapshot,
            record=record,
            expected=expected_manifest,
            log=checks,
            problems=problems,
        )
        signer = _check_signed(
            snapshot,
            record=record,
            problems=problems,
            log=checks,
            require=require_signature,
            trusted_key=public_key,
        )
        report["signer"] = signer
        report["files"] = {k: v["size"] for k, v in manifest["files"].items()}
        _raise_problems(target, version, problems)
        report.update(_check_loads(target, version, snapshot, project=project, log=checks))
        if evaluate:
            model = _load_whole(target, version, snapshot, project=project)
            report["eval"] = _re_evaluate(snapshot, model, project=project)
            checks.append(f"re-evaluated {report['eval']['metric']} == {report['eval']['file']}")
    report["checks"] = checks
    report["ok"] = True
    return report


def _tag_checked(
    version: str, commit: str, *, record: dict[str, Any] | None, problems: list[str]
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
    record: dict[str, Any] | None,
    expected: dict[str, Any] | None,
    problems: list[str],
    log: list[str],
) -> dict[str, Any]:
    """The manifest (vs the release record and ``expected``), every file vs the manifest, and
    run.json's record of the weights vs the manifest; appends problems and what was checked."""
    manifest_bytes = (snapshot / MANIFEST).read_bytes()
    manifest = read_manifest(manifest_bytes, source=target.describe())
    if expected is not None and manifest != expected:
        problems.append("the remote manifest differs from the one just released")
    if manifest.get("version") != version:
        problems.append(f"manifest names version {manifest.get('version')}, not {version}")
    recorded = (record or {}).get("manifest_sha256")
    if recorded not in (None, hashlib.sha256(manifest_bytes).hexdigest()):
        problems.append("manifest.json differs from the one recorded at release time")
    elif recorded:
        log.append("manifest.json sha256 == the release record's")
    if hasattr(target, "check_metadata"):
        problems += target.check_metadata(version, manifest)
        log.append("remote sizes and sha256 / blob ids == manifest")
    problems += check_snapshot(snapshot, manifest)
    log.append(f"{len(manifest['files'])} downloaded files: size and sha256 == manifest")
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
    record: dict[str, Any] | None,
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


@contextlib.contextmanager
def _as_load_failure(target: Any, version: str) -> Iterator[None]:
    """A model that cannot be rebuilt here is exit 2 (the release may be fine); weights that
    do not load into it are a failed check (exit 3)."""
    where = f"{target.describe()}@{version}"
    default = "the release's config.json and its weights disagree"
    try:
        yield
    except NotImportable as exc:
        raise BadInputError(
            f"{where}: every hash matches, but the model cannot be rebuilt here: {exc.message}",
            hint=exc.hint,
        ) from None
    except ModelkitError as exc:
        raise CheckFailed(
            f"{where}: the weights do not load: {exc.message}", hint=exc.hint or default
        ) from None
    except Exception as exc:
        raise CheckFailed(f"{where}: the weights do not load: {exc}", hint=default) from None


def _check_loads(
    target: Any, version: str, snapshot: Path, *, project: Any, log: list[str]
) -> dict[str, Any]:
    """Build the model on ``meta`` and load every shard into it, one at a time."""
    from modelkit.models.weights import check_model_loads

    with _as_load_failure(target, version):
        layout = read_layout(snapshot)
        model, _, name = check_model_loads(snapshot, layout, project=project)
    shards = f"{len(layout.headers)} shards" if layout.index else layout.files[0]
    log.append(f"the model rebuilds from {name} and the weights load (strict, {shards})")
    return {"num_parameters": sum(p.numel() for p in model.parameters())}


def _load_whole(target: Any, version: str, snapshot: Path, *, project: Any) -> Any:
    from modelkit.models.weights import load_model_from_dir

    with _as_load_failure(target, version):
        return load_model_from_dir(snapshot, project=project, layout=read_layout(snapshot))[0]


def _re_evaluate(snapshot: Path, model: Any, *, project: Any) -> dict[str, Any]:
    """Evaluate the downloaded weights on the run's data by the run's task; must reproduce the
    released evaluation's primary metric (accuracy, perplexity, ...)."""
    import math

    from modelkit.data.batches import BatchSource
    from modelkit.release.package import evaluation_files
    from modelkit.runs import RunDir
    from modelkit.tasks import task_of
    from modelkit.training.evaluate import (
        _tensor_batches,
        accumulate,
        eval_transform,
        load_eval_data,
    )

    files = evaluation_files(snapshot)  # eval.json first; else the first evals/*.json
    if not files:
        raise CheckFailed(
            "cannot re-evaluate: the release holds no evaluation", hint="verify without --eval"
        )
    recorded = json.loads(files[0].read_text(encoding="utf-8"))
    record = RunDir(snapshot).run_record()
    task = task_of(record.raw)
    spec, train = _eval_spec(snapshot, recorded)
    ds = load_eval_data(
        spec, project=project, record=record, train_cfg=train, skip=False, batch_size=1024
    )
    batches = (
        ds.batches() if isinstance(ds, BatchSource) else _tensor_batches(ds.x_test, ds.y_test, 1024)
    )
    acc = accumulate(
        model, batches, task=task, acc=task.accumulator(ds), transform=eval_transform(record, model)
    )
    if ds.fingerprint != recorded.get("data", {}).get("fingerprint"):
        raise CheckFailed(
            f"data '{spec}' here has fingerprint {ds.fingerprint[:19]}…, the release was "
            f"evaluated on {str(recorded.get('data', {}).get('fingerprint'))[:19]}…",
            hint="re-evaluation needs the same data",
        )
    key = task.primary.key
    value, released = float(acc.summary()[key]), float(recorded[key])
    if not math.isclose(value, released, rel_tol=1e-6, abs_tol=1e-9):
        raise CheckFailed(
            f"re-evaluated {key} {value:.6f} != released {released:.6f}",
            hint="the weights or the evaluation code changed",
        )
    return {
        "metric": key,
        key: value,
        "value": value,
        "recorded": released,
        "spec": spec,
        "file": files[0].relative_to(snapshot).as_posix(),
    }


def _eval_spec(snapshot: Path, recorded: dict[str, Any]) -> tuple[str, Any]:
    """The data spec the release was evaluated on, and its training config (None: own loop)."""
    from types import SimpleNamespace

    cfg = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    train = (cfg.get("modelkit") or {}).get("train") or {}
    spec = (recorded.get("data") or {}).get("spec") or train.get("data")
    if not spec:
        raise CheckFailed(
            "cannot re-evaluate: the release does not record which data it was evaluated on",
            hint="verify without --eval",
        )
    shape = SimpleNamespace(
        image_size=train.get("image_size", 0),
        channels=train.get("channels", 0),
        normalize=train.get("normalize"),
    )
    return spec, shape if train else None
