"""``release()``: check, package, publish (one commit), tag, verify — or plan it (dry run)."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from pathlib import Path
from typing import Any

from modelkit import __version__
from modelkit.errors import BadInputError, ModelkitError, RunDirError
from modelkit.gitinfo import git_info
from modelkit.release.files import Hashing
from modelkit.release.package import Package, build_package, require_evaluation
from modelkit.release.paths import run_member
from modelkit.release.records import MANIFEST, ReleaseRecord
from modelkit.release.remote import ParentMoved, Target, main_version
from modelkit.release.reports import PlannedFile, ReleasedFile, ReleasePlan, ReleaseResult
from modelkit.release.signing import PUBLIC_KEY, fingerprint
from modelkit.release.targets import parse_target
from modelkit.release.verify import verify_release
from modelkit.release.version import check_greater, parse_version
from modelkit.runs import GitInfo, latest_run, open_run
from modelkit.runs.typed import read_typed
from modelkit.weights import read_layout

CAS_ATTEMPTS = 8  # releases that may land first before this one gives up (Hub)


def resolve_run(run_dir: Path | str | None, *, project: Any) -> Path:
    """``--run``, else ``[tool.modelkit] run``, else the latest complete run under runs/."""
    if run_dir is not None:
        return Path(run_dir)
    if getattr(project, "run", None):
        return (project.root or Path.cwd()) / project.run
    latest = latest_run((getattr(project, "root", None) or Path.cwd()) / "runs")
    if latest is None:
        raise RunDirError(
            "no run to release: none given, none in [tool.modelkit] run, none under runs/",
            hint="pass --run RUN_DIR (train one with `modelkit train`)",
        )
    return latest


def _check_git(project: Any, *, allow_dirty: bool) -> GitInfo:
    info = read_typed(GitInfo, git_info(getattr(project, "root", None) or Path.cwd()), source="git")
    if allow_dirty:
        return info
    if info.root is None:
        raise BadInputError(
            "not inside a git repository: a release must record the code it came from",
            hint="commit your project to git, or pass --allow-dirty",
        )
    if info.dirty:
        raise BadInputError(
            "the git tree has uncommitted changes",
            hint="commit or stash them (git status), or pass --allow-dirty",
        )
    return info


def _card(
    run: Path, *, target: Target, version: str, project: Any, allow_incomplete: bool
) -> bytes:
    from modelkit.card import UsageTarget, card_incomplete, pin_usage, release_usage, validate_card

    path = run / "README.md"
    if not path.is_file():
        raise RunDirError(f"no model card in {run}", hint=f"write one: modelkit card {run}")
    run_member(run, "README.md")  # the card too: a regular file of the run, no link
    require_evaluation(run)
    text = path.read_text(encoding="utf-8")
    errors = validate_card(text)
    if errors:
        raise BadInputError(
            f"{path} metadata errors: " + "; ".join(errors),
            hint=f"fix them, or regenerate: modelkit card {run}",
        )
    unfilled = card_incomplete(text)
    if unfilled and not allow_incomplete:
        raise BadInputError(
            f"the card {path} has unfilled sections: " + ", ".join(unfilled),
            hint=f"write them in MODEL_CARD.md, run `modelkit card {run}`, "
            "or pass --allow-incomplete-card",
        )
    root = getattr(target, "root", None)
    where = UsageTarget(
        kind="local" if target.kind == "local" else "hub",
        repo_id=target.repo_id,
        version=version,
        registry=str(Path(root).resolve()) if root is not None else None,
    )
    return pin_usage(text, usage=release_usage(run, where, project=project)).encode("utf-8")


def prepare(
    version: str,
    *,
    run_dir: Path | str | None = None,
    target: str | None = None,
    repo_id: str | None = None,
    project: Any = None,
    allow_dirty: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    retry: Any = None,
    sign_key: Path | str | None = None,
    allow_incomplete_card: bool = False,
) -> tuple[Package, Target, Any, GitInfo]:
    """Every check a release makes before it writes anything. The weights are hashed in the
    background meanwhile (:func:`_hash_weights`): the card's checks (and the import of torch
    they imply) overlap the hash pass."""
    parse_version(version)
    run = resolve_run(run_dir, project=project)
    with _hash_weights(run) as hashing:
        git = _check_git(project, allow_dirty=allow_dirty)
        record = open_run(run).run_record()
        tgt = parse_target(
            target,
            project=project,
            repo_id=repo_id,
            model=record.model,
            endpoint=endpoint,
            token_required=not dry_run,
            retry=retry,
        )
        card = _card(
            run, target=tgt, version=version, project=project,
            allow_incomplete=allow_incomplete_card,
        )  # fmt: skip
        pkg = build_package(
            run, version=version, repo_id=tgt.repo_id, card=card, sign_key=sign_key,
            project=project, hashing=hashing,
        )  # fmt: skip
    state = tgt.state()
    return pkg, tgt, state, git


def _hash_weights(run: Path) -> Hashing:
    """Start hashing the run's weights files in the background (read only; nothing queued
    when the layout does not read: :func:`build_package` names the problem in its turn)."""
    try:
        names = read_layout(run).files
    except (ModelkitError, OSError):
        names = []
    return Hashing(run, names)


def _identical(tgt: Target, commit: str, pkg: Package) -> bool:
    remote = tgt.files_at(commit)
    m = remote.get(MANIFEST)
    return m is not None and (
        m.sha256 == pkg.file("manifest.json").sha256
        or (m.git_oid is not None and m.git_oid == pkg.file("manifest.json").git_oid)
    )


def plan(pkg: Package, tgt: Target, state: Any, git: GitInfo) -> ReleasePlan:
    """The dry-run plan: files, sizes, regular vs LFS, the card's diff against the remote, the tag."""
    remote_card = tgt.read_file(state.head, "README.md") if state.head else None
    new_card = pkg.file("README.md").data or b""
    diff = list(
        difflib.unified_diff(
            (remote_card or b"").decode("utf-8", "replace").splitlines(),
            new_card.decode("utf-8").splitlines(),
            "remote/README.md" if remote_card is not None else "/dev/null",
            "release/README.md",
            lineterm="",
        )
    )
    return ReleasePlan(
        version=pkg.version,
        target=tgt.describe(),
        kind=tgt.kind,
        repo_id=pkg.repo_id,
        run_dir=str(pkg.run_dir),
        repo_exists=state.exists,
        parent_commit=state.head,
        released_versions=sorted(state.tags),
        tag=pkg.version,
        git_commit=git.commit,
        git_dirty=git.dirty,
        files=[PlannedFile.of(f) for f in pkg.files],
        total_size=pkg.total_size,
        card_diff=diff,
        signer=pkg.signer,
        steps=[
            *([] if state.exists else [f"create repo {pkg.repo_id}"]),
            f"one commit of {len(pkg.files)} files on parent {state.head or '(none)'}",
            f"tag {pkg.version} on that commit",
            f"record the release ({pkg.version} -> that commit, the manifest's sha256)",
            "verify: remote sha256/size vs manifest, clean-cache download, load weights",
        ],
    )


