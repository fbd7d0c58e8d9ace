"""Render README.md from a run directory's facts (Hugging Face template + Mitchell et al. 2019).

Generated sections sit between ``<!-- modelkit:begin NAME -->`` / ``<!-- modelkit:end NAME -->``
markers and are replaced on regeneration; everything outside them is the maintainer's and is
kept. Sections the tool cannot fill from facts carry ``<!-- modelkit:todo NAME -->``: delete the
marker once written; ``modelkit card --strict`` fails while any remain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelkit.card.facts import known
from modelkit.errors import BadInputError, RunDirError

CURVES = "training_curves.png"
BEGIN = "<!-- modelkit:begin {} -->"
END = "<!-- modelkit:end {} -->"
BLOCK_RE = re.compile(
    r"<!-- modelkit:begin (?P<name>[\w-]+) -->\n.*?<!-- modelkit:end (?P=name) -->", re.S
)
TODO_RE = re.compile(r"<!-- modelkit:todo (?P<name>[\w-]+) -->")
PLACEHOLDER_REPO = "YOUR-ORG/YOUR-MODEL"
PLACEHOLDER_VERSION = "vX.Y"

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
TODO_SECTIONS = {
    "uses": (
        "Uses",
        "Describe the intended uses and users, and out-of-scope uses "
        "(Mitchell et al., 'Intended Use').",
    ),
    "ethics": (
        "Bias, risks and ethical considerations",
        "Describe risks, known biases and recommendations (Mitchell et al., "
        "'Ethical Considerations', 'Caveats and Recommendations').",
    ),
    "contact": (
        "Citation and contact",
        "Who maintains this model, how to cite it, where to report issues.",
    ),
}


@dataclass
class CardResult:
    """What ``write_card`` did."""

    path: Path
    todos: list[str]
    curves: Path | None
    metadata: dict[str, Any]
    kept_sections: list[str] = field(default_factory=list)
    prose: Path | None = None  # the MODEL_CARD.md merged in, if any


# ------------------------------------------------------------------------------------ facts
def _facts(run_dir: Path, *, project: Any) -> dict[str, Any]:
    from modelkit.card.facts import dataset_name
    from modelkit.release.package import EVALS, safetensors_header
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("run.json", "config.json", "model.safetensors", "eval.json"))
    record = run.read_record()
    cfg = run.read_config()
    evaluation = _read_eval(run.eval)
    header = safetensors_header(run.weights)
    arch = _architecture(run.path, cfg, project=project)
    train = cfg.get("modelkit", {}).get("train", {}) or {}
    data = record.get("data") or {}
    training_name = dataset_name(data.get("spec") or train.get("data"))
    # results on other data: evals/*.json, and an eval.json that is not the training data's
    # (written by an older modelkit's `eval --data`): each shown under its own dataset name
    others = [_read_eval(p) for p in sorted((run.path / EVALS).glob("*.json"))]
    same = (evaluation.get("data") or {}).get("fingerprint") == data.get("fingerprint")
    if not same:
        others.insert(0, evaluation)
        evaluation = None
    for ev in others:
        d = ev.setdefault("data", {})
        d["name"] = d.get("name") or dataset_name(d.get("spec"))
    return {
        "run": run,
        "record": record,
        "config": cfg,
        "train": train,
        "data_name": training_name,
        "eval": evaluation,
        "other_evals": others,
        "header": header,
        "arch": arch,
        "metrics": run.read_metrics(),
    }


def _read_eval(path: Path) -> dict[str, Any]:
    try:
        ev = json.loads(path.read_text(encoding="utf-8"))
        float(ev["accuracy"]), float(ev["loss"]), int(ev["samples"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(
            f"{path} is not an evaluation result ({type(exc).__name__})",
            hint=f"re-run: modelkit eval {path.parent if path.name == 'eval.json' else path.parent.parent}",
        ) from None
    return ev


def _architecture(run_dir: Path, cfg: dict[str, Any], *, project: Any) -> dict[str, Any]:
    """Model class, source and module tree, rebuilt from config.json (weights not needed)."""
    from modelkit.models.weights import build_from_config

    meta = cfg.get("modelkit", {}) or {}
    name = meta.get("model")
    if not name:
        raise RunDirError(f"{run_dir}/config.json does not name its model", hint="re-train")
    model, _ = build_from_config(cfg, source=f"{run_dir}/config.json", project=project)
    reference = meta.get("reference") or {}
    kwargs = reference.get("kwargs", (meta.get("train") or {}).get("model_kwargs", {}))
    cls = type(model)
    doc = (cls.__doc__ or "").strip().splitlines()
    module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
    description = None
    try:
        from modelkit.models.registry import resolve_model

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
    }


def _modelkit_link() -> str:
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


def _license(project: Any) -> str | None:
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


# ------------------------------------------------------------------------------- metadata
def _metadata(f: dict[str, Any], *, repo_id: str, project: Any) -> dict[str, Any]:
    from huggingface_hub import EvalResult, ModelCardData

    from modelkit.card.facts import slug

    card_cfg = (getattr(project, "raw", None) or {}).get("card", {})
    name = f["data_name"]
    datasets = list(
        card_cfg.get("datasets") or ([HUB_DATASETS[name]] if name in HUB_DATASETS else [])
    )

    def results(ev: dict[str, Any], *, dataset_type: str, dataset: str) -> list[Any]:
        return [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_type,
                dataset_name=f"{dataset} (held-out split)",
                dataset_split="test",
                metric_type=key,
                metric_name=label,
                metric_value=round(float(ev[key]), 6),
            )
            for key, label in (("accuracy", "Accuracy"), ("loss", "Cross-entropy loss"))
        ]

    evals = []
    if f["eval"] is not None:  # the training data's held-out split
        evals += results(f["eval"], dataset_type=datasets[0] if datasets else name, dataset=name)
    for ev in f["other_evals"]:  # other data: only ever under its own name
        other = ev["data"]["name"]
        evals += results(ev, dataset_type=other, dataset=other)
    tags = ["modelkit", "pytorch", "safetensors", "image-classification", slug(f["arch"]["name"])]
    tags += [t for t in card_cfg.get("tags", []) if t not in tags]
    data = ModelCardData(
        license=_license(project),
        library_name=f["arch"]["library"],
        tags=tags,
        datasets=datasets or None,
        metrics=["accuracy"],
        pipeline_tag=card_cfg.get("pipeline_tag", "image-classification"),
        model_name=repo_id.split("/")[-1],
        eval_results=evals or None,
    )
    return data.to_dict()


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


def card_todos(text: str) -> list[str]:
    """Names of sections still marked as to be written by hand."""
    return TODO_RE.findall(text)


# ------------------------------------------------------------------------------- sections
def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else known(n)


@dataclass(frozen=True)
class UsageTarget:
    """Where a release lives, for the card's loading snippet."""

    kind: str  # "hub" | "local"
    repo_id: str
    version: str
    registry: str | None = None  # a local registry's absolute path


