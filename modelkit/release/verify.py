"""Verify a release: remote metadata vs manifest, a clean-cache download, hashes, weights load."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from modelkit.errors import CheckFailed
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


def verify_release(
    target: Any,
    version: str,
    *,
    project: Any = None,
    expected_manifest: dict[str, Any] | None = None,
    evaluate: bool = False,
) -> dict[str, Any]:
    """Re-download ``version`` into a clean cache and check it; CheckFailed when anything is off."""
    from modelkit.models.weights import load_model_from_dir
    from modelkit.release.version import parse_version

    parse_version(version)
    state = target.state()
    if version not in state.tags:
        raise CheckFailed(
            f"{target.describe()} has no release {version}",
            hint="released versions: " + (", ".join(sorted(state.tags)) or "none"),
        )
    report: dict[str, Any] = {
        "target": target.describe(),
        "repo_id": target.repo_id,
        "version": version,
        "commit": state.tags[version],
    }
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelkit-verify-") as cache:
        snapshot = target.download(version, Path(cache))
        manifest = read_manifest((snapshot / MANIFEST).read_bytes(), source=target.describe())
        if expected_manifest is not None and manifest != expected_manifest:
            problems.append("the remote manifest differs from the one just released")
        if manifest.get("version") != version:
            problems.append(f"manifest names version {manifest.get('version')}, not {version}")
        if hasattr(target, "check_metadata"):
            problems += target.check_metadata(version, manifest)
        problems += check_snapshot(snapshot, manifest)
        report["files"] = {k: v["size"] for k, v in manifest["files"].items()}
        if problems:
            raise CheckFailed(
                f"{target.describe()}@{version} failed verification: " + "; ".join(problems),
                hint="the release was modified or is incomplete; do not use it",
            )
        try:
            model, _ = load_model_from_dir(snapshot, project=project)
        except Exception as exc:
            raise CheckFailed(
                f"{target.describe()}@{version}: the weights do not load: {exc}",
                hint="the release's config.json and model.safetensors disagree",
            ) from None
        report["num_parameters"] = sum(p.numel() for p in model.parameters())
        if evaluate:
            report["eval"] = _re_evaluate(snapshot, model, project=project)
    report["ok"] = True
    return report


def _re_evaluate(snapshot: Path, model: Any, *, project: Any) -> dict[str, Any]:
    """Evaluate the downloaded weights on the run's data; must reproduce eval.json's accuracy."""
    from modelkit.data import load_dataset
    from modelkit.training.evaluate import evaluate

    recorded = json.loads((snapshot / "eval.json").read_text(encoding="utf-8"))
    cfg = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    spec = recorded.get("data", {}).get("spec") or cfg["modelkit"]["train"]["data"]
    train = cfg["modelkit"].get("train") or {}
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
    return {"accuracy": result["accuracy"], "recorded": recorded["accuracy"], "spec": spec}
