"""What the card takes from outside the run: the project's ``[tool.modelkit.card]`` options,
its ``[project]`` license, and modelkit's own package metadata (its project URL).

These are the user's option table and third-party formats (pyproject.toml, the installed
package's metadata), not modelkit records: read here by key, once, into :class:`CardOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CardOptions:
    """``[tool.modelkit.card]`` as the user wrote it (values unchecked here: the card's metadata
    validation names a wrong one, as the Hub would)."""

    license: Any = None  # a Hub license id, else [project] license
    tags: Any = ()  # added after modelkit's own tags
    datasets: Any = ()  # Hub dataset ids (else the known id of the training data, if any)
    pipeline_tag: Any = None  # else the task's
    path: Any = None  # the prose file, relative to the project root (else MODEL_CARD.md)


def card_options(project: Any) -> CardOptions:
    """The project's ``[tool.modelkit.card]`` table (empty options without one)."""
    table = (getattr(project, "raw", None) or {}).get("card") or {}
    if not isinstance(table, dict):
        return CardOptions()
    return CardOptions(
        license=table.get("license"),
        tags=table.get("tags", ()),
        datasets=table.get("datasets") or (),
        pipeline_tag=table.get("pipeline_tag"),
        path=table.get("path"),
    )


def project_license(project: Any) -> str | None:
    """The card's license: ``[tool.modelkit.card] license``, else pyproject's ``[project]
    license`` (a string or ``{text = ...}``), lower-cased; None when neither says."""
    lic = card_options(project).license
    if lic:
        return str(lic).lower()
    root = getattr(project, "root", None)
    if root is None:
        return None
    from modelkit.config import tomllib

    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except Exception:
        return None
    lic = data.get("project", {}).get("license")
    if isinstance(lic, dict):
        lic = lic.get("text")
    return str(lic).strip().lower() if lic else None


def modelkit_link() -> str:
    """modelkit, linked to the project URL its package metadata declares (else plain text)."""
    import importlib.metadata

    try:
        meta = importlib.metadata.metadata("modelkit")
    except importlib.metadata.PackageNotFoundError:
        return "modelkit"
    urls = [u.split(",", 1)[-1].strip() for u in meta.get_all("Project-URL") or []]
    url = next((u for u in urls if u.startswith("https://") and u.count("/") > 3), None)
    home = meta.get("Home-page")
    url = url or (home if home and home.startswith("https://") and home.count("/") > 3 else None)
    return f"[modelkit]({url})" if url else "modelkit"
