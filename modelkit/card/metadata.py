"""Card metadata (the YAML front matter): built from the facts, validated like the Hub does."""

from __future__ import annotations

from typing import Any

import yaml

from modelkit.card.facts import CardFacts, slug
from modelkit.card.options import card_options, project_license
from modelkit.runs.documents import EvalRecord

# the Hub's license identifiers (https://huggingface.co/docs/hub/repositories-licenses)
HUB_LICENSES = frozenset(
    [
        "apache-2.0",
        "mit",
        "openrail",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0",
        "bigcode-openrail-m",
        "afl-3.0",
        "artistic-2.0",
        "bsl-1.0",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "bsd-3-clause-clear",
        "c-uda",
        "cc",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-2.5",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0",
        "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
        "wtfpl",
        "ecl-2.0",
        "epl-1.0",
        "epl-2.0",
        "etalab-2.0",
        "eupl-1.1",
        "eupl-1.2",
        "agpl-3.0",
        "gfdl",
        "gpl",
        "gpl-2.0",
        "gpl-3.0",
        "lgpl",
        "lgpl-2.1",
        "lgpl-3.0",
        "isc",
        "h-research",
        "intel-research",
        "lppl-1.3c",
        "ms-pl",
        "apple-ascl",
        "apple-amlr",
        "mpl-2.0",
        "odc-by",
        "odbl",
        "openrail++",
        "osl-3.0",
        "postgresql",
        "ofl-1.1",
        "ncsa",
        "unlicense",
        "zlib",
        "pddl",
        "lgpl-lr",
        "deepfloyd-if-license",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "gemma",
        "unknown",
        "other",
    ]
)


# data spec prefix -> Hub dataset id, where one exists
HUB_DATASETS = {"mnist": "ylecun/mnist"}


# ------------------------------------------------------------------------------- metadata
def card_metadata(f: CardFacts, *, repo_id: str, project: Any) -> dict[str, Any]:
    """The card's YAML metadata (``ModelCardData``) from its facts and the project's options."""
    from huggingface_hub import ModelCardData

    options = card_options(project)
    name, task = f.data_name, f.task
    datasets = list(options.datasets or ([HUB_DATASETS[name]] if name in HUB_DATASETS else []))
    evals = []
    if f.eval is not None:  # the training data's held-out split
        dataset_type = datasets[0] if datasets else name
        evals += _eval_results(f.eval, task, dataset_type=dataset_type, dataset=name)
    for ev in f.other_evals:  # other data: only ever under its own name
        other = str(ev.data.name)
        evals += _eval_results(ev, task, dataset_type=other, dataset=other)
    tags = ["modelkit", "pytorch", "safetensors", task.pipeline_tag, slug(f.arch.name)]
    tags += [t for t in options.tags if t not in tags]
    pipeline_tag = options.pipeline_tag if options.pipeline_tag is not None else task.pipeline_tag
    data = ModelCardData(
        license=project_license(project),
        library_name=f.arch.library,
        tags=tags,
        datasets=datasets or None,
        metrics=[task.primary.key],
        pipeline_tag=pipeline_tag,
        model_name=repo_id.split("/")[-1],
        eval_results=evals or None,
    )
    return data.to_dict()


def _eval_results(ev: EvalRecord, task: Any, *, dataset_type: str, dataset: str) -> list[Any]:
    """An evaluation's metrics as the Hub's model-index results."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=task.pipeline_tag,
            task_name=task.hub_task_name,
            dataset_type=dataset_type,
            dataset_name=f"{dataset} (held-out split)",
            dataset_split="test",
            metric_type=m.hub_type or m.key,
            metric_name=m.label,
            metric_value=round(value, 6),
        )
        for m in task.metrics
        if (value := ev.metric(m.key)) is not None
    ]


def validate_metadata(meta: Any) -> list[str]:
    """Errors in card metadata, as huggingface_hub parses it and the Hub checks it (empty = ok)."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    errors: list[str] = []
    if not isinstance(meta, dict):
        return ["the YAML front matter must be a mapping"]
    lic = meta.get("license")
    if lic is None:
        errors.append("license: missing (set [tool.modelkit.card] license or [project] license)")
    elif not isinstance(lic, str) or lic not in HUB_LICENSES:
        errors.append(f"license: '{lic}' is not a Hub license id (e.g. apache-2.0, mit, other)")
    for key in ("tags", "datasets", "metrics"):
        v = meta.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            errors.append(f"{key}: must be a list of strings")
    for key in ("library_name", "pipeline_tag"):
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            errors.append(f"{key}: must be a string")
    if "model-index" in meta:
        try:
            name, results = model_index_to_eval_results(meta["model-index"])
            if not results:
                errors.append("model-index: no results")
            for r in results:
                if not isinstance(r.metric_value, (int, float)):
                    errors.append(f"model-index: metric {r.metric_type} value is not a number")
        except Exception as exc:  # KeyError/TypeError from a malformed structure
            errors.append(f"model-index: malformed ({type(exc).__name__}: {exc})")
    try:
        ModelCardData(**meta)
    except Exception as exc:
        errors.append(f"metadata does not parse as ModelCardData: {exc}")
    return errors


def split_front_matter(text: str) -> tuple[dict[str, Any] | None, str, list[str]]:
    """``(metadata, body, errors)`` of a README with optional YAML front matter."""
    if not text.startswith("---\n"):
        return None, text, []
    end = text.find("\n---\n", 4)
    if end < 0:
        return None, text, ["YAML front matter is not closed by a '---' line"]
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as exc:
        return None, text[end + 5 :], [f"YAML front matter does not parse: {exc}".splitlines()[0]]
    return meta, text[end + 5 :], []


def with_prose_metadata(meta: dict[str, Any], prose_meta: dict[str, Any]) -> dict[str, Any]:
    """The card's metadata with MODEL_CARD.md's front matter over it (keys set by hand win);
    a license neither states is left out, and so is every null."""
    merged = {**meta, **prose_meta}
    if "license" not in prose_meta and meta.get("license") is None:
        merged.pop("license", None)
    return {k: v for k, v in merged.items() if v is not None}


def with_existing_metadata(meta: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The card's metadata over an existing README's (its other keys kept; a hand-set license
    wins over none)."""
    merged = {**(old or {}), **{k: v for k, v in meta.items() if v is not None}}
    if meta.get("license") is None and (old or {}).get("license"):
        merged["license"] = (old or {})["license"]
    return merged


def validate_card(text: str) -> list[str]:
    """Errors that would make huggingface_hub or the Hub reject this README (empty = valid)."""
    from huggingface_hub import ModelCard

    meta, _, errors = split_front_matter(text)
    if errors:
        return errors
    if meta is None:
        return ["no YAML metadata block at the top of README.md"]
    errors = validate_metadata(meta)
    if not errors:
        try:
            ModelCard(text, ignore_metadata_errors=False)
        except Exception as exc:
            errors.append(f"huggingface_hub.ModelCard rejects it: {exc}")
    return errors
