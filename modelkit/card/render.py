"""Render README.md: the run's facts (Hugging Face template + Mitchell et al. 2019) merged with
the repository's MODEL_CARD.md; write it with the training curves; pin its usage for a release.

The pieces live beside this module: ``facts`` (what the run records), ``metadata`` (front
matter + validation), ``sections`` (generated markdown), ``prose`` (layout + hand-written text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelkit.card.facts import architecture, gather_facts
from modelkit.card.metadata import card_metadata, split_front_matter, validate_card
from modelkit.card.prose import (
    BLOCK_RE,
    ORDER,
    PROSE_FILE,
    block,
    card_incomplete,
    card_todos,
    fresh_body,
    merge_body,
    read_prose,
)
from modelkit.card.sections import (
    CURVES,
    UsageTarget,
    default_target,
    generated_sections,
    usage_section,
)
from modelkit.errors import BadInputError, CheckFailed
from modelkit.io import atomic_path, write_bytes_atomic
from modelkit.release.version import parse_version
from modelkit.tasks import get_task, task_of


@dataclass
class CardResult:
    """What ``write_card`` did."""

    path: Path
    todos: list[str]
    curves: Path | None
    metadata: dict[str, Any]
    kept_sections: list[str] = field(default_factory=list)
    prose: Path | None = None  # the MODEL_CARD.md merged in, if any


def dump(meta: dict[str, Any], body: str) -> str:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n{body.lstrip()}"


def render_card(
    run_dir: Path | str,
    *,
    repo_id: str | None = None,
    version: str | None = None,
    project: Any = None,
    existing: str | None = None,
    curves: bool = False,
    target: UsageTarget | None = None,
) -> str:
    """The card text for a run: the run's facts merged with the project's MODEL_CARD.md.

    Without a MODEL_CARD.md, hand-written parts of ``existing`` (the run's README.md) are kept.
    """
    f = gather_facts(Path(run_dir), project=project)
    target = target or default_target(repo_id=repo_id, version=version, project=project)
    sections = generated_sections(f, target=target, curves=curves)
    title = repo_id.split("/")[-1] if repo_id else f["arch"]["name"]
    meta = card_metadata(f, repo_id=f"x/{title}", project=project)
    prose = read_prose(project, Path(run_dir))
    if prose is not None:
        merged = {**meta, **prose.meta}  # keys set by hand in MODEL_CARD.md win
        if "license" not in prose.meta and meta.get("license") is None:
            merged.pop("license", None)
        return dump(
            {k: v for k, v in merged.items() if v is not None}, fresh_body(title, sections, prose)
        )
    if existing is None:
        return dump(meta, fresh_body(title, sections))
    old_meta, body, errors = split_front_matter(existing)
    if errors:
        raise BadInputError(
            f"cannot regenerate: the existing README.md {errors[0]}",
            hint="fix or delete its YAML front matter",
        )
    merged = {**(old_meta or {}), **{k: v for k, v in meta.items() if v is not None}}
    if meta.get("license") is None and (old_meta or {}).get("license"):
        merged["license"] = old_meta["license"]  # a hand-set license wins over "unknown"
    new_body, _ = merge_body(body, sections)
    return dump(merged, new_body)


def pin_usage(text: str, *, usage: str) -> str:
    """Replace the card's generated "How to use" section with ``usage`` (used by release)."""

    def repl(m: re.Match[str]) -> str:
        return block("usage", usage) if m.group("name") == "usage" else m.group(0)

    return BLOCK_RE.sub(repl, text)


def release_usage(run_dir: Path | str, target: UsageTarget, *, project: Any = None) -> str:
    """The "How to use" text of a run released to ``target``."""
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("config.json",))
    return usage_section(architecture(run.path, run.read_config(), project=project), target)