def usage_section(arch: dict[str, Any], target: UsageTarget) -> str:
    """The "How to use" text: exactly what loads this release from ``target``."""
    ref = arch.get("reference") or {}
    module = (ref.get("ref") or f"{arch['module']}:").partition(":")[0]
    package, version = ref.get("package"), ref.get("version")
    if package and package != "modelkit":
        needs = (
            f"`pip install modelkit '{package}=={version}'`"
            if version
            else f"`pip install modelkit {package}`"
        )
        needs += f" (`{package}` provides `{module}`, which defines the model)"
    elif package == "modelkit":
        needs = "`pip install modelkit` (the model is one of modelkit's own)"
    else:
        needs = (
            f"`pip install modelkit` and the package that provides `{module}` "
            "(its name was not recorded: the model's module was not installed as a package)"
        )
    if target.kind == "local":
        where = f"the local registry `{target.registry}`"
        call = f'modelkit.load("{target.registry}", "{target.version}", repo="{target.repo_id}")'
        mixin_call = (
            f'{arch["class_name"]}.from_pretrained("{target.repo_id}", revision="{target.version}", '
            f'cache_dir="{target.registry}", local_files_only=True)'
        )
        check = f"modelkit verify {target.registry}@{target.version} --repo {target.repo_id}"
    else:
        where = f"the Hugging Face Hub (`{target.repo_id}`)"
        call = f'modelkit.load("hf://{target.repo_id}", "{target.version}")'
        mixin_call = (
            f'{arch["class_name"]}.from_pretrained("{target.repo_id}", revision="{target.version}")'
        )
        check = f"modelkit verify hf://{target.repo_id}@{target.version}"
    lines = [
        f"Load release `{target.version}` from {where}; needs {needs}:",
        "",
        "```python",
        "import modelkit",
        "",
        f"model = {call}  # pinned to the release tag",
        "```",
        "",
        "`modelkit.load` rebuilds the model from the reference in `config.json` "
        f"(`{known(ref.get('ref'))}`), checks the weights' sha256 against `run.json` and "
        "`manifest.json`, and loads `model.safetensors` (no pickle).",
    ]
    if arch["mixin"]:
        lines += [
            "",
            f"`{arch['class_name']}` is a `PyTorchModelHubMixin`, so its own loader works too:",
            "",
            "```python",
            f"from {arch['module']} import {arch['class_name']}",
            "",
            f"model = {mixin_call}.eval()",
            "```",
        ]
    lines += ["", f"Check it first (hashes, tag, signature, weights): `{check}`."]
    return "\n".join(lines)


