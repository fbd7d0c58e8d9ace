"""The facts a card states, read from a run directory: record, config, evaluations, the model.

Also a dataset's public name: a data spec may hold a local path (``mnist:/home/me/data/mnist``);
what a card or an ``evals/`` file name shows is the dataset's name (``mnist``), never the path.
Anything the run does not record is stated as ``unknown`` (:func:`known`), never ``None``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError
from modelkit.models.registry import resolve_model
from modelkit.tasks import get_task, task_of
from modelkit.weights import INDEX, summarize

UNKNOWN = "unknown"


def dataset_name(spec: str | None) -> str:
    """The public name of a data spec: ``digits`` -> digits, ``mnist:/a/b/mnist`` -> mnist,
    ``imagefolder:/data/catsdogs`` -> catsdogs, ``pkg.data:load_toy`` -> load_toy."""
    if not spec:
        return UNKNOWN
    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return kind
    parts = [p for p in re.split(r"[\\/]", rest) if p]  # POSIX or Windows separators
    return parts[-1] if parts else kind


def other_data_name(spec: str | None, fingerprint: str | None, *, training: str | None) -> str:
    """The name of data other than the training data's, never equal to the training data's name
    (``mnist`` elsewhere on disk becomes ``mnist-1a2b3c4d``, from its fingerprint)."""
    name = dataset_name(spec)
    if name == dataset_name(training):
        short = str(fingerprint or "").rpartition(":")[2][:8] or "other"
        name = f"{name}-{short}"
    return name


def slug(name: str) -> str:
    """A file-name-safe form of ``name``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or UNKNOWN


def known(value: object, *, unknown: str = UNKNOWN) -> str:
    """``value`` as text, or ``unknown`` for None / empty (a card never says None)."""
    if value is None or value == "" or value == [] or value == {}:
        return unknown
    return str(value)


# ------------------------------------------------------------------------------------ facts
def gather_facts(run_dir: Path, *, project: Any) -> dict[str, Any]:
    from modelkit.release.package import EVALS, require_evaluation
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("run.json", "config.json"))
    header = weights_facts(run.path)  # either layout, checked; a bad shard is named
    record = run.read_record()
    task = task_of(run.run_record())
    require_evaluation(run.path, task=task)  # eval.json, or (own loops, other data) evals/*.json
    cfg = run.read_config()
    evaluation = read_eval(run.eval, task) if run.eval.is_file() else None
    arch = architecture(run.path, cfg, project=project)
    meta = cfg.get("modelkit", {}) or {}
    # modelkit train's TrainConfig, else (an own loop) the script's config as it gave it
    config_key = "train" if meta.get("train") else "config"
    train = meta.get(config_key) or {}
    if not isinstance(train, dict):
        train = {}
    data = record.get("data") or {}
    training_name = dataset_name(data.get("spec") or train.get("data") or _own_name(data))
    # results on other data: evals/*.json, and an eval.json that is not the training data's
    # (written by an older modelkit's `eval --data`): each shown under its own dataset name
    others = [read_eval(p, task) for p in sorted((run.path / EVALS).glob("*.json"))]
    same = evaluation is not None and (
        (evaluation.get("data") or {}).get("fingerprint") == data.get("fingerprint")
    )
    if evaluation is not None and not same:
        others.insert(0, evaluation)
        evaluation = None
    training_spec = data.get("spec") or train.get("data")
    for ev in others:
        d = ev.setdefault("data", {})
        d["name"] = d.get("name") or dataset_name(d.get("spec"))
        if d["name"] == training_name:  # never under the training data's name
            d["name"] = other_data_name(d.get("spec"), d.get("fingerprint"), training=training_spec)
    return {
        "run": run,
        "record": record,
        "task": task,
        "config": cfg,
        "train": train,
        "config_key": config_key,
        "data_name": training_name,
        "eval": evaluation,
        "other_evals": others,
        "header": header,
        "arch": arch,
        "metrics": run.read_metrics(),
        # an own loop's final metrics, as its script reported them (run.finish(metrics=...))
        "reported": (record.get("metrics") or {}) if record.get("trainer") == "user" else {},
    }


