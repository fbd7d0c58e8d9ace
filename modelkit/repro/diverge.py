"""Comparing two sides (final state, step fingerprints, metrics) and localising where they part:
the first divergent step, and the tensors that differ there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelkit.repro.procs import Workspace
from modelkit.repro.records import compare_metrics, fingerprints, first_divergence
from modelkit.repro.sides import Side, run_workers

Event = Callable[[str], None]
Rerun = Callable[[int, list[int]], "tuple[Side, Side]"]


def worker_rerun(config: Any, *, perturb_b: str | None, workspace: Workspace, tag: str) -> Rerun:
    """Re-run both sides of a built-in run up to ``stop`` with dumps at ``steps``."""

    def rerun(stop: int, steps: list[int]) -> tuple[Side, Side]:
        opts = {"stop_at_step": stop, "fingerprint_every": 1, "dump_steps": steps}
        a, b = run_workers(
            [(config, f"{tag}a", opts), (config, f"{tag}b", {**opts, "perturb": perturb_b})],
            workspace=workspace,
        )
        return a, b

    return rerun


def _localise(
    a: Side,
    b: Side,
    *,
    step: int | None,
    last_equal: int | None,
    final_step: int,
    rerun: Rerun,
    emit: Event,
) -> dict[str, Any]:
    """Name the first divergent step and the tensors that differ there."""

    if step is None:  # every fingerprint equal: the difference is in the final state only
        step = final_step
        last_equal = step - 1  # the final fingerprint is equal too: nothing to narrow down
    # A state dump at the first different fingerprint names the tensors only when the step
    # before it is known to be equal; otherwise (periodic fingerprints, and the final step,
    # which always has a dump) the window after the last equal fingerprint is re-run.
    narrowed = step == 0 or (last_equal is not None and last_equal == step - 1)
    if not (narrowed and a.has_dump(step) and b.has_dump(step)):
        lo = -1 if last_equal is None else last_equal
        emit(f"localising: re-running steps {lo + 1}..{step} with a fingerprint at every step")
        a, b = rerun(step, list(range(lo + 1, step + 1)))
        fine = first_divergence(fingerprints(a.metrics()), fingerprints(b.metrics()))
        step = fine["step"] if fine["step"] is not None else step
    tensors = _dump_diff(a, b, step)
    fa, fb = fingerprints(a.metrics()).get(step), fingerprints(b.metrics()).get(step)
    loss = None
    if fa and fb and fa.get("loss") != fb.get("loss"):
        loss = {"a": fa.get("loss"), "b": fb.get("loss")}
    return {"step": step, "tensors": tensors, "loss": loss}


def _dump_diff(a: Side, b: Side, step: int) -> list[dict[str, Any]]:
    """The tensors (model and optimizer state) that differ between two sides' dumps at ``step``."""
    from modelkit.repro.compare import diff_states

    ta, _ = a.dump(step)
    tb, _ = b.dump(step)
    keep = ("model.", "optim.")
    return diff_states(
        {k: v for k, v in ta.items() if k.startswith(keep)},
        {k: v for k, v in tb.items() if k.startswith(keep)},
    )


def compare_sides(
    a: Side,
    b: Side,
    *,
    up_to: int | None,
    rerun: Rerun | None,
    emit: Event,
) -> dict[str, Any]:

    ra, rb = a.record(), b.record()
    res_a, res_b = a.result(), b.result()
    final_a = res_a["final_step"]
    ma, mb = a.metrics(), b.metrics()
    fp = first_divergence(fingerprints(ma), fingerprints(mb), up_to=up_to)
    sa, sb = res_a["state_sha256"], res_b["state_sha256"]
    metrics = compare_metrics(ma, mb, up_to=up_to)
    weights = None
    if ra.get("weights_sha256") and rb.get("weights_sha256"):
        weights = {"a": ra["weights_sha256"], "b": rb["weights_sha256"]}
    identical = (
        fp["step"] is None
        and sa == sb
        and metrics["identical"]
        and (weights is None or weights["a"] == weights["b"])
    )
    out: dict[str, Any] = {
        "identical": identical,
        "steps": final_a,
        "fingerprints_compared": fp["compared"],
        "state_sha256": {"a": sa, "b": sb},
        "weights_sha256": weights,
        "metrics": metrics,
        "seconds": {"a": round(a.seconds, 3), "b": round(b.seconds, 3)},
    }
    if not identical and rerun is None:  # a control: no re-run, tensors only from dumps
        step = fp["step"] if fp["step"] is not None else final_a
        tensors: list[dict[str, Any]] = []
        if a.has_dump(step) and b.has_dump(step):
            tensors = _dump_diff(a, b, step)
        out["divergence"] = {"step": step, "tensors": tensors, "loss": None}
    elif not identical:
        out["divergence"] = _localise(
            a,
            b,
            step=fp["step"],
            last_equal=fp["last_equal"],
            final_step=final_a,
            rerun=rerun,
            emit=emit,
        )
    return out


def control_report(seed: int, ctrl: dict[str, Any]) -> dict[str, Any]:
    """The ``control`` block of a report: does another seed change the run, and where first."""
    div = ctrl.get("divergence") or {}
    return {
        "seed": seed,
        "differs": not ctrl["identical"],
        "first_divergent_step": div.get("step"),
        "tensors": div.get("tensors", []),
    }
