"""Comparing two sides (final state, step fingerprints, metrics) and localising where they part:
the first divergent step, and the tensors that differ there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from modelkit.repro.payloads import WorkerOptions
from modelkit.repro.procs import Workspace
from modelkit.repro.records import compare_metrics, fingerprints, first_divergence
from modelkit.repro.report import Comparison, Control, Divergence, Pair, TensorDiff
from modelkit.repro.sides import Job, Side, run_workers

Event = Callable[[str], None]
Rerun = Callable[[int, list[int]], "tuple[Side, Side]"]


def worker_rerun(config: Any, *, perturb_b: str | None, workspace: Workspace, tag: str) -> Rerun:
    """Re-run both sides of a built-in run up to ``stop`` with dumps at ``steps``."""

    def rerun(stop: int, steps: list[int]) -> tuple[Side, Side]:
        opts = WorkerOptions(stop_at_step=stop, fingerprint_every=1, dump_steps=steps)
        a, b = run_workers(
            [
                Job(config, f"{tag}a", opts),
                Job(config, f"{tag}b", replace(opts, perturb=perturb_b)),
            ],
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
) -> Divergence:
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
        step = fine.step if fine.step is not None else step
    tensors = _dump_diff(a, b, step)
    fa, fb = fingerprints(a.metrics()).get(step), fingerprints(b.metrics()).get(step)
    loss = None
    if fa and fb and fa.loss != fb.loss:
        loss = Pair(a=fa.loss, b=fb.loss)
    return Divergence(step=step, tensors=tensors, loss=loss)


def _dump_diff(a: Side, b: Side, step: int) -> list[TensorDiff]:
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
) -> Comparison:
    """Compare two finished sides; localise the first divergence when they differ."""
    ra, rb = a.record(), b.record()
    res_a, res_b = a.result(), b.result()
    ma, mb = a.metrics(), b.metrics()
    fp = first_divergence(fingerprints(ma), fingerprints(mb), up_to=up_to)
    metrics = compare_metrics(ma, mb, up_to=up_to)
    weights = None
    if ra.weights_sha256 and rb.weights_sha256:
        weights = Pair(a=ra.weights_sha256, b=rb.weights_sha256)
    identical = (
        fp.step is None
        and res_a.state_sha256 == res_b.state_sha256
        and metrics.identical
        and (weights is None or weights.a == weights.b)
    )
    divergence = None
    if not identical and rerun is None:  # a control: no re-run, tensors only from dumps
        step = fp.step if fp.step is not None else res_a.final_step
        tensors: list[TensorDiff] = []
        if a.has_dump(step) and b.has_dump(step):
            tensors = _dump_diff(a, b, step)
        divergence = Divergence(step=step, tensors=tensors, loss=None)
    elif not identical:
        divergence = _localise(
            a,
            b,
            step=fp.step,
            last_equal=fp.last_equal,
            final_step=res_a.final_step,
            rerun=rerun,
            emit=emit,
        )
    return Comparison(
        identical=identical,
        steps=res_a.final_step,
        fingerprints_compared=fp.compared,
        state_sha256=Pair(a=res_a.state_sha256, b=res_b.state_sha256),
        weights_sha256=weights,
        metrics=metrics,
        seconds=Pair(a=round(a.seconds, 3), b=round(b.seconds, 3)),
        divergence=divergence,
    )


def control_report(seed: int, ctrl: Comparison) -> Control:
    """The ``control`` block of a report: does another seed change the run, and where first."""
    div = ctrl.divergence
    return Control(
        seed=seed,
        differs=not ctrl.identical,
        first_divergent_step=div.step if div is not None else None,
        tensors=list(div.tensors) if div is not None else [],
    )
