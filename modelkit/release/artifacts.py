"""Declared artifacts: the files a user of the model needs besides its weights (tokenizer
files, a vocabulary, a processor config), released beside them under the manifest, the hashes
and the signature.

Three ways to declare them, all inside the run directory (a release never reads outside it):

* the run declared them: ``run.add_artifact(path)`` records them in run.json (``artifacts``:
  a list of paths relative to the run, or objects with a ``path``), released at that path;
* the run wrote them into its ``artifacts/`` folder: ``artifacts/tokenizer.json`` is released
  as ``tokenizer.json`` (beside ``config.json``, where ``AutoTokenizer.from_pretrained`` looks);
* the project lists globs, relative to the run directory, in pyproject.toml::

      [tool.modelkit.release]
      include = ["tokenizer*.json", "special_tokens_map.json", "vocab.txt"]

Each is a regular file inside the run reached through no link (:func:`run_member`); a name
that would replace one of the release's own files is refused.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from modelkit.errors import ConfigError, RunDirError
from modelkit.release.paths import run_member

ARTIFACTS_DIR = "artifacts"
RESERVED = ("README.md", "manifest.json", "manifest.sig", "signer.pub", ".gitattributes")


def include_patterns(project: Any) -> list[str]:
    """``[tool.modelkit.release] include``: a list of globs (ConfigError when it is not)."""
    table = (getattr(project, "raw", None) or {}).get("release") or {}
    patterns = table.get("include", []) if isinstance(table, dict) else None
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(
            "[tool.modelkit.release] include must be a list of globs (strings)",
            hint='for example: include = ["tokenizer*.json", "vocab.txt"]',
        )
    return patterns


def _recorded(run_dir: Path, record: dict[str, Any]) -> list[str]:
    """The paths run.json's ``artifacts`` declares, relative to the run."""
    out = []
    for item in record.get("artifacts") or []:
        if isinstance(item, dict) and "path" not in item and isinstance(item.get("name"), str):
            continue  # run.add_artifact's entry: its file lies in artifacts/, released below
        path = item.get("path") if isinstance(item, dict) else item
        if not isinstance(path, str) or not path:
            raise RunDirError(
                f"{run_dir}/run.json: 'artifacts' holds {item!r}, not a path",
                hint="declare artifacts with run.add_artifact(path)",
            )
        p = Path(path)
        if p.is_absolute():
            root = Path(run_dir).resolve()
            if not p.resolve().is_relative_to(root):
                raise RunDirError(
                    f"artifact {path} is outside the run {run_dir}",
                    hint="save the file into the run directory, then declare it",
                )
            p = p.resolve().relative_to(root)
        out.append(PurePosixPath(p).as_posix())
    return out


def _globbed(run_dir: Path, patterns: list[str]) -> list[str]:
    """Files of the run (not under a link) matching any ``include`` glob."""
    found = []
    for p in sorted(Path(run_dir).rglob("*")):
        rel = p.relative_to(run_dir).as_posix()
        if p.is_file() and any(fnmatch.fnmatchcase(rel, pat) for pat in patterns):
            found.append(rel)
    return found


def declared_artifacts(
    run_dir: Path, *, record: dict[str, Any], project: Any, released: set[str]
) -> dict[str, Path]:
    """``{release name: file}`` of every declared artifact; ``released``: the names the
    release already holds (weights, run files), which an artifact may not replace."""
    run_dir = Path(run_dir)
    wanted: dict[str, str] = {rel: rel for rel in _recorded(run_dir, record)}
    wanted |= {rel: rel for rel in _globbed(run_dir, include_patterns(project))}
    folder = run_dir / ARTIFACTS_DIR
    if folder.is_dir() and not folder.is_symlink():
        for p in sorted(folder.rglob("*")):
            if p.is_file() or p.is_symlink():
                rel = p.relative_to(run_dir).as_posix()
                wanted[rel.split("/", 1)[1]] = rel
    out: dict[str, Path] = {}
    for name, rel in sorted(wanted.items()):
        if name in released and rel == name:
            continue  # a glob that also matches a run file: released once, as itself
        if name in released or name in RESERVED:
            raise RunDirError(
                f"artifact {rel} would replace the release's own {name}",
                hint="rename the artifact",
            )
        out[name] = run_member(run_dir, rel)
    return out
