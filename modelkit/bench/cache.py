"""Results reused across compares, keyed by what determines them.

A side's key is the sha256 of: the git *tree* of the code measured (not the commit: a rebase
or an amended message measures the same code), HEAD's benchmark files and selection and the
harness's own source (:func:`suite_digest`), the dependencies (HEAD's
lock and requirement files, the dependency tables of its ``pyproject.toml``, and every
distribution installed in the environment both sides run in), the lane (in the instruction lane
with its ``instruction_isa``) and device, and the
machine (:data:`~modelkit.bench.harness.FINGERPRINT_KEYS` plus CPU flags and valgrind).
Only the instruction lane reuses a REF side (counts are deterministic); the time lane always
re-measures both sides interleaved.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from modelkit.bench import harness, worktree
from modelkit.bench.harness import Fingerprint
from modelkit.bench.results import BenchmarkDoc, read_json
from modelkit.config import tomllib
from modelkit.errors import BadInputError
from modelkit.io import write_json_atomic

LOCK_PATTERNS = ("requirements*.txt", "constraints*.txt", "*.lock", "pylock*.toml")
KEY_FINGERPRINT = (*harness.FINGERPRINT_KEYS, "cpu_flags", "valgrind")


def suite_digest(suite: Path, *, markers: str | None, keyword: str | None) -> str:
    """sha256 over the suite's files and selection (a cache key part)."""
    h = hashlib.sha256()
    files = [suite] if suite.is_file() else sorted(p for p in suite.rglob("*") if p.is_file())
    for p in files:
        if "__pycache__" in p.parts:
            continue
        h.update(str(p.relative_to(suite if suite.is_dir() else suite.parent)).encode())
        h.update(p.read_bytes())
    h.update(f"m={markers}|k={keyword}|h={harness_digest()}".encode())
    return h.hexdigest()


def harness_digest() -> str:
    """sha256 of the harness's own source (what measures is part of what was measured)."""
    h = hashlib.sha256()
    for p in sorted(Path(harness.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """Where results are kept: ``$MODELKIT_CACHE/bench`` (default ``~/.cache/modelkit``)."""
    base = os.environ.get("MODELKIT_CACHE") or str(Path.home() / ".cache" / "modelkit")
    return Path(base) / "bench"


def _pyproject_dependencies(path: Path) -> Any:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.read_bytes().hex() if path.is_file() else None
    project = doc.get("project") or {}
    return [
        project.get("dependencies"),
        project.get("optional-dependencies"),
        doc.get("build-system"),
        doc.get("dependency-groups"),
    ]


def dependencies_digest(head_root: Path) -> str:
    """sha256 of what the code runs on: HEAD's lock/requirement files, its pyproject's
    dependency tables, and the distributions installed here (name and version)."""
    h = hashlib.sha256()
    for pattern in LOCK_PATTERNS:
        for p in sorted(head_root.glob(pattern)):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    deps = _pyproject_dependencies(head_root / "pyproject.toml")
    h.update(json.dumps(deps, sort_keys=True, default=str).encode())
    installed = sorted(
        f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()
    )
    h.update("\n".join(installed).encode())
    return h.hexdigest()


def key_parts(
    git_root: Path,
    commit: str,
    *,
    suite_sha: str,
    deps_sha: str,
    fingerprint: Fingerprint,
    lane: str,
    device: str,
    isa: str,
) -> dict[str, str]:
    """What a side's results depend on (see the module doc)."""
    machine = {k: getattr(fingerprint, k) for k in KEY_FINGERPRINT}
    # the instruction lane's counts follow the kernels MKL/oneDNN were allowed to pick
    lane = f"{lane}/{isa}" if lane == "instructions" else lane
    return {
        "tree": worktree.git_output(git_root, "rev-parse", f"{commit}^{{tree}}").strip(),
        "suite": suite_sha,
        "dependencies": deps_sha,
        "machine": hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest(),
        "lane": lane,
        "device": device,
    }


def key_of(parts: dict[str, str]) -> str:
    """The cache key of these parts (32 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load(key: str) -> tuple[BenchmarkDoc, Path] | None:
    """The cached results document for ``key`` and its path, or None (none, or unreadable:
    then the side is measured again)."""
    path = cache_dir() / f"{key}.json"
    try:
        return read_json(BenchmarkDoc, path), path
    except (OSError, ValueError, BadInputError):
        return None


def store(key: str, parts: dict[str, str], doc: dict[str, Any]) -> Path:
    """Write a results document under ``key`` (atomically; the key's parts inside)."""
    path = cache_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.setdefault("modelkit", {})["cache_key"] = {"key": key, **parts}
    write_json_atomic(path, doc)
    return path