def _record(tgt: Target, version: str, *, commit: str, pkg: Package, resumed: bool) -> None:
    """Write the release record (the tag's commit, the manifest's sha256, the signer) once."""
    from datetime import datetime, timezone

    writer = getattr(tgt, "write_release_record", None)
    if writer is None or tgt.read_release_record(version) is not None:  # type: ignore[attr-defined]
        return
    manifest = tgt.read_file(commit, "manifest.json") if resumed else None
    sha = (
        hashlib.sha256(manifest).hexdigest()
        if manifest is not None
        else pkg.file("manifest.json").sha256
    )
    signer = pkg.signer
    if resumed:  # describe what the tag holds, not this run's package
        pub = tgt.read_file(commit, PUBLIC_KEY)
        signer = fingerprint(pub) if pub is not None else None
    writer(
        version,
        ReleaseRecord(
            version=version,
            repo_id=pkg.repo_id,
            commit=commit,
            manifest_sha256=sha,
            signer=signer,
            released=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            created_by=f"modelkit {__version__}",
        ),
    )


def _already_released(tgt: Target, state: Any, pkg: Package) -> bool:
    """True when the tag exists with exactly this package (a re-run: only verify); a tag with
    other content is a refusal (tags never move)."""
    at = state.tags.get(pkg.version)
    if at is None:
        return False
    if not _identical(tgt, at, pkg):
        raise BadInputError(
            f"tag {pkg.version} already exists on {tgt.describe()} (commit {at[:12]})",
            hint="tags are never moved or deleted; release a new version",
        )
    return True


