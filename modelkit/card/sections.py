"""The card's generated sections: markdown text from the run's facts, one function per concern.

``generated_sections`` returns ``{name: markdown}`` for the blocks between
``<!-- modelkit:begin NAME -->`` / ``<!-- modelkit:end NAME -->``; ``usage_section`` writes the
"How to use" text for where a release lives (local registry or Hub).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelkit.card.facts import known, modelkit_link
from modelkit.runs.documents import EvalRecord, read_config_args
from modelkit.runs.parts import DataInfo
from modelkit.runs.typed import read_typed
from modelkit.weights.snippet import release_snippet

CURVES = "training_curves.png"
PLACEHOLDER_REPO = "YOUR-ORG/YOUR-MODEL"


PLACEHOLDER_VERSION = "vX.Y"


# ------------------------------------------------------------------------------- sections
def fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else known(n)


@dataclass(frozen=True)
class UsageTarget:
    """Where a release lives, for the card's loading snippet."""

    kind: str  # "hub" | "local"
    repo_id: str
    version: str
    registry: str | None = None  # a local registry's absolute path


def _install_needs(arch: dict[str, Any]) -> str:
    """What to ``pip install`` for the model's module: modelkit and the package providing it."""
    ref = arch.get("reference") or {}
    module = (ref.get("ref") or f"{arch['module']}:").partition(":")[0]
    package, version = ref.get("package"), ref.get("version")
    if package and package != "modelkit":
        needs = (
            f"`pip install modelkit '{package}=={version}'`"
            if version
            else f"`pip install modelkit {package}`"
        )
        return needs + f" (`{package}` provides `{module}`, which defines the model)"
    if package == "modelkit":
        return "`pip install modelkit` (the model is one of modelkit's own)"
    return (
        f"`pip install modelkit` and the package that provides `{module}` "
        "(its name was not recorded: the model's module was not installed as a package)"
    )


def _load_calls(arch: dict[str, Any], target: UsageTarget) -> tuple[str, str, str, str]:
    """``(where, modelkit.load call, mixin from_pretrained call, verify command)`` for ``target``."""
    if target.kind == "local":
        return (
            f"the local registry `{target.registry}`",
            f'modelkit.load("{target.registry}", "{target.version}", repo="{target.repo_id}")',
            f'{arch["class_name"]}.from_pretrained("{target.repo_id}", revision="{target.version}", '
            f'cache_dir="{target.registry}", local_files_only=True)',
            f"modelkit verify {target.registry}@{target.version} --repo {target.repo_id}",
        )
    return (
        f"the Hugging Face Hub (`{target.repo_id}`)",
        f'modelkit.load("hf://{target.repo_id}", "{target.version}")',
        f'{arch["class_name"]}.from_pretrained("{target.repo_id}", revision="{target.version}")',
        f"modelkit verify hf://{target.repo_id}@{target.version}",
    )


def _plain_load_lines(arch: dict[str, Any], target: UsageTarget) -> list[str]:
    """The loading snippet without modelkit (plain PyTorch or transformers), when it can be written."""
    ref = arch.get("reference") or {}
    if not (ref.get("ref") and arch.get("weights") is not None):
        return []
    plain = release_snippet(
        ref["ref"],
        arch["kwargs"],
        weights=arch["weights"],
        repo_id=target.repo_id,
        revision=target.version,
        registry=target.registry if target.kind == "local" else None,
        configs=read_config_args(ref.get("configs") or {}, source="config.json"),
    )
    hf = any(c.get("kind") == "transformers" for c in (ref.get("configs") or {}).values())
    label = "Or with transformers' own loader:" if hf else "Or with plain PyTorch:"
    return ["", label, "", "```python", plain.rstrip(), "```"]


