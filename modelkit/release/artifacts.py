"""Declared artifacts: the files a user of the model needs besides its weights (tokenizer
files, a vocabulary, a processor config), released beside them under the manifest, the hashes
and the signature.

Three ways to declare them, all inside the run directory (a release never reads outside it):

* the run declared them: ``run.add_artifact(path)`` copies the file into the run's
  ``artifacts/`` folder and records its name, sha256 and size in run.json (``artifacts``);
  ``artifacts/tokenizer.json`` is released as ``tokenizer.json`` (beside ``config.json``,
  where ``AutoTokenizer.from_pretrained`` looks), and must still match its recorded sha256;
* any other file in the run's ``artifacts/`` folder is released the same way;
* the project lists globs, relative to the run directory, in pyproject.toml::

      [tool.modelkit.release]
      include = ["tokenizer*.json", "special_tokens_map.json", "vocab.txt"]

Each is a regular file inside the run reached through no link (:func:`run_member`); a name
that would replace one of the release's own files is refused.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
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


def _recorded(record: Any) -> dict[str, tuple[str, str | None]]:
    """``{release name: (path in the run, recorded sha256)}`` of what ``run.add_artifact``
    recorded (run.json's ``artifacts``, typed by the run record: the file is
    ``artifacts/<name>``)."""
    return {a.name: (a.relpath, a.sha256) for a in getattr(record, "artifacts", ())}


def _globbed(run_dir: Path, patterns: list[str]) -> list[str]:
    """Files of the run (not under a link) matching any ``include`` glob."""
    found = []
    for p in sorted(Path(run_dir).rglob("*")):
        rel = p.relative_to(run_dir).as_posix()
        if p.is_file() and any(fnmatch.fnmatchcase(rel, pat) for pat in patterns):
            found.append(rel)
    return found


def declared_artifacts(
    run_dir: Path, *, record: Any, project: Any, released: set[str]
) -> dict[str, tuple[Path, str | None]]:
    """``{release name: (file, recorded sha256 or None)}`` of every declared artifact
    (``record``: the typed run record); ``released``: the names the release already holds (weights, run files), which an
    artifact may not replace."""
    run_dir = Path(run_dir)
    wanted: dict[str, tuple[str, str | None]] = {}
    folder = run_dir / ARTIFACTS_DIR
    if folder.is_dir() and not folder.is_symlink():
        for p in sorted(folder.rglob("*")):
            if p.is_file() or p.is_symlink():
                rel = p.relative_to(run_dir).as_posix()
                wanted[rel.split("/", 1)[1]] = (rel, None)
    wanted |= {rel: (rel, None) for rel in _globbed(run_dir, include_patterns(project))}
    wanted |= _recorded(record)
    out: dict[str, tuple[Path, str | None]] = {}
    for name, (rel, sha) in sorted(wanted.items()):
        if name in released and rel == name:
            continue  # a glob that also matches a run file: released once, as itself
        if name in released or name in RESERVED:
            raise RunDirError(
                f"artifact {rel} would replace the release's own {name}",
                hint="rename the artifact",
            )
        out[name] = (run_member(run_dir, rel), sha)
    return out