def _eval_table(ev: dict[str, Any]) -> list[str]:
    return [
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {ev['accuracy']:.4f} |",
        f"| cross-entropy loss | {ev['loss']:.4f} |",
        f"| samples | {_fmt(ev['samples'])} |",
    ]


def _sections(f: dict[str, Any], *, target: UsageTarget, curves: bool) -> dict[str, str]:
    rec, ev, hdr, arch, train = f["record"], f["eval"], f["header"], f["arch"], f["train"]
    data = rec.get("data") or {}
    env = rec.get("env") or {}
    git = rec.get("git") or {}
    timings = rec.get("timings") or {}
    name = f["data_name"]
    dtypes = ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(hdr["dtypes"].items()))
    weights_size = f["run"].weights.stat().st_size
    s: dict[str, str] = {}
    held_out = (
        f"Held-out accuracy **{ev['accuracy']:.4f}** on {_fmt(ev['samples'])} samples."
        if ev is not None
        else "Not evaluated on the training data's held-out split."
    )
    s["summary"] = (
        f"`{arch['name']}` ({arch['summary']}), trained with {_modelkit_link()} on `{name}`. "
        + held_out
    )
    ref = arch.get("reference") or {}
    provider = f"{ref['package']} {known(ref.get('version'))}" if ref.get("package") else "unknown"
    classes = (ev or {}).get("classes") or data.get("classes") or []
    s["details"] = "\n".join(
        [
            f"- **Architecture:** `{arch['class']}` — {arch['description'] or arch['summary']}",
            f"- **Rebuilt from:** `{known(ref.get('ref'))}` (package: {provider})",
            f"- **Model kwargs:** `{json.dumps(arch['kwargs'], sort_keys=True)}`",
            f"- **Parameters:** {_fmt(hdr['num_parameters'])} in {hdr['num_tensors']} tensors "
            f"({dtypes}), read from the safetensors header",
            f"- **Weights:** `model.safetensors`, {_fmt(weights_size)} bytes, sha256 "
            f"`{known(rec.get('weights_sha256'))}`",
            f"- **Model type:** image classification, {len(classes) or 'unknown'} classes"
            + (f" ({', '.join(map(str, classes))})" if classes else ""),
            f"- **Framework:** PyTorch {known(env.get('torch'))}, modelkit {known(env.get('modelkit'))}",
            f"- **Trained:** {known(rec.get('started'))} → {known(rec.get('finished'))}",
            "",
            "<details><summary>Module tree</summary>",
            "",
            "```text",
            arch["repr"],
            "```",
            "",
            "</details>",
        ]
    )
    source = data.get("source")
    shape = "×".join(map(str, data.get("input_shape") or [])) or "unknown"
    s["training-data"] = "\n".join(
        [
            f"- **Dataset:** `{name}`"
            + (f" (source: {source})" if source and not _looks_local(source) else ""),
            f"- **Fingerprint:** `{known(data.get('fingerprint'))}`",
            f"- **Split:** {known(data.get('split'))}; train {_fmt(data.get('train_size'))}"
            f" samples, held-out {_fmt(data.get('test_size', (ev or {}).get('samples')))} samples",
            f"- **Input shape:** {shape}",
        ]
        + ([f"- **Skipped files:** {data['skipped_files']}"] if data.get("skipped_files") else [])
    )
    keys = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "seed")
    hp = "\n".join(f"| {k} | `{known(train.get(k))}` |" for k in keys if k in train)
    train_s, sps = timings.get("train_s"), rec.get("samples_per_second")
    lines = (["| hyperparameter | value |", "|---|---|", hp, ""] if hp else []) + [
        f"- **Hardware:** {known(env.get('device_type'))} — {known(env.get('device_name'))}"
        f" ({known(env.get('threads'))} threads; CUDA {known(env.get('cuda'), unknown='none')})",
        "- **Training time:** "
        + (f"{train_s:.1f} s" if isinstance(train_s, (int, float)) else "unknown")
        + f" for {_fmt(rec.get('steps'))} steps ({_fmt(rec.get('samples_seen'))} samples, "
        + (f"{sps:,.0f} samples/s)" if isinstance(sps, (int, float)) else "unknown samples/s)"),
    ]
    if curves:
        lines += [
            "",
            f"![Training curves: loss per step and held-out accuracy per epoch]({CURVES})",
        ]
    s["training"] = "\n".join(lines)
    ev_lines: list[str] = []
    if ev is not None:
        per_class = ev.get("per_class_accuracy") or {}
        ev_lines += [
            f"Evaluated on the held-out split of the training data `{name}` (fingerprint "
            f"`{known((ev.get('data') or {}).get('fingerprint'))}`), {known(ev.get('evaluated'))}.",
            "",
            *_eval_table(ev),
            "",
            "Per-class accuracy (a breakdown by the factor the data records: the class):",
            "",
            "| class | accuracy |",
            "|---|---|",
            *[f"| {c} | {'n/a' if a is None else f'{a:.4f}'} |" for c, a in per_class.items()],
        ]
    else:
        ev_lines.append("Not evaluated on the held-out split of the training data.")
    for other in f["other_evals"]:
        d = other["data"]
        ev_lines += [
            "",
            f"### On other data: `{d['name']}`",
            "",
            f"Held-out split of `{d['name']}` (fingerprint `{known(d.get('fingerprint'))}`), "
            f"not the training data; {known(other.get('evaluated'))}.",
            "",
            *_eval_table(other),
        ]
    s["evaluation"] = "\n".join(ev_lines)
    per_class = (ev or {}).get("per_class_accuracy") or {}
    scored = [(a, c) for c, a in per_class.items() if a is not None]
    weakest = sorted(scored)[:3]
    lim = [
        f"- Trained on {_fmt(data.get('train_size'))} samples of `{name}` only; "
        + (
            "accuracy on other sources (other scanners, handwriting styles, resolutions, "
            "domains) was not measured."
            if not f["other_evals"]
            else "other data was measured only where listed under Evaluation."
        ),
    ]
    if ev is not None:
        lim.append(
            f"- The reported accuracy comes from one held-out split of {_fmt(ev['samples'])} "
            "samples, one seed, no confidence interval."
        )
    if weakest:
        lim.append(
            "- Weakest classes: "
            + ", ".join(f"`{c}` ({a:.3f})" for a, c in weakest)
            + "; errors are not uniform across classes."
        )
    if git.get("dirty"):
        lim.append("- The run was trained from a git tree with uncommitted changes.")
    if not git.get("commit"):
        lim.append("- The run was not trained inside a git repository: the code is not pinned.")
    lim.append("- Not evaluated for robustness to adversarial or out-of-distribution inputs.")
    s["limitations"] = "\n".join(lim)
    s["usage"] = usage_section(arch, target)
    env_keys = (
        "python",
        "torch",
        "numpy",
        "device_type",
        "device_name",
        "threads",
        "deterministic",
    )
    shown = dict(train)
    if "data" in shown:
        shown["data"] = name  # the dataset's name; a local path stays out of the card
    s["reproducibility"] = "\n".join(
        [
            f"- **Git commit:** `{known(git.get('commit'))}`"
            + (" (dirty tree)" if git.get("dirty") else ""),
            f"- **Seed:** `{known(rec.get('seed'))}`",
            f"- **Config sha256:** `{known(rec.get('config_sha256'))}`",
            f"- **Weights sha256:** `{known(rec.get('weights_sha256'))}`",
            f"- **Environment:** {', '.join(f'{k} `{known(env.get(k))}`' for k in env_keys)}",
            "",
            "Training config (`config.json` → `modelkit.train`; `data` shown by name):",
            "",
            "```json",
            json.dumps(shown, sort_keys=True, indent=2),
            "```",
            "",
            "Re-run it and compare against this run's record (`run.json`, shipped with the "
            "release):",
            "",
            "```bash",
            "modelkit repro --against RUN_DIR   # the run directory, or the downloaded release",
            "```",
        ]
    )
    return s