def usage_section(arch: dict[str, Any], target: UsageTarget) -> str:
    """The "How to use" text: exactly what loads this release from ``target``."""
    ref = arch.get("reference") or {}
    where, call, mixin_call, check = _load_calls(arch, target)
    lines = [
        f"Load release `{target.version}` from {where}; needs {_install_needs(arch)}:",
        "",
        "```python",
        "import modelkit",
        "",
        f"model = {call}  # pinned to the release tag",
        "```",
        "",
        "`modelkit.load` rebuilds the model from the reference in `config.json` "
        f"(`{known(ref.get('ref'))}`), checks the weights' sha256 against `run.json` and "
        "`manifest.json`, and loads the safetensors weights (no pickle).",
        *_plain_load_lines(arch, target),
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


def default_target(*, repo_id: str | None, version: str | None, project: Any) -> UsageTarget:
    """The snippet's target before a release: the project's hub, else placeholders."""
    return UsageTarget(
        kind="hub", repo_id=repo_id or PLACEHOLDER_REPO, version=version or PLACEHOLDER_VERSION
    )


def eval_table(ev: dict[str, Any], task: Any) -> list[str]:
    """An evaluation's metrics as a markdown table (the task's metrics and its count)."""
    rows = [f"| {label[0].lower() + label[1:]} | {value} |" for label, value in task.eval_rows(ev)]
    return ["| metric | value |", "|---|---|", *rows]


@dataclass(frozen=True)
class _Inputs:
    """What every section builder reads: the card's facts, the usage target, whether curves exist."""

    f: dict[str, Any]
    target: UsageTarget
    curves: bool

    def rec(self, key: str) -> dict[str, Any]:
        """A sub-record of ``run.json`` (``data``, ``env``, ``git``, ``timings``), ``{}`` if absent."""
        return self.f["record"].get(key) or {}

    def data_info(self) -> DataInfo:
        """run.json's data block, typed (what the task's card lines read)."""
        return read_typed(DataInfo, self.rec("data"), source="run.json", where="data")

    def eval_record(self) -> EvalRecord | None:
        """The held-out evaluation, typed (what the task's card lines read)."""
        ev = self.f["eval"]
        return None if ev is None else EvalRecord.from_dict(ev, source="eval.json")


def _summary(x: _Inputs) -> str:
    ev, arch, task = x.f["eval"], x.f["arch"], x.f["task"]
    primary = task.primary
    held_out = (
        f"Held-out {primary.label.lower()} **{ev[primary.key]:.4f}** on "
        f"{fmt(ev[task.count_key])} {task.unit}."
        if ev is not None
        else "Not evaluated on the training data's held-out split."
    )
    return (
        f"`{arch['name']}` ({arch['summary']}), trained with {modelkit_link()} on "
        f"`{x.f['data_name']}`. " + held_out
    )


def _details(x: _Inputs) -> str:
    rec, hdr, arch, env = x.f["record"], x.f["header"], x.f["arch"], x.rec("env")
    dtypes = ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(hdr["dtypes"].items()))
    ref = arch.get("reference") or {}
    provider = f"{ref['package']} {known(ref.get('version'))}" if ref.get("package") else "unknown"
    model_type = x.f["task"].model_type(x.data_info(), x.eval_record(), arch["kwargs"])
    return "\n".join(
        [
            f"- **Architecture:** `{arch['class']}` — {arch['description'] or arch['summary']}",
            f"- **Rebuilt from:** `{known(ref.get('ref'))}` (package: {provider})",
            f"- **Model kwargs:** `{json.dumps(arch['kwargs'], sort_keys=True)}`",
            f"- **Parameters:** {fmt(hdr['num_parameters'])} in {hdr['num_tensors']} tensors "
            f"({dtypes}), read from the safetensors header",
            f"- **Weights:** {hdr['label']}, {fmt(hdr['file_bytes'])} bytes, sha256 "
            f"`{known(rec.get('weights_sha256'))}`",
            *model_type,
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


def _training_data(x: _Inputs) -> str:
    data, name = x.rec("data"), x.f["data_name"]
    source = data.get("source")
    return "\n".join(
        [
            f"- **Dataset:** `{name}`"
            + (f" (source: {source})" if source and not looks_local(source) else ""),
            f"- **Fingerprint:** `{known(data.get('fingerprint'))}`",
            *x.f["task"].data_lines(x.data_info(), x.eval_record()),
        ]
        + ([f"- **Skipped files:** {data['skipped_files']}"] if data.get("skipped_files") else [])
    )


def _hyperparameter_keys(train: dict[str, Any]) -> tuple[str, ...]:
    """The training config's keys the card's table shows: the basics, then the recipe's set ones."""
    opt = train.get("optimizer")
    opt_name = str(opt.get("name") if isinstance(opt, dict) else opt or "").lower()
    # `momentum` is the flag for SGD only: an Adam card would show a value that was never used
    momentum = ("momentum",) if opt_name in ("sgd", "") else ()
    keys = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", *momentum, "seed")
    recipe = ("lr_schedule", "loss", "grad_clip", "max_steps", "normalize", "augment")
    return keys + tuple(k for k in recipe if train.get(k) not in (None, "", 0, {}, "none"))


def _training(x: _Inputs) -> str:
    train, env, task = x.f["train"], x.rec("env"), x.f["task"]
    keys = _hyperparameter_keys(train)
    hp = "\n".join(f"| {k} | `{known(train.get(k))}` |" for k in keys if k in train)
    lines = (["| hyperparameter | value |", "|---|---|", hp, ""] if hp else []) + [
        f"- **Hardware:** {known(env.get('device_type'))} — {known(env.get('device_name'))}"
        f" ({known(env.get('threads'))} threads; CUDA {known(env.get('cuda'), unknown='none')})",
        training_time(x.f["record"], x.rec("timings"), task.unit),
    ]
    if x.curves:
        shown = task.curves()[1]
        lines += ["", f"![Training curves: loss per step and {shown} per epoch]({CURVES})"]
    return "\n".join(lines)


def _reported_lines(f: dict[str, Any]) -> list[str]:
    """The metrics the training script reported itself (``run.finish(metrics=...)``), if any."""
    reported = {k: v for k, v in (f.get("reported") or {}).items() if isinstance(v, (int, float))}
    if not reported:
        return []
    return [
        "",
        "Reported by the training script at the end of training (`run.finish(metrics=...)`; "
        "its own data and split, not re-computed by modelkit):",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in sorted(reported.items())],
    ]


def _other_eval_lines(other: dict[str, Any], task: Any) -> list[str]:
    """An evaluation on data other than the training data's held-out split."""
    d = other["data"]
    return [
        "",
        f"### On other data: `{d['name']}`",
        "",
        f"Held-out split of `{d['name']}` (fingerprint `{known(d.get('fingerprint'))}`), "
        f"not the training data; {known(other.get('evaluated'))}.",
        "",
        *eval_table(other, task),
    ]


def _evaluation(x: _Inputs) -> str:
    ev, task = x.f["eval"], x.f["task"]
    if ev is not None:
        lines = [
            f"Evaluated on the held-out split of the training data `{x.f['data_name']}` "
            f"(fingerprint `{known((ev.get('data') or {}).get('fingerprint'))}`), "
            f"{known(ev.get('evaluated'))}.",
            "",
            *eval_table(ev, task),
            *task.eval_details(x.eval_record()),
        ]
    else:
        lines = ["Not evaluated by modelkit on the held-out split of the training data."]
    lines += _reported_lines(x.f)
    for other in x.f["other_evals"]:
        lines += _other_eval_lines(other, task)
    return "\n".join(lines)


def _limitations(x: _Inputs) -> str:
    task, git = x.f["task"], x.rec("git")
    others = bool(x.f["other_evals"])
    lim = [task.scope_line(x.f["data_name"], x.data_info(), others=others)]
    lim += task.limitations(x.eval_record())
    if git.get("dirty"):
        lim.append("- The run was trained from a git tree with uncommitted changes.")
    if not git.get("commit"):
        lim.append("- The run was not trained inside a git repository: the code is not pinned.")
    lim.append("- Not evaluated for robustness to adversarial or out-of-distribution inputs.")
    return "\n".join(lim)


def _usage(x: _Inputs) -> str:
    return usage_section(x.f["arch"], x.target)


ENV_KEYS = ("python", "torch", "numpy", "device_type", "device_name", "threads", "deterministic")


def _reproducibility(x: _Inputs) -> str:
    rec, env, git = x.f["record"], x.rec("env"), x.rec("git")
    shown = dict(x.f["train"])
    if "data" in shown:
        shown["data"] = x.f["data_name"]  # the dataset's name; a local path stays out of the card
    return "\n".join(
        [
            f"- **Git commit:** `{known(git.get('commit'))}`"
            + (" (dirty tree)" if git.get("dirty") else ""),
            f"- **Seed:** `{known(rec.get('seed'))}`",
            f"- **Config sha256:** `{known(rec.get('config_sha256'))}`",
            f"- **Weights sha256:** `{known(rec.get('weights_sha256'))}`",
            f"- **Environment:** {', '.join(f'{k} `{known(env.get(k))}`' for k in ENV_KEYS)}",
            "",
            f"Training config (`config.json` → `modelkit.{x.f.get('config_key', 'train')}`"
            + ("; `data` shown by name):" if "data" in shown else "):"),
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


# the generated blocks, in the card's order: (block name, builder)
SECTIONS: tuple[tuple[str, Callable[[_Inputs], str]], ...] = (
    ("summary", _summary),
    ("details", _details),
    ("training-data", _training_data),
    ("training", _training),
    ("evaluation", _evaluation),
    ("limitations", _limitations),
    ("usage", _usage),
    ("reproducibility", _reproducibility),
)


def generated_sections(f: dict[str, Any], *, target: UsageTarget, curves: bool) -> dict[str, str]:
    """``{block name: markdown}`` for every generated block, built from the card's facts ``f``."""
    x = _Inputs(f, target, curves)
    return {name: build(x) for name, build in SECTIONS}


def training_time(rec: dict[str, Any], timings: dict[str, Any], unit: str) -> str:
    """The "Training time" line: seconds, steps, what was seen and how fast (in the task's
    unit, e.g. tokens/s); a fact the run did not record is said to be not recorded."""
    train_s = timings.get("train_s")
    seen = [f"{fmt(rec['samples_seen'])} samples"] if rec.get("samples_seen") is not None else []
    if unit != "samples" and rec.get(f"{unit}_seen") is not None:
        seen.append(f"{fmt(rec[f'{unit}_seen'])} {unit}")
    speed = rec.get(f"{unit}_per_second", rec.get("samples_per_second"))
    speed_unit = unit if rec.get(f"{unit}_per_second") is not None else "samples"
    seen.append(
        f"{speed:,.0f} {speed_unit}/s"
        if isinstance(speed, (int, float))
        else "throughput not recorded"
    )
    took = f"{train_s:.1f} s" if isinstance(train_s, (int, float)) else "unknown"
    return f"- **Training time:** {took} for {fmt(rec.get('steps'))} steps ({', '.join(seen)})"


def looks_local(text: str) -> bool:
    return str(text).startswith(("/", "~", "./", "../")) or ":\\" in str(text)