def _publish_in_order(tgt: Target, pkg: Package) -> tuple[str, bool]:
    """Commit + tag ``pkg`` so that versions only grow along ``main``: the order is decided
    on fresh refs under the target's lock (local registry) or by the commit's compare-and-swap
    on its parent (Hub: a lost race re-reads and decides again). ``(commit, already released)``."""
    version = pkg.version
    with tgt.serialised():
        for _ in range(CAS_ATTEMPTS):
            state = tgt.state()
            if _already_released(tgt, state, pkg):  # a concurrent twin published it
                return state.tags[version], True
            on_main = main_version(tgt, state.head)
            check_greater(version, [*state.tags, *filter(None, [on_main])], target=tgt.describe())
            try:
                commit = tgt.publish(pkg, parent=state.head)
            except ParentMoved:
                continue  # another release landed first: look again
            tgt.tag(version, commit)
            return commit, False
    raise ModelkitError(
        f"main of {tgt.describe()} kept moving: {CAS_ATTEMPTS} releases landed while {version} "
        "was being published; nothing was tagged",
        hint="re-run the release when the others are done",
    )


def release(
    version: str,
    *,
    run_dir: Path | str | None = None,
    target: str | None = None,
    repo_id: str | None = None,
    project: Any = None,
    allow_dirty: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    retry: Any = None,
    sign_key: Path | str | None = None,
    allow_incomplete_card: bool = False,
) -> ReleasePlan | ReleaseResult:
    """Release ``version`` of a run to a target; returns the plan (dry run) or the result.

    ``sign_key``: an elliptic-curve private key (PEM) to sign the manifest with
    (OpenSSF model-signing); ``allow_incomplete_card`` publishes a card with unfilled sections.
    """
    pkg, tgt, state, git = prepare(
        version, run_dir=run_dir, target=target, repo_id=repo_id, project=project,
        allow_dirty=allow_dirty, dry_run=dry_run, endpoint=endpoint, retry=retry,
        sign_key=sign_key, allow_incomplete_card=allow_incomplete_card,
    )  # fmt: skip
    resumed = _already_released(tgt, state, pkg)
    if not resumed:
        check_greater(version, state.tags, target=tgt.describe())
    if dry_run:
        return dataclasses.replace(plan(pkg, tgt, state, git), already_released=resumed)
    if resumed:
        commit = state.tags[version]
    else:
        commit, resumed = _publish_in_order(tgt, pkg)
    _record(tgt, version, commit=commit, pkg=pkg, resumed=resumed)
    return _verified(tgt, pkg, project=project, resumed=resumed, signed=sign_key is not None)


def _verified(
    tgt: Target, pkg: Package, *, project: Any, resumed: bool, signed: bool
) -> ReleaseResult:
    """Verify what was just released; the files this release wrote (and hashed while writing)
    are recognised by their identity instead of being hashed a second time."""
    written = {} if resumed else dict(getattr(tgt, "written", {}))
    report = verify_release(
        tgt,
        pkg.version,
        project=project,
        expected_manifest=pkg.manifest,
        require_signature=signed and not resumed,
        written=written,
    )
    return ReleaseResult(
        report,
        files=[ReleasedFile.of(f) for f in pkg.files],
        already_released=resumed,
        log=list(getattr(tgt, "log", [])),
    )
