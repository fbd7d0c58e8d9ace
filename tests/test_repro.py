"""`modelkit repro`: two fresh-process runs compared bitwise, the negative control, divergence
localisation on a deliberately perturbed run, `--against` a recorded run with its env diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelkit.repro.compare import compare_metrics, diff_states, first_divergence, max_ulp
from modelkit.repro.report import FirstDivergence
from modelkit.runs import MetricRow

CONFIG = "epochs = 1\nbatch_size = 128\nfingerprint_every = 4\ndevice = 'cpu'\n"  # 12 steps


@pytest.fixture()
def config(in_tmp: Path) -> Path:
    (in_tmp / "c.toml").write_text(CONFIG)
    return in_tmp / "c.toml"


def test_two_runs_identical_and_control_differs_at_step_0(cli, config: Path) -> None:
    code, out, err = cli("repro", config, "--steps", "9", "--control", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["identical"] and r["mode"] == "twice" and r["steps"] == 9
    assert r["state_sha256"]["a"] == r["state_sha256"]["b"]
    assert r["fingerprints_compared"] == 4  # steps 0, 4, 8 and the last one, 9
    assert r["metrics"]["identical"] and r["determinism"]["use_deterministic_algorithms"]
    control = r["control"]
    assert control["differs"] and control["first_divergent_step"] == 0 and control["seed"] == 1
    assert {"model.net.0.weight", "model.net.4.bias"} <= {t["name"] for t in control["tensors"]}


def test_perturbed_run_names_the_step_and_the_tensor(
    cli, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the documented test hook: one ULP added to net.4.bias[0] after optimizer step 6 of run b
    # default fingerprint_every (25): fingerprints only at steps 0 and 12 (the last, which
    # always has a state dump); step 6 must still be found by re-running steps 1..12
    (config.parent / "d.toml").write_text(CONFIG.replace("fingerprint_every = 4\n", ""))
    monkeypatch.setenv("MODELKIT_PERTURB", "6:net.4.bias")
    code, out, err = cli("repro", "d.toml", "--steps", "12", "--format", "json")
    assert code == 3 and "runs differ: first divergent step 6" in err
    r = json.loads(out)
    assert not r["identical"] and r["perturbed"] == "6:net.4.bias"
    assert r["fingerprints_compared"] == 2  # steps 0 and 12
    d = r["divergence"]
    assert d["step"] == 6
    assert [(t["name"], t["max_ulp"], t["elements_differ"]) for t in d["tensors"]] == [
        ("model.net.4.bias", 1, 1)
    ]
    assert 0 < d["tensors"][0]["max_abs_diff"] < 1e-6


def test_against_recorded_run_env_diff_and_data_refusal(cli, config: Path, in_tmp: Path) -> None:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "modelkit", "train", "-c", str(config), "--deterministic", "-q"]
        + ["--out", "rec"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    code, out, err = cli("repro", "--against", "rec", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["verdict"] == "IDENTICAL" and r["bitwise_expected"] and r["weights_compared"]
    assert not [d for d in r["env_diff"] if d["matters"]] and r["tensors"] == []
    assert r["weights_sha256"]["recorded"] == r["weights_sha256"]["regenerated"]

    # a record from another torch: bitwise equality is not claimed, a tolerance table is shown
    record_path = in_tmp / "rec" / "run.json"
    record = json.loads(record_path.read_text())
    record["env"]["torch"] = "1.13.1"
    record_path.write_text(json.dumps(record))
    code, out, err = cli("repro", "--against", "rec")
    assert code == 0, err
    assert "torch" in out and "1.13.1" in out and "yes" in out  # the env diff table
    assert "bitwise equality not expected (torch differ)" in out
    assert "within tolerance" in out and "net.0.weight" in out

    # different data: refused outright, naming both fingerprints
    real_fp = record["data"]["fingerprint"]
    record["data"]["fingerprint"] = "sha256:" + "0" * 64
    record_path.write_text(json.dumps(record))
    code, _, err = cli("repro", "--against", "rec")
    assert code == 2 and real_fp in err and "sha256:" + "0" * 64 in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "exactly one"),
        (("c.toml", "--against", "c.toml"), "exactly one"),
        (("nope.toml",), "neither a config file"),
        (("--against", "nope"), "run directory not found"),
        (("--against", "c.toml", "--control"), "--control applies"),
        (("c.toml", "--steps", "0"), "--steps must be >= 1"),
        (("--steps", "3", "--", "python", "train.py"), "apply to config and run targets"),
        (("--against", "c.toml", "--", "python", "train.py"), "exactly one"),
    ],
)
def test_repro_bad_inputs(cli, config: Path, args: tuple[str, ...], needle: str) -> None:
    code, _, err = cli("repro", *args)
    assert code == 2 and needle in err and "hint:" in err


def test_max_ulp_and_tensor_diffs() -> None:
    x = torch.tensor([1.0, -0.5, 0.0, 3e-39], dtype=torch.float32)
    up = torch.nextafter(x, torch.full_like(x, float("inf")))
    assert max_ulp(x, up) == 1 and max_ulp(x, x) == 0
    assert max_ulp(torch.tensor([-0.0]), torch.tensor([0.0])) == 1  # bitwise different zeros
    assert max_ulp(torch.tensor([-1e-45]), torch.tensor([1e-45])) == 3  # across zero
    d = torch.tensor([1.0], dtype=torch.float64)
    assert max_ulp(d, torch.nextafter(d, torch.tensor([2.0], dtype=torch.float64))) == 1
    b = torch.tensor([1.0], dtype=torch.bfloat16)
    assert max_ulp(b, torch.tensor([1.0078125], dtype=torch.bfloat16)) == 1
    diffs = diff_states({"w": x, "s": torch.tensor([3])}, {"w": up, "s": torch.tensor([5])})
    assert [(t.name, t.max_ulp, t.elements_differ) for t in diffs] == [
        ("s", 2, 1),
        ("w", 1, 4),
    ]
    assert diff_states({"w": x}, {"w": x.clone()}) == []


def test_first_divergence_and_metrics_comparison() -> None:
    def fp(step: int, sha: str) -> MetricRow:
        return MetricRow.from_dict({"kind": "fingerprint", "step": step, "sha256": sha})

    a = {s: fp(s, str(s)) for s in (0, 5, 10, 15)}
    b = {**a, 10: fp(10, "x"), 15: fp(15, "y")}
    assert first_divergence(a, b) == FirstDivergence(step=10, last_equal=5, compared=4)
    assert first_divergence(a, b, up_to=9).step is None
    row = {"kind": "epoch", "step": 3, "test_loss": 1.0, "elapsed_s": 0.1}
    rows = [MetricRow.from_dict(row)]
    timing = [MetricRow.from_dict({**row, "elapsed_s": 9.0})]
    assert compare_metrics(rows, timing).identical  # timing ignored
    diff = compare_metrics(rows, [MetricRow.from_dict({**row, "test_loss": 1.0000001})])
    assert not diff.identical and diff.first_difference is not None
    assert diff.first_difference.row == 0


def test_a_worker_without_an_error_file_is_named_by_what_its_output_says(tmp_path: Path) -> None:
    """torchrun's failure report ends in a rule of '='; the message quotes the line before it."""
    from modelkit.repro.sides import _worker_error

    stderr = (
        "terminate called without an active exception\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "============================================================\n"
        "Root Cause (first observed failure):\n"
        "  exitcode  : -6 (pid: 123)\n"
        "  traceback : Signal 6 (SIGABRT) received by PID 123\n"
        "============================================================\n"
    )
    err = _worker_error("b", tmp_path / "b", 1, stderr)
    assert (
        err.message == "run b failed (exit 1): traceback : Signal 6 (SIGABRT) received by PID 123"
    )
    assert (
        _worker_error("b", tmp_path / "b", 1, "\n").message == "run b failed (exit 1): (no output)"
    )