def _own_name(data: dict[str, Any]) -> str | None:
    """An own loop's data name (a class name, or a path's last part: never a local path)."""
    name = data.get("name")
    if not name or name == UNKNOWN:
        return None
    return re.split(r"[\\/]", str(name).rstrip("/\\"))[-1] or None


def read_eval(path: Path, task: Any = None) -> dict[str, Any]:
    """An evaluation file (docs/tasks.md, "Evaluation files"), checked against ``task``."""

    try:
        ev = json.loads(path.read_text(encoding="utf-8"))
        (task or get_task(ev.get("task") if isinstance(ev, dict) else None)).check_result(
            ev, source=str(path)
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise RunDirError(
            f"{path} is not a {(task.name + ' ') if task else ''}evaluation result ({what})",
            hint=f"re-run: modelkit eval {path.parent if path.name == 'eval.json' else path.parent.parent}",
        ) from None
    return ev


def weights_facts(run_dir: Path) -> dict[str, Any]:
    """Parameter count, dtypes, shapes, files and bytes of a run's weights (either layout),
    from the safetensors headers alone: no tensor is read, no model is built; ``label``
    names the files in a line (`model.safetensors`, or N shards + the index)."""
    summary = summarize(run_dir)
    shards = sorted(name for name in summary.files if name != INDEX)
    label = (
        f"{len(shards)} shards (`{shards[0]}` …) + `{INDEX}`"
        if summary.layout == "sharded"
        else f"`{shards[0]}`"
    )
    return summary.to_dict() | {"label": label}


def architecture(run_dir: Path, cfg: dict[str, Any], *, project: Any) -> dict[str, Any]:
    """Model class, source and module tree, rebuilt from config.json with its parameters on
    ``meta`` (no memory, no random init; the weights are not needed)."""
    from modelkit.models.weights import build_empty

    meta = cfg.get("modelkit", {}) or {}
    ref_name = str((meta.get("reference") or {}).get("ref") or "").rpartition(":")[2]
    name = meta.get("model") or ref_name  # an own-loop run may name only its reference
    if not name:
        raise RunDirError(f"{run_dir}/config.json does not name its model", hint="re-train")
    model, _ = build_empty(cfg, source=f"{run_dir}/config.json", project=project)
    reference = meta.get("reference") or {}
    kwargs = reference.get("kwargs", (meta.get("train") or {}).get("model_kwargs", {}))
    cls = type(model)
    doc = (cls.__doc__ or "").strip().splitlines()
    module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
    description = None
    try:
        description = resolve_model(name, project=project).description
    except Exception:  # a model known only by its reference
        description = None
    try:
        from huggingface_hub import PyTorchModelHubMixin

        mixin = isinstance(model, PyTorchModelHubMixin)
        info = getattr(cls, "_hub_mixin_info", None)
        library = getattr(info, "library_name", None) or getattr(
            getattr(info, "model_card_data", None), "library_name", None
        )
    except ImportError:  # pragma: no cover
        mixin, library = False, None
    summary = module_doc[0] if module_doc else (doc[0] if doc else description)
    summary = summary.strip().rstrip(".") if summary else None
    return {
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "class_name": cls.__qualname__,
        "module": cls.__module__,
        "summary": summary or "no description",
        "description": description if description and ":" not in description else None,
        "repr": repr(model),
        "mixin": mixin,
        "library": library or "pytorch",
        "kwargs": kwargs,
        "reference": reference,
        "weights": plain_load_facts(run_dir),
    }


def plain_load_facts(run_dir: Path) -> dict[str, Any]:
    """What a plain ``load_state_dict`` snippet needs to know (from the headers): whether the
    weights are sharded, and which shared tensors are stored under another name."""
    summary = summarize(run_dir)
    return {"sharded": summary.layout == "sharded", "shared": dict(summary.shared)}


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


def project_license(project: Any) -> str | None:
    card_cfg = (getattr(project, "raw", None) or {}).get("card", {})
    lic = card_cfg.get("license")
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