def _looks_local(text: str) -> bool:
    return str(text).startswith(("/", "~", "./", "../")) or ":\\" in str(text)


ORDER = [
    ("Model details", "details"),
    ("Uses", None),
    ("Training data", "training-data"),
    ("Training procedure", "training"),
    ("Evaluation", "evaluation"),
    ("Limitations", "limitations"),
    ("Bias, risks and ethical considerations", None),
    ("How to use", "usage"),
    ("Reproducibility", "reproducibility"),
    ("Citation and contact", None),
]
TODO_BY_TITLE = {v[0]: k for k, v in TODO_SECTIONS.items()}


def _block(name: str, content: str) -> str:
    return f"{BEGIN.format(name)}\n{content.rstrip()}\n{END.format(name)}"


MORE_INFO = "[More Information Needed]"
PROSE_FILE = "MODEL_CARD.md"
HEADING_RE = re.compile(r"^## +(?P<title>.+?) *$", re.M)


@dataclass(frozen=True)
class Prose:
    """The hand-written parts of the card, from the repository's MODEL_CARD.md."""

    path: Path
    meta: dict[str, Any]
    intro: str
    sections: dict[str, str]  # "## heading" -> its text, in file order


def prose_path(project: Any) -> Path | None:
    """``[tool.modelkit.card] path`` (relative to the project root), else ``MODEL_CARD.md``."""
    root = getattr(project, "root", None)
    if root is None:
        return None
    card_cfg = (getattr(project, "raw", None) or {}).get("card", {}) or {}
    rel = card_cfg.get("path", PROSE_FILE)
    if not isinstance(rel, str) or not rel:
        raise BadInputError(
            "[tool.modelkit.card] path must be a file path (a string)",
            hint=f'for example: path = "{PROSE_FILE}"',
        )
    return Path(root) / rel


