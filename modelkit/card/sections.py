"""The card's generated sections: markdown text from the run's facts, one function per concern.

``generated_sections`` returns ``{name: markdown}`` for the blocks between
``<!-- modelkit:begin NAME -->`` / ``<!-- modelkit:end NAME -->``, each built from the card's
:class:`~modelkit.card.facts.CardFacts` by attribute; the "How to use" text comes from
:mod:`modelkit.card.usage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelkit.card.facts import CardFacts, TrainingConfig, known
from modelkit.card.options import modelkit_link
from modelkit.card.usage import UsageTarget, usage_section
from modelkit.runs.documents import EvalRecord
from modelkit.runs.parts import EnvInfo
from modelkit.runs.record import RunRecord

CURVES = "training_curves.png"


# ------------------------------------------------------------------------------- sections
def fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else known(n)


def eval_table(ev: EvalRecord, task: Any) -> list[str]:
    """An evaluation's metrics as a markdown table (the task's metrics and its count)."""
    rows = [
        f"| {label[0].lower() + label[1:]} | {value} |"
        for label, value in task.eval_rows(ev.to_dict())
    ]
    return ["| metric | value |", "|---|---|", *rows]


@dataclass(frozen=True)
class _Inputs:
    """What every section builder reads: the card's facts, the usage target, whether curves exist."""

    f: CardFacts
    target: UsageTarget
    curves: bool


def _summary(x: _Inputs) -> str:
    ev, arch, task = x.f.eval, x.f.arch, x.f.task
    primary = task.primary
    held_out = (
        f"Held-out {primary.label.lower()} **{ev.metric(primary.key):.4f}** on "
        f"{fmt(ev.count(task.count_key))} {task.unit}."
        if ev is not None
        else "Not evaluated on the training data's held-out split."
    )
    return (
        f"`{arch.name}` ({arch.summary}), trained with {modelkit_link()} on "
        f"`{x.f.data_name}`. " + held_out
    )


def _details(x: _Inputs) -> str:
    rec, weights, arch, env = x.f.record, x.f.weights, x.f.arch, x.f.record.env
    dtypes = ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(weights.dtypes.items()))
    ref = arch.reference
    provider = f"{ref.package} {known(ref.version)}" if ref.package else "unknown"
    model_type = x.f.task.model_type(rec.data, x.f.eval, arch.kwargs)
    return "\n".join(
        [
            f"- **Architecture:** `{arch.qualified}` — {arch.description or arch.summary}",
            f"- **Rebuilt from:** `{known(ref.ref)}` (package: {provider})",
            f"- **Model kwargs:** `{json.dumps(arch.kwargs, sort_keys=True)}`",
            f"- **Parameters:** {fmt(weights.num_parameters)} in {weights.num_tensors} tensors "
            f"({dtypes}), read from the safetensors header",
            f"- **Weights:** {weights.label}, {fmt(weights.file_bytes)} bytes, sha256 "
            f"`{known(rec.weights_sha256)}`",
            *model_type,
            f"- **Framework:** PyTorch {known(env.torch)}, modelkit {known(env.modelkit)}",
            f"- **Trained:** {known(rec.started)} → {known(rec.finished)}",
            "",
            "<details><summary>Module tree</summary>",
            "",
            "```text",
            arch.tree,
            "```",
            "",
            "</details>",
        ]
    )


def _training_data(x: _Inputs) -> str:
    data, name = x.f.record.data, x.f.data_name
    source = data.source
    return "\n".join(
        [
            f"- **Dataset:** `{name}`"
            + (f" (source: {source})" if source and not looks_local(source) else ""),
            f"- **Fingerprint:** `{known(data.fingerprint)}`",
            *x.f.task.data_lines(data, x.f.eval),
        ]
        + ([f"- **Skipped files:** {data.skipped_files}"] if data.skipped_files else [])
    )


def _hyperparameter_keys(train: TrainingConfig) -> tuple[str, ...]:
    """The training config's keys the card's table shows: the basics, then the recipe's set ones."""
    # `momentum` is the flag for SGD only: an Adam card would show a value that was never used
    momentum = ("momentum",) if train.optimizer in ("sgd", "") else ()
    keys = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", *momentum, "seed")
    recipe = ("lr_schedule", "loss", "grad_clip", "max_steps", "normalize", "augment")
    return keys + tuple(k for k in recipe if train.values.get(k) not in (None, "", 0, {}, "none"))


def _training(x: _Inputs) -> str:
    train, env, task = x.f.train.values, x.f.record.env, x.f.task
    keys = _hyperparameter_keys(x.f.train)
    hp = "\n".join(f"| {k} | `{known(train.get(k))}` |" for k in keys if k in train)
    lines = (["| hyperparameter | value |", "|---|---|", hp, ""] if hp else []) + [
        f"- **Hardware:** {known(env.device_type)} — {known(env.device_name)}"
        f" ({known(env.threads)} threads; CUDA {known(env.cuda, unknown='none')})",
        training_time(x.f.record, task.unit),
    ]
    if x.curves:
        shown = task.curves()[1]
        lines += ["", f"![Training curves: loss per step and {shown} per epoch]({CURVES})"]
    return "\n".join(lines)


