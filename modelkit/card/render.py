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


# ------------------------------------------------------------------------------------ facts
def _facts(run_dir: Path, *, project: Any) -> dict[str, Any]:
    from modelkit.release.package import safetensors_header
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("run.json", "config.json", "model.safetensors", "eval.json"))
    record = run.read_record()
    cfg = run.read_config()
    evaluation = json.loads(run.eval.read_text(encoding="utf-8"))
    header = safetensors_header(run.weights)
    arch = _architecture(run.path, cfg, project=project)
    return {
        "run": run,
        "record": record,
        "config": cfg,
        "train": cfg.get("modelkit", {}).get("train", {}),
        "eval": evaluation,
        "header": header,
        "arch": arch,
        "metrics": run.read_metrics(),
    }


def _architecture(run_dir: Path, cfg: dict[str, Any], *, project: Any) -> dict[str, Any]:
    """Model class, source and module tree, built from config.json (weights not needed)."""
    from modelkit.models.registry import build_model, resolve_model

    name = cfg.get("modelkit", {}).get("model")
    if not name:
        raise RunDirError(f"{run_dir}/config.json does not name its model", hint="re-train")
    entry = resolve_model(name, project=project)
    kwargs = cfg.get("modelkit", {}).get("train", {}).get("model_kwargs", {})
    model, _ = build_model(name, project=project, kwargs=kwargs)
    cls = type(model)
    doc = (cls.__doc__ or "").strip().splitlines()
    module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
    try:
        from huggingface_hub import PyTorchModelHubMixin

        mixin = isinstance(model, PyTorchModelHubMixin)
        info = getattr(cls, "_hub_mixin_info", None)
        library = getattr(info, "library_name", None) or getattr(
            getattr(info, "model_card_data", None), "library_name", None
        )
    except ImportError:  # pragma: no cover
        mixin, library = False, None
    return {
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "class_name": cls.__qualname__,
        "module": cls.__module__,
        "summary": module_doc[0] if module_doc else (doc[0] if doc else entry.description),
        "description": entry.description,
        "repr": repr(model),
        "mixin": mixin,
        "library": library or "pytorch",
        "kwargs": kwargs,
    }


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

    card_cfg = (getattr(project, "raw", None) or {}).get("card", {})
    spec = f["record"].get("data", {}).get("spec") or f["train"].get("data", "unknown")
    prefix = spec.split(":", 1)[0]
    datasets = list(
        card_cfg.get("datasets") or ([HUB_DATASETS[prefix]] if prefix in HUB_DATASETS else [])
    )
    dataset_type = datasets[0] if datasets else prefix
    ev = f["eval"]
    name = repo_id.split("/")[-1]
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_type,
            dataset_name=f"{spec} (held-out split)",
            dataset_split="test",
            metric_type=key,
            metric_name=label,
            metric_value=round(float(ev[key]), 6),
        )
        for key, label in (("accuracy", "Accuracy"), ("loss", "Cross-entropy loss"))
    ]
    tags = ["modelkit", "pytorch", "safetensors", "image-classification", f["arch"]["name"]]
    tags += [t for t in card_cfg.get("tags", []) if t not in tags]
    data = ModelCardData(
        license=_license(project),
        library_name=f["arch"]["library"],
        tags=tags,
        datasets=datasets or None,
        metrics=["accuracy"],
        pipeline_tag=card_cfg.get("pipeline_tag", "image-classification"),
        model_name=name,
        eval_results=results,
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
def _fmt(n: int) -> str:
    return f"{n:,}"


def _sections(f: dict[str, Any], *, repo_id: str, version: str, curves: bool) -> dict[str, str]:
    rec, ev, hdr, arch, train = f["record"], f["eval"], f["header"], f["arch"], f["train"]
    run_dir = f["run"].path
    data = rec.get("data", {})
    env = rec.get("env", {})
    git = rec.get("git", {}) or {}
    timings = rec.get("timings", {}) or {}
    dtypes = ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(hdr["dtypes"].items()))
    weights_size = f["run"].weights.stat().st_size
    s: dict[str, str] = {}
    s["summary"] = (
        f"`{arch['name']}` ({arch['summary']}), trained with "
        f"[modelkit](https://github.com/) on `{data.get('spec')}`. "
        f"Held-out accuracy **{ev['accuracy']:.4f}** on {_fmt(ev['samples'])} samples."
    )
    s["details"] = "\n".join(
        [
            f"- **Architecture:** `{arch['class']}` — {arch['description'] or arch['summary']}",
            f"- **Model kwargs:** `{json.dumps(arch['kwargs'], sort_keys=True)}`",
            f"- **Parameters:** {_fmt(hdr['num_parameters'])} in {hdr['num_tensors']} tensors "
            f"({dtypes}), read from the safetensors header",
            f"- **Weights:** `model.safetensors`, {_fmt(weights_size)} bytes, sha256 "
            f"`{rec.get('weights_sha256')}`",
            f"- **Model type:** image classification, {len(ev.get('classes', []))} classes "
            f"({', '.join(map(str, ev.get('classes', [])))})",
            f"- **Framework:** PyTorch {env.get('torch')}, modelkit {env.get('modelkit')}",
            f"- **Trained:** {rec.get('started')} → {rec.get('finished')}",
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
    s["training-data"] = "\n".join(
        [
            f"- **Data spec:** `{data.get('spec')}`"
            + (f" (source: {data['source']})" if data.get("source") else ""),
            f"- **Fingerprint:** `{data.get('fingerprint')}`",
            f"- **Split:** {data.get('split', 'see run.json')}; train {_fmt(data.get('train_size', 0))}"
            f" samples, held-out {_fmt(data.get('test_size', ev.get('samples', 0)))} samples",
            f"- **Input shape:** {'×'.join(map(str, data.get('input_shape', []))) or 'n/a'}",
        ]
        + ([f"- **Skipped files:** {data['skipped_files']}"] if data.get("skipped_files") else [])
    )
    keys = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "seed")
    recipe = ("lr_schedule", "loss", "grad_clip", "max_steps", "normalize", "augment")
    keys += tuple(k for k in recipe if train.get(k) not in (None, "", 0, {}, "none"))
    hp = "\n".join(f"| {k} | `{train.get(k)}` |" for k in keys if k in train)
    lines = [
        "| hyperparameter | value |",
        "|---|---|",
        hp,
        "",
        f"- **Hardware:** {env.get('device_type')} — {env.get('device_name')}"
        f" ({env.get('threads')} threads; CUDA {env.get('cuda') or 'n/a'})",
        f"- **Training time:** {timings.get('train_s', 0):.1f} s for {_fmt(rec.get('steps', 0))} steps"
        f" ({_fmt(rec.get('samples_seen', 0))} samples, {rec.get('samples_per_second', 0):,.0f} samples/s);"
        f" data loading {timings.get('data_load_s', 0):.1f} s",
    ]
    if curves:
        lines += [
            "",
            f"![Training curves: loss per step and held-out accuracy per epoch]({CURVES})",
        ]
    s["training"] = "\n".join(lines)
    per_class = ev.get("per_class_accuracy", {})
    same = ev.get("data", {}).get("same_as_training")
    s["evaluation"] = "\n".join(
        [
            f"Evaluated on the held-out split of `{ev.get('data', {}).get('spec')}`"
            f" (fingerprint `{ev.get('data', {}).get('fingerprint')}`"
            + (", the training data's held-out split" if same else "")
            + f"), {ev.get('evaluated')}.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| accuracy | {ev['accuracy']:.4f} |",
            f"| cross-entropy loss | {ev['loss']:.4f} |",
            f"| samples | {_fmt(ev['samples'])} |",
            "",
            "Per-class accuracy (a breakdown by the factor the data records: the class):",
            "",
            "| class | accuracy |",
            "|---|---|",
            *[f"| {c} | {'n/a' if a is None else f'{a:.4f}'} |" for c, a in per_class.items()],
        ]
    )
    scored = [(a, c) for c, a in per_class.items() if a is not None]
    weakest = sorted(scored)[:3]
    lim = [
        f"- Trained on {_fmt(data.get('train_size', 0))} samples of `{data.get('spec')}` only; "
        "accuracy on other sources (other scanners, handwriting styles, resolutions, domains) "
        "was not measured.",
        f"- The reported accuracy comes from one held-out split of {_fmt(ev['samples'])} samples, "
        "one seed, no confidence interval.",
    ]
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
    usage = [
        "```python",
        f'REPO, REVISION = "{repo_id}", "{version}"  # pinned to the release tag',
    ]
    if arch["mixin"]:
        usage += [
            f"from {arch['module']} import {arch['class_name']}",
            "",
            f"model = {arch['class_name']}.from_pretrained(REPO, revision=REVISION).eval()",
        ]
    else:
        usage += [
            "from pathlib import Path",
            "from huggingface_hub import snapshot_download",
            "from modelkit.models.weights import load_model_from_dir",
            "",
            "model, config = load_model_from_dir(Path(snapshot_download(REPO, revision=REVISION)))",
        ]
    usage += [
        "```",
        "",
        f"Or check it first: `modelkit verify hf://{repo_id}@{version}`.",
    ]
    s["usage"] = "\n".join(usage)
    env_keys = (
        "python",
        "torch",
        "numpy",
        "device_type",
        "device_name",
        "threads",
        "deterministic",
    )
    s["reproducibility"] = "\n".join(
        [
            f"- **Git commit:** `{git.get('commit')}`"
            + (" (dirty tree)" if git.get("dirty") else ""),
            f"- **Seed:** `{rec.get('seed')}`",
            f"- **Config sha256:** `{rec.get('config_sha256')}`",
            f"- **Weights sha256:** `{rec.get('weights_sha256')}`",
            f"- **Environment:** {', '.join(f'{k} `{env.get(k)}`' for k in env_keys)}",
            "",
            "Training config (`config.json` → `modelkit.train`):",
            "",
            "```json",
            json.dumps(train, sort_keys=True, indent=2),
            "```",
            "",
            "Re-run and compare against this run's record:",
            "",
            "```bash",
            f"modelkit repro --against {run_dir}",
            "```",
        ]
    )
    return s


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


def _fresh_body(title: str, sections: dict[str, str]) -> str:
    parts = [f"# {title}", "", _block("summary", sections["summary"]), ""]
    for heading, key in ORDER:
        parts.append(f"## {heading}\n")
        if key:
            parts.append(_block(key, sections[key]))
        else:
            todo = TODO_BY_TITLE[heading]
            parts.append(
                f"<!-- modelkit:todo {todo} -->\n_{TODO_SECTIONS[todo][1]}_ "
                "Delete the todo marker above once written.\n\n[More Information Needed]"
            )
        parts.append("")
    return "\n".join(parts)


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


def render_card(
    run_dir: Path | str,
    *,
    repo_id: str | None = None,
    version: str | None = None,
    project: Any = None,
    existing: str | None = None,
    curves: bool = False,
) -> str:
    """The card text for a run; when ``existing`` is given, hand-written parts are kept."""
    f = _facts(Path(run_dir), project=project)
    repo = repo_id or PLACEHOLDER_REPO
    sections = _sections(f, repo_id=repo, version=version or PLACEHOLDER_VERSION, curves=curves)
    title = repo_id.split("/")[-1] if repo_id else f["arch"]["name"]
    meta = _metadata(f, repo_id=f"x/{title}", project=project)
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


def pin_usage(text: str, *, repo_id: str, version: str) -> str:
    """Rewrite the card's generated snippets for ``repo_id`` at ``version`` (used by release)."""
    out = text.replace(PLACEHOLDER_REPO, repo_id).replace(
        f'"{PLACEHOLDER_VERSION}"', f'"{version}"'
    )
    out = out.replace(f"@{PLACEHOLDER_VERSION}`", f"@{version}`")

    def repl(m: re.Match[str]) -> str:
        block = m.group(0)
        if m.group("name") != "usage":
            return block
        block = re.sub(
            r'REPO, REVISION = "[^"]*", "[^"]*"',
            f'REPO, REVISION = "{repo_id}", "{version}"',
            block,
        )
        return re.sub(
            r"modelkit verify \S+@\S+?`", f"modelkit verify hf://{repo_id}@{version}`", block
        )

    return BLOCK_RE.sub(repl, out)


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
    todos = card_todos(text)
    if strict and (errors or todos):
        raise CheckFailed(
            "card is incomplete: "
            + "; ".join(errors + [f"section '{t}' still marked todo" for t in todos]),
            hint="fill the marked sections (delete each modelkit:todo marker) and set a license",
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
    return CardResult(path, todos + (["license"] if errors else []), png, meta or {}, kept)