def read_prose(project: Any) -> Prose | None:
    """The project's card prose file, parsed into sections (None when the file is absent)."""
    path = prose_path(project)
    if path is None or not path.is_file():
        if path is not None and (getattr(project, "raw", None) or {}).get("card", {}).get("path"):
            raise BadInputError(
                f"the card prose file {path} ([tool.modelkit.card] path) does not exist",
                hint="create it (modelkit init writes one), or fix the path",
            )
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}", hint="it must be UTF-8 text") from None
    meta, body, errors = split_front_matter(text)
    if errors:
        raise BadInputError(f"{path}: {errors[0]}", hint="fix or delete its YAML front matter")
    if meta is not None and not isinstance(meta, dict):
        raise BadInputError(f"{path}: the YAML front matter must be a mapping", hint="key: value")
    matches = [m for m in HEADING_RE.finditer(body) if not _in_fence(body, m.start())]
    intro = body[: matches[0].start()] if matches else body
    intro = "\n".join(line for line in intro.splitlines() if not line.startswith("# "))
    sections = {}
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        sections[m.group("title")] = body[m.end() : stop].strip("\n")
    return Prose(path, dict(meta or {}), intro.strip("\n"), sections)


def _in_fence(text: str, pos: int) -> bool:
    return text[:pos].count("\n```") % 2 == 1


