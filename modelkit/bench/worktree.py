"""Git side of the gate: resolve REF (a branch means its merge-base with HEAD), check it out into
a separate worktree, and describe HEAD's side (the working tree, uncommitted changes included)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelkit.errors import BadInputError, ModelkitError, did_you_mean

SHALLOW_HINT = (
    "this is a shallow clone: fetch the full history (actions/checkout with `fetch-depth: 0`, "
    "or `git fetch --unshallow origin`)"
)


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=check, timeout=120
        )
    except FileNotFoundError:
        raise ModelkitError("git is not installed", hint="install git") from None
    except subprocess.CalledProcessError as exc:
        first = (exc.stderr.strip().splitlines() or [""])[-1]
        raise ModelkitError(
            f"git {' '.join(args)} failed: {first}", hint="check the repo"
        ) from None


def git_output(root: Path, *args: str) -> str:
    """stdout of a git command in ``root`` (a failure raises :class:`ModelkitError`)."""
    return _git(root, *args).stdout


def repo_root(start: Path) -> Path:
    """The top of the git repository containing ``start``."""
    try:
        out = _git(start, "rev-parse", "--show-toplevel", check=False)
    except ModelkitError:
        raise
    if out.returncode != 0:
        raise BadInputError(
            f"{start} is not inside a git repository",
            hint="--compare needs git; run from your project's checkout (or use --baseline FILE)",
        )
    return Path(out.stdout.strip())


@dataclass(frozen=True)
class HeadState:
    """HEAD's side: the working tree at ``root`` (its commit, and whether it has changes)."""

    root: Path
    commit: str | None
    dirty: bool
    changed: list[str]


def head_state(root: Path) -> HeadState:
    """Describe the working tree: HEAD's commit and the uncommitted changes it carries."""
    commit = _git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip()
    status = _git(root, "status", "--porcelain", "--untracked-files=no").stdout
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return HeadState(root=root, commit=commit or None, dirty=bool(changed), changed=changed)


@dataclass(frozen=True)
class ResolvedRef:
    """REF as asked for, the commit measured, and how it was found."""

    ref: str
    commit: str
    how: str


def is_shallow(root: Path) -> bool:
    """True in a shallow clone."""
    out = _git(root, "rev-parse", "--is-shallow-repository", check=False).stdout.strip()
    return out == "true"


def _commit_of(root: Path, ref: str) -> str | None:
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return out.stdout.strip() or None


def _is_branch(root: Path, name: str) -> bool:
    for full in (f"refs/heads/{name}", f"refs/remotes/{name}"):
        if _git(root, "show-ref", "--verify", "--quiet", full, check=False).returncode == 0:
            return True
    return False


def resolve_ref(root: Path, ref: str, *, head: str | None) -> ResolvedRef:
    """REF -> commit. A branch (local or ``origin/``) means the merge-base of HEAD and it."""
    if head is None:
        raise BadInputError("the repository has no commits yet", hint="commit first")
    name = ref
    commit = _commit_of(root, ref)
    if commit is None and _commit_of(root, f"origin/{ref}") is not None:
        name = f"origin/{ref}"
        commit = _commit_of(root, name)
    if commit is None:
        if is_shallow(root):
            raise BadInputError(f"unknown ref '{ref}' in this shallow clone", hint=SHALLOW_HINT)
        names = _git(root, "for-each-ref", "--format=%(refname:short)", check=False).stdout.split()
        branches = _git(
            root, "for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/remotes",
            check=False,
        ).stdout.split()  # fmt: skip
        listed = ", ".join(b for b in branches if not b.endswith("/HEAD")) or "none"
        raise BadInputError(
            f"unknown ref '{ref}'{did_you_mean(ref, names)}; branches here: {listed}",
            hint="give a branch, tag or commit that exists here (git fetch it first), or "
            "leave the ref out to compare against the default branch",
        )
    if _is_branch(root, name):
        mb = _git(root, "merge-base", head, commit, check=False)
        if mb.returncode != 0 or not mb.stdout.strip():
            hint = SHALLOW_HINT if is_shallow(root) else "the branches share no history"
            raise BadInputError(f"no merge-base between HEAD and '{ref}'", hint=hint)
        return ResolvedRef(ref=ref, commit=mb.stdout.strip(), how=f"merge-base of HEAD and {name}")
    return ResolvedRef(
        ref=ref, commit=commit, how="commit" if ref.startswith(commit[:7]) else "ref"
    )


def default_branch(root: Path) -> str:
    """The repository's default branch: ``origin/HEAD``'s target, else ``main``, else
    ``master`` (local or on ``origin``)."""
    out = _git(root, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    for name in ("main", "master"):
        for candidate in (name, f"origin/{name}"):
            if _is_branch(root, candidate):
                return candidate
    raise BadInputError(
        "no default branch: origin/HEAD is not set and there is no main or master branch",
        hint="name the ref to compare against (or `git remote set-head origin --auto`)",
    )


@contextlib.contextmanager
def ref_worktree(root: Path, commit: str) -> Iterator[Path]:
    """Check ``commit`` out into a throwaway worktree (removed afterwards)."""
    parent = Path(tempfile.mkdtemp(prefix="modelkit-bench-ref-"))
    path = parent / "ref"
    _git(root, "worktree", "add", "--detach", "--force", str(path), commit)
    try:
        yield path
    finally:
        _git(root, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(parent, ignore_errors=True)
        _git(root, "worktree", "prune", check=False)