def _reported_lines(f: CardFacts) -> list[str]:
    """The metrics the training script reported itself (``run.finish(metrics=...)``), if any."""
    reported = {k: v for k, v in f.reported.items() if isinstance(v, (int, float))}
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


def _other_eval_lines(other: EvalRecord, task: Any) -> list[str]:
    """An evaluation on data other than the training data's held-out split."""
    d = other.data
    return [
        "",
        f"### On other data: `{d.name}`",
        "",
        f"Held-out split of `{d.name}` (fingerprint `{known(d.fingerprint)}`), "
        f"not the training data; {known(other.evaluated)}.",
        "",
        *eval_table(other, task),
    ]


def _evaluation(x: _Inputs) -> str:
    ev, task = x.f.eval, x.f.task
    if ev is not None:
        lines = [
            f"Evaluated on the held-out split of the training data `{x.f.data_name}` "
            f"(fingerprint `{known(ev.data.fingerprint)}`), "
            f"{known(ev.evaluated)}.",
            "",
            *eval_table(ev, task),
            *task.eval_details(ev),
        ]
    else:
        lines = ["Not evaluated by modelkit on the held-out split of the training data."]
    lines += _reported_lines(x.f)
    for other in x.f.other_evals:
        lines += _other_eval_lines(other, task)
    return "\n".join(lines)


def _limitations(x: _Inputs) -> str:
    task, git = x.f.task, x.f.record.git
    others = bool(x.f.other_evals)
    lim = [task.scope_line(x.f.data_name, x.f.record.data, others=others)]
    lim += task.limitations(x.f.eval)
    if git.dirty:
        lim.append("- The run was trained from a git tree with uncommitted changes.")
    if not git.commit:
        lim.append("- The run was not trained inside a git repository: the code is not pinned.")
    lim.append("- Not evaluated for robustness to adversarial or out-of-distribution inputs.")
    return "\n".join(lim)


def _usage(x: _Inputs) -> str:
    return usage_section(x.f.arch, x.target)


def _environment(env: EnvInfo) -> str:
    """The environment facts a re-run should match, each ``name `value```."""
    shown = (
        ("python", env.python),
        ("torch", env.torch),
        ("numpy", env.numpy),
        ("device_type", env.device_type),
        ("device_name", env.device_name),
        ("threads", env.threads),
        ("deterministic", env.deterministic),
    )
    return ", ".join(f"{k} `{known(v)}`" for k, v in shown)


def _reproducibility(x: _Inputs) -> str:
    rec, git = x.f.record, x.f.record.git
    shown = dict(x.f.train.values)
    if "data" in shown:
        shown["data"] = x.f.data_name  # the dataset's name; a local path stays out of the card
    return "\n".join(
        [
            f"- **Git commit:** `{known(git.commit)}`" + (" (dirty tree)" if git.dirty else ""),
            f"- **Seed:** `{known(rec.seed)}`",
            f"- **Config sha256:** `{known(rec.config_sha256)}`",
            f"- **Weights sha256:** `{known(rec.weights_sha256)}`",
            f"- **Environment:** {_environment(rec.env)}",
            "",
            f"Training config (`config.json` → `modelkit.{x.f.train.key}`"
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


def generated_sections(f: CardFacts, *, target: UsageTarget, curves: bool) -> dict[str, str]:
    """``{block name: markdown}`` for every generated block, built from the card's facts ``f``."""
    x = _Inputs(f, target, curves)
    return {name: build(x) for name, build in SECTIONS}


def training_time(rec: RunRecord, unit: str) -> str:
    """The "Training time" line: seconds, steps, what was seen and how fast (in the task's
    unit, e.g. tokens/s); a fact the run did not record is said to be not recorded."""
    train_s = rec.timings.train_s
    # what the run recorded in the task's own unit (samples, or tokens for a language model)
    by_unit = {
        "samples": (rec.samples_seen, rec.samples_per_second),
        "tokens": (rec.tokens_seen, rec.tokens_per_second),
    }
    units_seen, per_second = by_unit.get(unit, (None, None))
    seen = [f"{fmt(rec.samples_seen)} samples"] if rec.samples_seen is not None else []
    if unit != "samples" and units_seen is not None:
        seen.append(f"{fmt(units_seen)} {unit}")
    speed = per_second if per_second is not None else rec.samples_per_second
    speed_unit = unit if per_second is not None else "samples"
    seen.append(
        f"{speed:,.0f} {speed_unit}/s"
        if isinstance(speed, (int, float))
        else "throughput not recorded"
    )
    took = f"{train_s:.1f} s" if isinstance(train_s, (int, float)) else "unknown"
    return f"- **Training time:** {took} for {fmt(rec.steps)} steps ({', '.join(seen)})"


def looks_local(text: str) -> bool:
    return str(text).startswith(("/", "~", "./", "../")) or ":\\" in str(text)