def _todo_text(todo: str) -> str:
    return (
        f"<!-- modelkit:todo {todo} -->\n_{TODO_SECTIONS[todo][1]}_ "
        f"Write it in {PROSE_FILE} and delete the todo marker.\n\n{MORE_INFO}"
    )


def _fresh_body(title: str, sections: dict[str, str], prose: Prose | None = None) -> str:
    parts = [f"# {title}", "", _block("summary", sections["summary"]), ""]
    hand = dict(prose.sections) if prose else {}
    if prose and prose.intro.strip():
        parts += [prose.intro.strip(), ""]
    for heading, key in ORDER:
        parts.append(f"## {heading}\n")
        text = hand.pop(heading, None)
        if text and text.strip():
            parts += [text.strip(), ""]
        if key:
            parts.append(_block(key, sections[key]))
        elif not (text and text.strip()):
            parts.append(_todo_text(TODO_BY_TITLE[heading]))
        parts.append("")
    for heading, text in hand.items():  # the maintainer's own extra sections
        parts += [f"## {heading}\n", text.strip(), ""]
    return "\n".join(parts)


def card_incomplete(text: str) -> list[str]:
    """Sections still to be written by hand: a todo marker or ``[More Information Needed]``."""
    _, body, _ = split_front_matter(text)
    found: list[str] = []
    matches = list(HEADING_RE.finditer(body))
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        chunk = body[m.end() : stop]
        todos = TODO_RE.findall(chunk)
        if todos or MORE_INFO in chunk:
            found += [t for t in todos if t not in found] or [m.group("title")]
    for t in TODO_RE.findall(body):
        if t not in found:
            found.append(t)
    return found


def _merge_body(existing: str, sections: dict[str, str]) -> tuple[str, list[str]]:
    kept: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name in sections:
            return _block(name, sections[name])
        kept.append(name)
        return m.group(0)

    return BLOCK_RE.sub(repl, existing), kept


def _dump(meta: dict[str, Any], body: str) -> str:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n{body.lstrip()}"


def default_target(*, repo_id: str | None, version: str | None, project: Any) -> UsageTarget:
    """The snippet's target before a release: the project's hub, else placeholders."""
    return UsageTarget(
        kind="hub", repo_id=repo_id or PLACEHOLDER_REPO, version=version or PLACEHOLDER_VERSION
    )


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
    f = _facts(Path(run_dir), project=project)
    target = target or default_target(repo_id=repo_id, version=version, project=project)
    sections = _sections(f, target=target, curves=curves)
    title = repo_id.split("/")[-1] if repo_id else f["arch"]["name"]
    meta = _metadata(f, repo_id=f"x/{title}", project=project)
    prose = read_prose(project)
    if prose is not None:
        merged = {**meta, **prose.meta}  # keys set by hand in MODEL_CARD.md win
        if "license" not in prose.meta and meta.get("license") is None:
            merged.pop("license", None)
        return _dump(
            {k: v for k, v in merged.items() if v is not None}, _fresh_body(title, sections, prose)
        )
    if existing is None:
        return _dump(meta, _fresh_body(title, sections))
    old_meta, body, errors = split_front_matter(existing)
    if errors:
        raise BadInputError(
            f"cannot regenerate: the existing README.md {errors[0]}",
            hint="fix or delete its YAML front matter",
        )
    merged = {**(old_meta or {}), **{k: v for k, v in meta.items() if v is not None}}
    if meta.get("license") is None and (old_meta or {}).get("license"):
        merged["license"] = old_meta["license"]  # a hand-set license wins over "unknown"
    new_body, _ = _merge_body(body, sections)
    return _dump(merged, new_body)


