"""Verify a release: remote metadata vs manifest, a clean-cache download, hashes, weights load."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, CheckFailed, NotImportable
from modelkit.release.package import MANIFEST, hash_file, read_manifest


def check_snapshot(snapshot: Path, manifest: dict[str, Any]) -> list[str]:
    """Hash every downloaded file against the manifest; returns the problems."""
    problems = []
    for name, want in sorted(manifest["files"].items()):
        p = snapshot / name
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
    """The weights' sha256 vs run.json's ``weights_sha256`` and the manifest's (file + run)."""
    actual = hash_file(snapshot / "model.safetensors")[0]
    try:
        run = json.loads((snapshot / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = {}
    claims = {
        "run.json weights_sha256": run.get("weights_sha256"),
        "manifest files.model.safetensors": manifest["files"]
        .get("model.safetensors", {})
        .get("sha256"),
        "manifest run.weights_sha256": (manifest.get("run") or {}).get("weights_sha256"),
    }
    return [
        f"model.safetensors sha256 {actual[:12]}… != {where} ({str(value)[:12]}…)"
        for where, value in claims.items()
        if value != actual
    ]


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

    Checks, in order: the tag still points at the commit recorded at release time; every
    file's size and sha256 against the manifest (remote metadata and the download); the
    weights' sha256 against run.json and the manifest; the signature (when present, or
    required); the model rebuilds from its importable reference and the weights load.
    ``report["checks"]`` lists what was checked.
    """
    from modelkit.loading import check_weights
    from modelkit.models.weights import load_model_from_dir
    from modelkit.release.version import parse_version

    parse_version(version)
    state = target.state()
    if version not in state.tags:
        raise CheckFailed(
            f"{target.describe()} has no release {version}",
            hint="released versions: " + (", ".join(sorted(state.tags)) or "none"),
        )
    commit = state.tags[version]
    report: dict[str, Any] = {
        "target": target.describe(),
        "repo_id": target.repo_id,
        "version": version,
        "commit": commit,
    }
    checks: list[str] = []
    record, problems = check_tag(target, version, commit)
    if record is None:
        checks.append(
            f"tag {version} -> {commit[:12]} (no release record: cannot tell if it moved)"
        )
    elif not problems:
        checks.append(f"tag {version} -> {commit[:12]}, the commit recorded at release time")
    report["release_record"] = record
    with tempfile.TemporaryDirectory(prefix="modelkit-verify-") as cache:
        snapshot = target.download(version, Path(cache))
        manifest_bytes = (snapshot / MANIFEST).read_bytes()
        manifest = read_manifest(manifest_bytes, source=target.describe())
        if expected_manifest is not None and manifest != expected_manifest:
            problems.append("the remote manifest differs from the one just released")
        if manifest.get("version") != version:
            problems.append(f"manifest names version {manifest.get('version')}, not {version}")
        if record and record.get("manifest_sha256") not in (
            None,
            hashlib.sha256(manifest_bytes).hexdigest(),
        ):
            problems.append("manifest.json differs from the one recorded at release time")
        elif record and record.get("manifest_sha256"):
            checks.append("manifest.json sha256 == the release record's")
        if hasattr(target, "check_metadata"):
            problems += target.check_metadata(version, manifest)
            checks.append("remote sizes and sha256 / blob ids == manifest")
        problems += check_snapshot(snapshot, manifest)
        checks.append(f"{len(manifest['files'])} downloaded files: size and sha256 == manifest")
        if (snapshot / "model.safetensors").is_file():
            weight_problems = check_weights_agree(snapshot, manifest)
            problems += weight_problems
            if not weight_problems:
                checks.append("model.safetensors sha256 == run.json weights_sha256 == manifest's")
        signer, sig_problems = (
            check_signature(
                snapshot, record=record, require=require_signature, trusted_key=public_key
            )
            if not problems
            else (None, [])
        )
        problems += sig_problems
        report["signer"] = signer
        if signer and not sig_problems:
            checks.append(
                f"signature (model-signing, manifest.sig) by {signer}"
                + (" == the trusted key" if public_key is not None else "")
            )
        report["files"] = {k: v["size"] for k, v in manifest["files"].items()}
        if problems:
            unsigned = problems == [UNSIGNED]  # nothing wrong but the signature you asked for
            raise CheckFailed(
                f"{target.describe()}@{version} failed verification: " + "; ".join(problems),
                hint="it was released without --sign-key: do not trust it as signed "
                "(release a signed version, or verify without --require-signature/--public-key)"
                if unsigned
                else "the release was modified or is incomplete; do not use it",
            )
        try:
            check_weights(snapshot)
            model, cfg = load_model_from_dir(snapshot, project=project)
        except BadInputError as exc:
            if not isinstance(exc, NotImportable):
                raise CheckFailed(
                    f"{target.describe()}@{version}: the weights do not load: {exc.message}",
                    hint=exc.hint or "the release's config.json and model.safetensors disagree",
                ) from None
            raise BadInputError(  # the release may be fine: this environment lacks the model
                f"{target.describe()}@{version}: every hash matches, but the model cannot be "
                f"rebuilt here: {exc.message}",
                hint=exc.hint,
            ) from None
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise CheckFailed(
                f"{target.describe()}@{version}: the weights do not load: {message}",
                hint=getattr(exc, "hint", None)
                or "the release's config.json and model.safetensors disagree",
            ) from None
        ref = (cfg.get("modelkit") or {}).get("reference") or {}
        checks.append(
            f"the model rebuilds from {ref.get('ref') or (cfg.get('modelkit') or {}).get('model')}"
            " and the weights load (strict)"
        )
        report["num_parameters"] = sum(p.numel() for p in model.parameters())
        if evaluate:
            report["eval"] = _re_evaluate(snapshot, model, project=project)
            checks.append(f"re-evaluated accuracy == {report['eval']['file']}")
    report["checks"] = checks
    report["ok"] = True
    return report


def _re_evaluate(snapshot: Path, model: Any, *, project: Any) -> dict[str, Any]:
    """Evaluate the downloaded weights on the run's data; must reproduce eval.json's accuracy."""
    from modelkit.data import load_dataset
    from modelkit.release.package import evaluation_files
    from modelkit.training.evaluate import evaluate

    files = evaluation_files(snapshot)  # eval.json first; else the first evals/*.json
    if not files:
        raise CheckFailed(
            "cannot re-evaluate: the release holds no evaluation", hint="verify without --eval"
        )
    recorded = json.loads(files[0].read_text(encoding="utf-8"))
    cfg = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    train = (cfg.get("modelkit") or {}).get("train") or {}
    spec = (recorded.get("data") or {}).get("spec") or train.get("data")
    if not spec:
        raise CheckFailed(
            "cannot re-evaluate: the release does not record which data it was evaluated on",
            hint="verify without --eval",
        )
    ds = load_dataset(
        spec,
        project=project,
        image_size=train.get("image_size", 0),
        channels=train.get("channels", 0),
        normalize=train.get("normalize"),
    )
    if ds.fingerprint != recorded.get("data", {}).get("fingerprint"):
        raise CheckFailed(
            f"data '{spec}' here has fingerprint {ds.fingerprint[:19]}…, the release was "
            f"evaluated on {str(recorded.get('data', {}).get('fingerprint'))[:19]}…",
            hint="re-evaluation needs the same data",
        )
    result = evaluate(model, ds.x_test, ds.y_test, num_classes=ds.num_classes, classes=ds.classes)
    if abs(result["accuracy"] - recorded["accuracy"]) > 1e-9:
        raise CheckFailed(
            f"re-evaluated accuracy {result['accuracy']:.6f} != released {recorded['accuracy']:.6f}",
            hint="the weights or the evaluation code changed",
        )
    return {
        "accuracy": result["accuracy"],
        "recorded": recorded["accuracy"],
        "spec": spec,
        "file": files[0].relative_to(snapshot).as_posix(),
    }