def _series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[list[Any], list[Any]]:
    """``(xs, ys)`` of the rows that hold a number under both keys (metrics are free-form)."""
    pts = [(r[x], r[y]) for r in rows if isinstance(r.get(y), (int, float)) and x in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def render_curves(run_dir: Path, task: Any = None) -> Path | None:
    """Plot metrics.jsonl (loss per step, the task's held-out metric per epoch) into
    training_curves.png; a metric the rows do not hold is left out, never a KeyError."""
    from modelkit.runs import RunDir

    rows = RunDir(run_dir).read_metrics()
    steps = [r for r in rows if r.get("kind") == "step"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    if not steps and not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, label = (task or get_task(None)).curves()
    if not _series(epochs, "epoch", key)[0]:  # an own loop's free-form epoch metric instead
        free = [k for r in epochs for k, v in r.items() if isinstance(v, (int, float))]
        key = next((k for k in free if k not in ("epoch", "step", "train_loss")), key)
        label = key
    held_out = "test_loss" if _series(epochs, "step", "test_loss")[0] else "val_loss"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    ax1.plot(*_series(steps, "step", "loss"), label="train loss")
    ax1.plot(*_series(epochs, "step", held_out), "o-", label="held-out loss")
    ax2.plot(*_series(epochs, "epoch", key), "o-")
    ax1.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax1.legend()
    ax2.set(xlabel="epoch", ylabel=label.removeprefix("held-out "), title=label)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / CURVES
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def _check_release_args(repo_id: str | None, version: str | None) -> None:
    """Reject a malformed version or repo id before anything is rendered."""
    if version is not None:
        parse_version(version)
    if repo_id is not None:
        from modelkit.release.targets import check_repo_id

        check_repo_id(repo_id)


def _check_card(text: str, *, strict: bool) -> tuple[list[str], list[str]]:
    """``(metadata errors, unfilled sections)`` of a rendered card; raise where it may not be written.

    ``strict`` refuses any error or unfilled section; otherwise only a missing license passes.
    """

    errors = validate_card(text)
    todos = card_incomplete(text)
    if strict and (errors or todos):
        raise CheckFailed(
            "card is incomplete: " + "; ".join(errors + [f"section '{t}' unfilled" for t in todos]),
            hint=f"write them in {PROSE_FILE} (delete each modelkit:todo marker) and set a license",
        )
    blocking = [e for e in errors if not e.startswith("license: missing")]
    if blocking:
        raise BadInputError(
            "card metadata errors: " + "; ".join(blocking),
            hint="fix [tool.modelkit.card] in pyproject.toml or the README's YAML front matter",
        )
    return errors, todos


def write_card(
    run_dir: Path | str,
    *,
    repo_id: str | None = None,
    version: str | None = None,
    project: Any = None,
    strict: bool = False,
) -> CardResult:
    """Write (or regenerate) ``RUN_DIR/README.md`` and the training-curves PNG; validate it."""
    from modelkit.runs import RunDir

    run_dir = Path(run_dir)
    path = run_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    _check_release_args(repo_id, version)
    # render (and fail) before touching anything on disk
    curves = any(r.get("kind") in ("step", "epoch") for r in RunDir(run_dir).read_metrics())
    text = render_card(
        run_dir, repo_id=repo_id, version=version, project=project, existing=existing, curves=curves
    )
    meta, _, _ = split_front_matter(text)
    errors, todos = _check_card(text, strict=strict)
    png = render_curves(run_dir, task_of(RunDir(run_dir).run_record())) if curves else None
    write_bytes_atomic(path, text.encode("utf-8"))
    kept = [
        m.group("name")
        for m in BLOCK_RE.finditer(text)
        if m.group("name") not in {"summary", *(k for _, k in ORDER if k)}
    ]
    prose = read_prose(project, Path(run_dir))
    return CardResult(
        path,
        todos + (["license"] if errors else []),
        png,
        meta or {},
        kept,
        prose=prose.path if prose else None,
    )


__all__ = [
    "CURVES",
    "CardResult",
    "UsageTarget",
    "card_incomplete",
    "card_todos",
    "pin_usage",
    "release_usage",
    "render_card",
    "render_curves",
    "validate_card",
    "write_card",
]