def pin_usage(text: str, *, usage: str) -> str:
    """Replace the card's generated "How to use" section with ``usage`` (used by release)."""

    def repl(m: re.Match[str]) -> str:
        return _block("usage", usage) if m.group("name") == "usage" else m.group(0)

    return BLOCK_RE.sub(repl, text)


def release_usage(run_dir: Path | str, target: UsageTarget, *, project: Any = None) -> str:
    """The "How to use" text of a run released to ``target``."""
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("config.json",))
    return usage_section(_architecture(run.path, run.read_config(), project=project), target)


def render_curves(run_dir: Path) -> Path | None:
    """Plot metrics.jsonl (loss per step, held-out accuracy per epoch) into training_curves.png."""
    from modelkit.io import atomic_path
    from modelkit.runs import RunDir

    rows = RunDir(run_dir).read_metrics()
    steps = [r for r in rows if r.get("kind") == "step"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    if not steps and not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    ax1.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss")
    if epochs:
        ax1.plot(
            [r["step"] for r in epochs],
            [r["test_loss"] for r in epochs],
            "o-",
            label="held-out loss",
        )
        ax2.plot([r["epoch"] for r in epochs], [r["test_accuracy"] for r in epochs], "o-")
    ax1.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax1.legend()
    ax2.set(xlabel="epoch", ylabel="accuracy", title="held-out accuracy")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / CURVES
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def write_card(
    run_dir: Path | str,
    *,
    repo_id: str | None = None,
    version: str | None = None,
    project: Any = None,
    strict: bool = False,
) -> CardResult:
    """Write (or regenerate) ``RUN_DIR/README.md`` and the training-curves PNG; validate it."""
    from modelkit.errors import CheckFailed
    from modelkit.io import write_bytes_atomic

    run_dir = Path(run_dir)
    path = run_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    if version is not None:
        from modelkit.release.version import parse_version

        parse_version(version)
    if repo_id is not None:
        from modelkit.release.targets import check_repo_id

        check_repo_id(repo_id)
    # render (and fail) before touching anything on disk
    from modelkit.runs import RunDir

    curves = any(r.get("kind") in ("step", "epoch") for r in RunDir(run_dir).read_metrics())
    text = render_card(
        run_dir, repo_id=repo_id, version=version, project=project, existing=existing, curves=curves
    )
    meta, _, _ = split_front_matter(text)
    errors = validate_card(text)
    todos = card_incomplete(text)
    if strict and (errors or todos):
        raise CheckFailed(
            "card is incomplete: "
            + "; ".join(errors + [f"section '{t}' unfilled" for t in todos]),
            hint=f"write them in {PROSE_FILE} (delete each modelkit:todo marker) and set a license",
        )
    blocking = [e for e in errors if not e.startswith("license: missing")]
    if blocking:
        raise BadInputError(
            "card metadata errors: " + "; ".join(blocking),
            hint="fix [tool.modelkit.card] in pyproject.toml or the README's YAML front matter",
        )
    png = render_curves(run_dir) if curves else None
    write_bytes_atomic(path, text.encode("utf-8"))
    kept = [
        m.group("name")
        for m in BLOCK_RE.finditer(text)
        if m.group("name") not in {"summary", *(k for _, k in ORDER if k)}
    ]
    prose = read_prose(project)
    return CardResult(
        path,
        todos + (["license"] if errors else []),
        png,
        meta or {},
        kept,
        prose=prose.path if prose else None,
    )
