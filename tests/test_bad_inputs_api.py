"""Bad input through the Python API (``start_run`` / ``Run``): one typed error, checked at entry.

Each row of the table is one misuse a user made (issue 22, item 6); the error is an
:class:`InvalidArgument` (exit 2) whose message names the argument, with a hint, and nothing
of the run is left half-written. A few rows run as real scripts to show what a user sees:
one ``error:`` line, one ``hint:`` line, exit 2, no traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from modelkit.errors import (
    BadInputError,
    CheckpointMismatch,
    InvalidArgument,
    RunDirError,
)
from modelkit.runs import read_run_record
from modelkit.tracking import staging_path, start_run

REPO = Path(__file__).resolve().parents[1]


def _open(tmp: Path, **kw: Any) -> Any:
    return start_run(tmp / "run", model=torch.nn.Linear(4, 2), **kw)


def _misuse_after_open(action: Callable[[Any], Any]) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        run = _open(tmp)
        try:
            return action(run)
        finally:
            run.fail("test over")

    return call


def _backwards(run: Any) -> None:
    run.log(5, loss=1.0)
    run.log(3, loss=1.0)


CASES: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    (
        "model-object",
        lambda t: start_run(t / "run", model=object()),
        InvalidArgument,
        "model must be a torch.nn.Module, got <object object",
    ),
    (
        "fingerprint-every-negative",
        lambda t: start_run(t / "run", fingerprint_every=-1),
        InvalidArgument,
        "fingerprint_every must be an integer >= 0, got -1",
    ),
    (
        "fingerprint-every-float",
        lambda t: start_run(t / "run", fingerprint_every=2.5),
        InvalidArgument,
        "fingerprint_every must be an integer >= 0, got 2.5",
    ),
    (
        "seed-string",
        lambda t: start_run(t / "run", seed="1"),
        BadInputError,
        "seed must be an integer in [0, 2**63), got '1'",
    ),
    ("path-none", lambda t: start_run(None), InvalidArgument, "path must be a directory path"),
    (
        "overwrite-string",
        lambda t: start_run(t / "run", overwrite="yes"),
        InvalidArgument,
        "overwrite must be True or False, got 'yes'",
    ),
    (
        "finish-none",
        _misuse_after_open(lambda r: r.finish(None)),
        InvalidArgument,
        "model must be a torch.nn.Module, got None",
    ),
    (
        "finish-string",
        _misuse_after_open(lambda r: r.finish("not a module")),
        InvalidArgument,
        "model must be a torch.nn.Module, got 'not a module'",
    ),
    (
        "finish-metrics-list",
        _misuse_after_open(lambda r: r.finish(torch.nn.Linear(4, 2), metrics=[1])),
        InvalidArgument,
        "metrics must be a dict",
    ),
    (
        "log-epoch-string",
        _misuse_after_open(lambda r: r.log_epoch("one", step=1)),
        InvalidArgument,
        "epoch must be an integer >= 0, got 'one'",
    ),
    (
        "log-two-element-tensor",
        _misuse_after_open(lambda r: r.log(0, loss=torch.ones(2))),
        InvalidArgument,
        "loss must be a number",
    ),
    (
        "log-negative-step",
        _misuse_after_open(lambda r: r.log(-1, loss=1.0)),
        InvalidArgument,
        "step must be an integer >= 0, got -1",
    ),
    (
        "log-reserved-name",
        _misuse_after_open(lambda r: r.log(0, kind=1.0)),
        InvalidArgument,
        "metric name must be not one of",
    ),
    (
        "steps-backwards",
        _misuse_after_open(_backwards),
        InvalidArgument,
        "step must be an integer >= 5",
    ),
    (
        "checkpoint-keep-zero",
        _misuse_after_open(lambda r: r.checkpoint(torch.nn.Linear(4, 2), step=0, keep=0)),
        InvalidArgument,
        "keep must be an integer >= 1",
    ),
    (
        "checkpoint-model-none",
        _misuse_after_open(lambda r: r.checkpoint(None, step=0)),
        InvalidArgument,
        "model must be a torch.nn.Module",
    ),
    (
        "artifact-not-a-path",
        _misuse_after_open(lambda r: r.add_artifact(3)),
        InvalidArgument,
        "path must be a file path",
    ),
    (
        "artifact-missing",
        _misuse_after_open(lambda r: r.add_artifact("no-such-file.txt")),
        InvalidArgument,
        "path must be an existing file",
    ),
    (
        "artifact-name-with-folder",
        _misuse_after_open(lambda r: r.add_artifact(__file__, name="../x.py")),
        InvalidArgument,
        "name must be a plain file name",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_api_misuse_is_one_typed_error(
    tmp_path: Path, call: Callable[[Path], Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        call(tmp_path)
    assert needle in info.value.message and info.value.hint, (info.value.message, info.value.hint)
    assert info.value.exit_code == 2
    assert not (tmp_path / "run").exists()  # nothing published


def test_run_dir_env_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_RUN_DIR", "/")
    with pytest.raises(RunDirError, match="/ cannot be a run directory"):
        start_run(tmp_path / "run")
    assert not Path("/.run.lock").exists() and not Path("/..partial").exists()


def _script(tmp_path: Path, body: str, *, env: dict[str, str] | None = None) -> Any:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nimport modelkit\nmodel = torch.nn.Linear(4, 2)\n" + textwrap.dedent(body)
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELKIT_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            "modelkit.start_run('runs/a', model=object())\n",
            "error: model must be a torch.nn.Module",
        ),
        (
            "run = modelkit.start_run('runs/a', model=model)\nrun.log(0, loss=torch.ones(2))\n",
            "error: loss must be a number",
        ),
        (
            "run = modelkit.start_run('runs/a', model=model)\nrun.finish(None)\n",
            "error: model must be a torch.nn.Module, got None",
        ),
    ],
)
def test_a_script_sees_one_error_and_hint_exit_2(tmp_path: Path, body: str, needle: str) -> None:
    p = _script(tmp_path, body)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert lines[0].startswith(needle) and lines[1].startswith("hint: "), p.stderr
    assert "Traceback" not in p.stderr


def test_nan_metrics_are_standard_json_with_a_flag(tmp_path: Path) -> None:
    run = _open(tmp_path)
    run.log(0, loss=1.0, grad_norm=float("nan"), ratio=float("-inf"))
    record = run.finish(torch.nn.Linear(4, 2), metrics={"accuracy": float("inf")})

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))

    rows = [strict(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r["kind"] == "step")
    assert step["grad_norm"] is None and step["ratio"] is None
    assert step["nonfinite"] == {"grad_norm": "nan", "ratio": "-inf"}
    saved = strict((tmp_path / "run/run.json").read_text())
    assert saved["metrics"]["accuracy"] is None and saved["metrics"]["nonfinite"] == {
        "accuracy": "inf"
    }
    assert record["metrics"]["nonfinite"] == {"accuracy": "inf"}
    from modelkit.runs import RunDir

    typed = RunDir(tmp_path / "run").metric_rows()
    assert math.isnan(next(r for r in typed if r.kind == "step").value("grad_norm"))


def test_nan_loss_still_stops_the_run(tmp_path: Path) -> None:
    from modelkit.errors import TrainingError

    with pytest.raises(TrainingError, match="loss became nan at step 3"), _open(tmp_path) as run:
        run.log(3, loss=float("nan"))
    staged = staging_path(tmp_path / "run")
    row = json.loads((staged / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["loss"] is None and row["nonfinite"] == {"loss": "nan"}
    assert json.loads((staged / "run.json").read_text())["status"] == "failed"


# ---- resume: the checkpoint must fit before anything is loaded ---------------------------------
def _killed_run(tmp_path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    run = start_run(tmp_path / "run", model=model, config={"lr": 0.1})
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    run.log(0, loss=1.0)
    run.checkpoint(model, opt, step=0)
    run.fail("killed")
    return model, opt


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (
            lambda: (torch.nn.Linear(4, 3), None),
            "does not fit the model: shapes differ: bias: (2,) vs (3,)",
        ),
        (
            lambda: (torch.nn.Sequential(torch.nn.Linear(4, 2)), None),
            "does not fit the model: the model lacks 0.bias",
        ),
        (
            lambda: (m := torch.nn.Linear(4, 2), torch.optim.SGD(m.parameters(), lr=0.1)),
            "does not fit the optimizer (SGD)",
        ),
        (
            lambda: (
                m := torch.nn.Linear(4, 2),
                torch.optim.Adam([{"params": [m.weight]}, {"params": [m.bias]}], lr=0.1),
            ),
            "1 parameter group(s) saved, 2 now",
        ),
    ],
    ids=["other-shape", "other-architecture", "other-optimizer", "other-groups"],
)
def test_resume_refuses_a_checkpoint_that_does_not_fit(
    tmp_path: Path, build: Callable[[], Any], needle: str
) -> None:
    _killed_run(tmp_path)
    model, opt = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = start_run(tmp_path / "run", model=model, config={"lr": 0.1}, resume=True)
    with pytest.raises(CheckpointMismatch) as info:
        run.resume(model, opt)
    run.fail("test over")
    assert needle in info.value.message, info.value.message
    assert info.value.exit_code == 2 and info.value.hint
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_resume_without_run_resume_keeps_the_rows_before_the_first_new_step(
    tmp_path: Path,
) -> None:
    run = start_run(tmp_path / "run", model=torch.nn.Linear(4, 2), config={"a": 1})
    for step in range(10):
        run.log(step, loss=1.0 / (step + 1))
    run.fail("killed")
    # the script has its own resume logic (or none): it continues at step 6
    run = start_run(tmp_path / "run", model=torch.nn.Linear(4, 2), config={"a": 1}, resume=True)
    for step in range(6, 12):
        run.log(step, loss=0.5)
    run.finish(torch.nn.Linear(4, 2))
    steps = [r.step for r in __import__("modelkit.runs").runs.RunDir(tmp_path / "run").metric_rows()
             if r.kind == "step"]  # fmt: skip
    assert steps == list(range(12))  # rows 0-5 kept, 6-9 replaced by the new attempt


# ---- disk full inside checkpoint / finish: one clear error, nothing half-written ---------------
@pytest.mark.parametrize("where", ["checkpoint", "finish"])
def test_disk_full_is_one_clear_error_and_nothing_half_written(tmp_path: Path, where: str) -> None:
    # RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk would
    body = f"""
    import resource, signal
    run = modelkit.start_run("runs/a", model=model)
    run.log(0, loss=1.0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
    {"run.checkpoint(model, step=0)" if where == "checkpoint" else "run.finish(model)"}
    """
    p = _script(tmp_path, body)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("error: cannot write the run ") and "file too large" in p.stderr
    assert "hint: " in p.stderr and "Traceback" not in p.stderr
    staged = tmp_path / "runs/.a.partial"
    assert not (tmp_path / "runs/a").exists()
    leftovers = [q.name for q in staged.rglob("*") if q.name.endswith(".tmp")]
    assert leftovers == [] and not list((staged / "checkpoints").glob("ckpt-*"))
    # whole and not complete (the disk is still full: the failure itself cannot be written)
    assert json.loads((staged / "run.json").read_text())["status"] == "running"
    if (staged / "model.safetensors").exists():  # whole files only: it loads
        from safetensors.torch import load_file

        assert set(load_file(staged / "model.safetensors")) == {"weight", "bias"}
    assert not (tmp_path / "runs/.a.lock").exists()


# ---- start_run without `with` ------------------------------------------------------------------
def test_a_run_never_finished_is_failed_at_exit(tmp_path: Path) -> None:
    p = _script(tmp_path, "run = modelkit.start_run('runs/a', model=model)\nrun.log(0, loss=1.0)\n")
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "runs/.a.partial/run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "the script ended without run.finish(model)"
    assert not (tmp_path / "runs/a").exists() and not (tmp_path / "runs/.a.lock").exists()


def test_a_script_that_crashes_without_with_records_the_error(tmp_path: Path) -> None:
    body = "run = modelkit.start_run('runs/a', model=model)\nraise ValueError('boom')\n"
    p = _script(tmp_path, body)
    assert p.returncode == 1 and "ValueError: boom" in p.stderr
    record = json.loads((tmp_path / "runs/.a.partial/run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "ValueError: boom"


def test_without_with_finish_publishes(tmp_path: Path) -> None:
    body = (
        "run = modelkit.start_run('runs/a', model=model)\nrun.log(0, loss=1.0)\nrun.finish(model)\n"
    )
    p = _script(tmp_path, body)
    assert p.returncode == 0, p.stderr
    assert read_run_record(tmp_path / "runs/a").complete


# ---- artifacts ---------------------------------------------------------------------------------
def test_add_artifact_copies_regular_files_and_types_them(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    (tmp_path / "secret").write_text("hf_token")
    (tmp_path / "link.txt").symlink_to(tmp_path / "secret")
    model = torch.nn.Linear(4, 2)
    with start_run(tmp_path / "run", model=model) as run:
        where = run.add_artifact(vocab)
        run.add_artifact(vocab, name="tokenizer_vocab.txt")
        with pytest.raises(InvalidArgument, match="is a symbolic link"):
            run.add_artifact(tmp_path / "link.txt")
        with pytest.raises(InvalidArgument, match="not a regular file"):
            run.add_artifact(tmp_path)
        run.finish(model)
    assert where == tmp_path / "run/artifacts/vocab.txt" and where.read_text() == "a\nb\n"
    rec = read_run_record(tmp_path / "run")
    assert [a.name for a in rec.artifacts] == ["vocab.txt", "tokenizer_vocab.txt"]
    assert rec.artifacts[0].size == 4 and rec.artifacts[0].relpath == "artifacts/vocab.txt"
    assert sorted(p.name for p in (tmp_path / "run/artifacts").iterdir()) == [
        "tokenizer_vocab.txt",
        "vocab.txt",
    ]


# ---- symbolic links as run paths (issue 22, item 7) -------------------------------------------
def test_a_link_to_an_empty_directory_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    model = torch.nn.Linear(4, 2)
    with start_run(tmp_path / "link", model=model) as run:
        assert run.path == tmp_path / "real"  # resolved before anything is written
        run.finish(model)
    assert (tmp_path / "link").is_symlink() and read_run_record(tmp_path / "link").complete
    assert (tmp_path / "real/model.safetensors").is_file()


def test_overwrite_through_a_link_replaces_the_run_it_points_to(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    with start_run(tmp_path / "real", model=model, config={"v": 1}) as run:
        run.finish(model)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with start_run(tmp_path / "link", model=model, config={"v": 2}, overwrite=True) as run:
        run.finish(model)
    assert (tmp_path / "link").is_symlink()
    assert read_run_record(tmp_path / "link").raw["config"] == {"v": 2}


def test_a_dangling_link_is_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match="which does not exist") as info:
        start_run(tmp_path / "link", model=torch.nn.Linear(4, 2))
    assert info.value.hint and not (tmp_path / ".link.partial").exists()


def test_cli_train_overwrite_through_a_link(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelkit.cli.app import app

    args = ["train", "--model", "mnist-mlp", "--data", "digits", "--epochs", "1", "-q"]
    args += ["--max-steps", "2"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        runner = CliRunner()
        first = runner.invoke(app, [*args, "--out", "real"])
        assert first.exit_code == 0, first.output
        Path("link").symlink_to(tmp_path / "real")
        again = runner.invoke(app, [*args, "--out", "link", "--overwrite"])
        assert again.exit_code == 0, again.output
    finally:
        os.chdir(cwd)
    assert (tmp_path / "link").is_symlink() and read_run_record(tmp_path / "real").complete
    assert not list(tmp_path.glob(".*"))  # no staging, lock or old copy left


def test_an_added_artifact_is_released_once_under_its_name(tmp_path: Path) -> None:
    from modelkit.release.artifacts import declared_artifacts

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    model = torch.nn.Linear(4, 2)
    with start_run(tmp_path / "run", model=model) as run:
        run.add_artifact(vocab)
        run.finish(model)
    record = read_run_record(tmp_path / "run")
    assert record.raw["artifacts"][0]["path"] == "artifacts/vocab.txt"
    found = declared_artifacts(tmp_path / "run", record=record, project=None, released=set())
    sha = record.artifacts[0].sha256
    assert list(found) == ["vocab.txt"] and found["vocab.txt"][1] == sha
    assert found["vocab.txt"][0].read_text() == "a\nb\n"
