"""Every bad input, through the real CLI, table-driven.

Each case builds its files in an empty directory, runs one `modelkit` command in-process
(typer's CliRunner: the same parser, callbacks and error handler as the console script), and
asserts the documented contract: the exit code, exactly one ``error:`` line and one ``hint:``
line on stderr, no traceback, and a directory that is byte-identical to before (nothing
written, nothing half-written). Cases are grouped by class; `pytest -k config_types` etc.
runs one class.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import resource
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

Setup = Callable[[Path, "Fixtures"], None]


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    args: tuple[str, ...]
    code: int = 2
    needle: str | None = None  # a piece of the error line (the key, file or value named)
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Setup | None = None

    @property
    def id(self) -> str:
        return f"{self.group}-{self.name}"


@dataclass
class Fixtures:
    """Lazily built, shared inputs (a trained run, a decompression-bomb PNG)."""

    request: pytest.FixtureRequest

    def run(self) -> Path:
        return self.request.getfixturevalue("trained_run")

    def bomb(self) -> bytes:
        return self.request.getfixturevalue("bomb_png")


TRAIN = ("train", "--epochs", "1", "--quiet", "--out", "run")
TRAIN_CFG = ("train", "--quiet", "--out", "run")  # the config file's epochs must not be overridden


def cfg(name: str, text: str | bytes, *, group: str = "config_types", needle: str | None = None):
    suffix = "toml"
    if isinstance(text, str) and text.startswith("yaml:"):
        suffix, text = "yaml", text[5:]
    elif isinstance(text, str) and text.startswith("json:"):
        suffix, text = "json", text[5:]
    return Case(
        group, name, (*TRAIN_CFG, "-c", f"c.{suffix}"), needle=needle, files={f"c.{suffix}": text}
    )


def project(name: str, table: str | bytes, *, needle: str | None = None) -> Case:
    text = table if isinstance(table, bytes) else "[tool.modelkit]\n" + table + "\n"
    return Case("project_tables", name, ("models",), needle=needle, files={"pyproject.toml": text})


def opt(name: str, *args: str, needle: str | None = None, files=None) -> Case:
    return Case(
        "numeric_options", name, args, needle=needle, files=files or {"c.toml": "epochs = 1\n"}
    )


# --- helpers that build real bad files ------------------------------------------------------


def bench_baseline(name: str, doc: dict, needle: str) -> Case:
    files = {"benchmarks/test_x.py": "def test_x():\n    pass\n", "base.json": json.dumps(doc)}
    args = ("benchmark", "--baseline", "base.json", "--mode", "time")
    return Case("bench_results", name, args, needle="base.json: field " + needle, files=files)


def idx(magic: int, array: np.ndarray) -> bytes:
    head = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist_files(labels: list[int], n_images: int | None = None, magic: int = 2051) -> dict:
    n = len(labels) if n_images is None else n_images
    return {
        "m/t10k-images-idx3-ubyte": idx(magic, np.zeros((n, 28, 28), np.uint8)),
        "m/t10k-labels-idx1-ubyte": idx(2049, np.array(labels, np.uint8)),
    }


def png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(extra: dict | None = None) -> dict:
    files = {f"img/{c}/{i}.png": png((i * 30, 0, 0)) for c in ("cat", "dog") for i in range(5)}
    return {**files, **(extra or {})}


def copy_run(mutate: Callable[[Path], None]) -> Setup:
    def setup(tmp: Path, fx: Fixtures) -> None:
        shutil.copytree(fx.run(), tmp / "run")
        mutate(tmp / "run")

    return setup


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data))

    return mutate


def write(name: str, blob: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(blob)


def drop_shape(run: Path) -> None:
    p = run / "model.safetensors"
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    del header[first]["shape"]
    body = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])
    edit_json("run.json", lambda r: r.pop("weights_sha256"))(run)


def bomb_folder(tmp: Path, fx: Fixtures) -> None:
    for rel, blob in image_folder().items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(blob)
    (tmp / "img" / "cat" / "bomb.png").write_bytes(fx.bomb())


def non_utf8_name(tmp: Path, fx: Fixtures) -> None:
    for rel, blob in image_folder().items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(blob)
    with open(os.path.join(os.fsencode(tmp / "img" / "dog"), b"\xff\xfe.png"), "wb") as f:
        f.write(png())


BAD_LOADER = """
import torch
from modelkit.data.base import Dataset

def load():
    x = torch.zeros(6, 1, 28, 28)
    return Dataset(spec="bad", x_train=x, y_train=torch.tensor([0, 1, 2, 3, 4, 12]),
                   x_test=x, y_test=torch.zeros(6, dtype=torch.int64),
                   classes=[str(i) for i in range(10)], fingerprint="x")
"""

# --- the table ----------------------------------------------------------------------------

CASES: list[Case] = [
    # config files: every value checked by type and range from TrainConfig's annotations
    cfg("epochs-float", "epochs = 1.5\n", needle="key 'epochs' must be an integer (got 1.5)"),
    cfg("epochs-bool", "epochs = true\n", needle="key 'epochs' must be an integer (got true)"),
    cfg("epochs-string", 'epochs = "3"\n', needle="key 'epochs'"),
    cfg("epochs-zero", "epochs = 0\n", needle="epochs must be >= 1"),
    cfg("max-shard-size-unit", 'max_shard_size = "5XB"\n', needle="max-shard-size must be a size"),
    cfg("device-int", "device = 1\n", needle="key 'device' must be a string"),
    cfg("device-tpu", 'device = "tpu"\n', needle="unknown device 'tpu'"),
    cfg("seed-beyond-64-bits", "seed = 18446744073709551617\n", needle="key 'seed'"),
    cfg("seed-negative", "seed = -1\n", needle="key 'seed' must be an integer >= 0"),
    cfg("lr-nan", "lr = nan\n", needle="key 'lr' must be a finite number (got nan)"),
    cfg("lr-inf", "lr = inf\n", needle="(got inf)"),
    cfg("lr-negative", "lr = -0.001\n", needle="lr must be > 0"),
    cfg("lr-string", 'lr = "fast"\n', needle="key 'lr'"),
    cfg("batch-size-zero", "batch_size = 0\n", needle="batch-size must be >= 1"),
    cfg("batch-size-list", "batch_size = [1, 2]\n", needle="key 'batch_size'"),
    cfg("deterministic-int", "deterministic = 1\n", needle="must be true or false"),
    cfg("threads-negative", "threads = -1\n", needle="threads must be >= 0"),
    cfg("eval-batch-size-zero", "eval_batch_size = 0\n", needle="must be an integer >= 1"),
    cfg(
        "model-kwargs-not-table", "model_kwargs = 3\n", needle="key 'model_kwargs' must be a table"
    ),
    cfg(
        "model-kwargs-huge-int", "[model_kwargs]\nhidden = 99999999999999999999\n", needle="64-bit"
    ),
    cfg("data-list", 'data = ["digits"]\n', needle="key 'data'"),
    cfg("precision-unknown", 'precision = "fp64"\n', needle="unknown precision 'fp64'"),
    cfg("unknown-key", "epoch = 3\n", needle="did you mean 'epochs'"),
    cfg("date-value", "epochs = 1979-05-27\n", needle="key 'epochs'"),
    cfg("nested-train-table", "[train]\nepochs = 2.5\n", needle="key 'epochs'"),
    cfg("yaml-float", "yaml:epochs: 1.5\n", needle="key 'epochs'"),
    cfg("yaml-null", "yaml:lr: null\n", needle="key 'lr' must be a finite number (got null)"),
    cfg("yaml-list-top", "yaml:- 1\n- 2\n", needle="top level must be a table"),
    cfg("json-bool-seed", 'json:{"seed": false}', needle="key 'seed'"),
    cfg("not-utf8", b"epochs = 3\n# caf\xe9\n", needle="is not UTF-8 text"),
    cfg("toml-syntax", "epochs = = 3\n", needle="cannot parse"),
    Case("config_types", "config-missing", (*TRAIN, "-c", "nope.toml"), needle="not found"),
    Case("config_types", "config-suffix", (*TRAIN, "-c", "c.ini"), files={"c.ini": "x"}),
    # [tool.modelkit] in pyproject.toml: checked when the project is loaded, any verb
    project("hub-int", "hub = 5", needle="key 'hub' must be a string (got 5)"),
    project("run-list", 'run = ["a"]', needle="key 'run'"),
    project("models-int", "models = 3", needle="key 'models' must be a table"),
    project("models-value-int", "models = {a = 1}", needle="models.a"),
    project("datasets-int", "datasets = 3", needle="key 'datasets'"),
    project("benchmark-string", 'benchmark = "x"', needle="key 'benchmark'"),
    project(
        "defaults-float-epochs", "defaults = {epochs = 1.5}", needle="[tool.modelkit.defaults]"
    ),
    project("defaults-unknown-key", "defaults = {epoch = 2}", needle="did you mean 'epochs'"),
    project("defaults-negative-seed", "defaults = {seed = -5}", needle="key 'seed'"),
    project(
        "benchmark-threshold-nan", "benchmark = {threshold = nan}", needle="benchmark.threshold"
    ),
    project("defaults-list-inf", "defaults = {model_kwargs = {w = [1.0, inf]}}", needle="w[1]"),
    project("not-a-table", b"[tool]\nmodelkit = 3\n", needle="must be a table"),
    project("not-utf8", b"[tool.modelkit]\nrun = '\xff'\n", needle="is not UTF-8 text"),
    project("toml-syntax", b"[tool.modelkit\n", needle="cannot parse"),
    # numeric options: a range on every one, NaN and inf refused before anything runs
    opt("train-epochs-zero", *TRAIN, "--epochs", "0", needle="--epochs must be >= 1 (got 0)"),
    opt("train-epochs-text", *TRAIN, "--epochs", "abc", needle="--epochs: "),
    opt("train-batch-size-zero", *TRAIN, "--batch-size", "0", needle="--batch-size must"),
    opt("train-lr-zero", *TRAIN, "--lr", "0", needle="--lr must be > 0"),
    opt("train-lr-nan", *TRAIN, "--lr", "nan", needle="must be a finite number > 0 (got nan)"),
    opt("train-lr-inf", *TRAIN, "--lr", "inf", needle="(got inf)"),
    opt("train-seed-negative", *TRAIN, "--seed", "-1", needle="--seed must"),
    opt("train-seed-too-big", *TRAIN, "--seed", str(2**32), needle="<= 4294967295"),
    opt("train-threads-negative", *TRAIN, "--threads", "-1", needle="--threads must"),
    opt("train-fingerprint-negative", *TRAIN, "--fingerprint-every", "-1", needle="fingerprint"),
    opt("train-nproc-zero", *TRAIN, "--nproc-per-node", "0", needle="--nproc-per-node must"),
    opt("train-nnodes-zero", *TRAIN, "--nnodes", "0", needle="--nnodes must"),
    opt("train-node-rank-negative", *TRAIN, "--node-rank", "-1", needle="--node-rank must"),
    opt("train-port-too-big", *TRAIN, "--master-port", "70000", needle="<= 65535"),
    opt("train-device-tpu", *TRAIN, "--device", "tpu", needle="unknown device 'tpu'"),
    opt("eval-device-tpu", "eval", "run", "--device", "tpu", needle="unknown device 'tpu'"),
    opt("benchmark-threshold-nan", "benchmark", "--threshold", "nan", needle="(got nan)"),
    opt(
        "benchmark-threshold-negative", "benchmark", "--threshold", "-1", needle="--threshold must"
    ),
    opt("benchmark-threshold-inf", "benchmark", "--threshold", "inf", needle="finite"),
    opt("benchmark-max-time-zero", "benchmark", "--max-time", "0", needle="--max-time must"),
    opt("benchmark-min-rounds-zero", "benchmark", "--min-rounds", "0", needle="--min-rounds must"),
    opt("benchmark-max-rounds-zero", "benchmark", "--max-rounds", "0", needle="--max-rounds must"),
    opt("benchmark-processes-zero", "benchmark", "--processes", "0", needle="--processes must"),
    opt("repro-atol-negative", "repro", "c.toml", "--atol", "-1", needle="--atol must be >= 0"),
    opt("repro-atol-nan", "repro", "c.toml", "--atol", "nan", needle="(got nan)"),
    opt("repro-steps-zero", "repro", "c.toml", "--steps", "0", needle="--steps must"),
    opt("repro-nproc-zero", "repro", "c.toml", "--nproc-per-node", "0", needle="nproc"),
    opt("unknown-option", *TRAIN, "--epoch", "2", needle="No such option"),
    # OS errors: the path named, exit 2 where the path given cannot be used
    Case("os_errors", "out-under-a-file", (*TRAIN[:-1], "f/run"), files={"f": "x"}, needle="f/run"),
    Case(
        "os_errors", "out-is-a-file", (*TRAIN[:-1], "f"), files={"f": "x"}, needle="not a directory"
    ),
    Case("os_errors", "out-in-sys", (*TRAIN[:-1], "/sys/modelkit-run"), needle="/sys/modelkit-run"),
    Case("os_errors", "config-is-a-directory", (*TRAIN, "-c", "d.toml"), files={"d.toml/x": "1"}),
    Case("os_errors", "init-under-a-file", ("init", "f/proj", "--no-git"), files={"f": "x"}),
    Case("os_errors", "init-in-sys", ("init", "/sys/modelkit-proj", "--no-git"), needle="/sys"),
    Case("os_errors", "eval-a-file", ("eval", "f"), files={"f": "x"}, needle="not found: f"),
    Case("os_errors", "card-missing-run", ("card", "nowhere"), needle="nowhere"),
    # data: validated before the first training step
    Case(
        "data",
        "mnist-label-out-of-range",
        (*TRAIN, "-d", "mnist:m"),
        files=mnist_files([0, 1, 2, 12, 3]),
        needle="label 12 at index 3",
    ),
    Case(
        "data",
        "mnist-count-mismatch",
        (*TRAIN, "-d", "mnist:m"),
        files=mnist_files([0, 1, 2], n_images=4),
        needle="4 images but",
    ),
    Case(
        "data",
        "mnist-wrong-magic",
        (*TRAIN, "-d", "mnist:m"),
        files=mnist_files([0, 1], magic=2049),
        needle="wrong magic",
    ),
    Case(
        "data",
        "mnist-truncated",
        (*TRAIN, "-d", "mnist:m"),
        files={**mnist_files([0, 1]), "m/t10k-labels-idx1-ubyte": b"\x00\x00\x08\x01\x00"},
        needle="truncated",
    ),
    Case(
        "data",
        "mnist-bad-gzip",
        (*TRAIN, "-d", "mnist:m"),
        files={**mnist_files([0]), "m/t10k-labels-idx1-ubyte": b"\x1f\x8b" + b"junk" * 5},
        needle="corrupt",
    ),
    Case(
        "data",
        "imagefolder-bomb",
        (*TRAIN, "-d", "imagefolder:img"),
        setup=bomb_folder,
        needle="too large to decode safely",
    ),
    Case(
        "data",
        "imagefolder-non-utf8-name",
        (*TRAIN, "-d", "imagefolder:img"),
        setup=non_utf8_name,
        needle="not UTF-8",
    ),
    Case(
        "data",
        "imagefolder-empty-class",
        (*TRAIN, "-d", "imagefolder:img"),
        files={**image_folder(), "img/bird/.keep": ""},
        needle="empty class folder",
    ),
    Case("data", "imagefolder-missing", (*TRAIN, "-d", "imagefolder:nowhere"), needle="not found"),
    Case(
        "data",
        "imagefolder-not-an-image",
        (*TRAIN, "-d", "imagefolder:img"),
        files=image_folder({"img/cat/notes.png": b"not an image"}),
        needle="notes.png",
    ),
    Case(
        "data",
        "loader-label-out-of-range",
        (*TRAIN, "-d", "mk_badloader_pkg.loaders:load"),
        files={"mk_badloader_pkg/__init__.py": "", "mk_badloader_pkg/loaders.py": BAD_LOADER},
        needle="label 12 is outside the 10 classes",
    ),
    Case(
        "data",
        "eval-shape-does-not-fit",
        ("eval", "run", "-d", "imagefolder:img"),
        setup=lambda tmp, fx: (shutil.copytree(fx.run(), tmp / "run"), _files(tmp, image_folder())),
        needle="does not fit the model",
    ),
    Case("data", "unknown-spec", (*TRAIN, "-d", "digitz"), needle="did you mean 'digits'"),
    # run files: a typed reader; wrong types and nulls named with file and key
    Case(
        "run_files",
        "run-json-seed-string",
        ("eval", "run"),
        setup=copy_run(edit_json("run.json", lambda r: r.update(seed="42"))),
        needle="key 'seed' must be an integer (got '42')",
    ),
    Case(
        "run_files",
        "run-json-status-null",
        ("eval", "run"),
        setup=copy_run(edit_json("run.json", lambda r: r.update(status=None))),
        needle="key 'status' must be a string (got null)",
    ),
    Case(
        "run_files",
        "run-json-status-int",
        ("eval", "run"),
        setup=copy_run(edit_json("run.json", lambda r: r.update(status=5))),
        needle="'status'",
    ),
    Case(
        "run_files",
        "run-json-metrics-list",
        ("eval", "run"),
        setup=copy_run(edit_json("run.json", lambda r: r.update(metrics=[1]))),
        needle="'metrics'",
    ),
    Case(
        "run_files",
        "run-json-not-json",
        ("eval", "run"),
        setup=copy_run(write("run.json", b"{not json")),
        needle="is not valid JSON",
    ),
    Case(
        "run_files",
        "run-json-not-utf8",
        ("eval", "run"),
        setup=copy_run(write("run.json", b'{"a": "\xff"}')),
        needle="not UTF-8",
    ),
    Case(
        "run_files",
        "run-json-a-list",
        ("eval", "run"),
        setup=copy_run(write("run.json", b"[1, 2]")),
        needle="must hold a JSON object",
    ),
    Case(
        "run_files",
        "config-json-model-int",
        ("eval", "run"),
        setup=copy_run(edit_json("config.json", lambda c: c["modelkit"].update(model=5))),
        needle="key 'modelkit.model' must be a string",
    ),
    Case(
        "run_files",
        "config-json-modelkit-string",
        ("eval", "run"),
        setup=copy_run(edit_json("config.json", lambda c: c.update(modelkit="x"))),
        needle="key 'modelkit'",
    ),
    Case(
        "run_files",
        "config-json-train-null",
        ("eval", "run"),
        setup=copy_run(edit_json("config.json", lambda c: c["modelkit"].update(train=None))),
        needle="modelkit.train",
    ),
    Case(
        "run_files",
        "config-json-missing",
        ("eval", "run"),
        setup=copy_run(lambda run: (run / "config.json").unlink()),
        needle="config.json",
    ),
    Case("run_files", "weights-header-without-shape", ("eval", "run"), setup=copy_run(drop_shape)),
    Case(
        "run_files",
        "eval-json-not-json",
        ("card", "run"),
        setup=copy_run(write("eval.json", b"nope")),
    ),
    Case(
        "run_files",
        "train-config-epochs-float",
        ("eval", "run"),
        setup=copy_run(
            edit_json("config.json", lambda c: c["modelkit"]["train"].update(epochs=1.5))
        ),
        needle="key 'epochs' must be an integer",
    ),
    # benchmark results files (--baseline): read by the same typed reader, file and key named
    bench_baseline("fullname-int", {"benchmarks": [{"fullname": 3}]}, "'benchmarks[0].fullname'"),
    bench_baseline(
        "metric-kind-int",
        {
            "benchmarks": [],
            "modelkit": {
                "processes": [
                    {"benchmarks": {"b::t": {"name": "t", "metrics": {"m": {"kind": 1}}}}}
                ]
            },
        },
        "'modelkit.processes[0].benchmarks.b::t.metrics.m.kind' must be a string",
    ),  # fmt: skip
    bench_baseline(
        "fingerprint-cpu-count-string",
        {"benchmarks": [], "modelkit": {"fingerprint": {"cpu_count": "2"}}},
        "'modelkit.fingerprint.cpu_count'",
    ),
    # generated files: values escaped, requirement checked
    Case(
        "templates",
        "requirement-quote-injection",
        ("init", "p", "--no-git", "--modelkit-requirement", 'modelkit>=0.1", "evil>=1'),
        needle="not a valid requirement",
    ),
    Case(
        "templates",
        "requirement-newline",
        ("init", "p", "--no-git", "--modelkit-requirement", "modelkit>=0.1\n[tool.evil]"),
        needle="not a valid requirement",
    ),
    Case(
        "templates",
        "requirement-not-modelkit",
        ("init", "p", "--no-git", "--modelkit-requirement", "torch>=2"),
        needle="not modelkit",
    ),
    Case(
        "templates",
        "name-with-quote",
        ("init", "p", "--no-git", "--name", 'my"net'),
        needle="invalid project name",
    ),
    Case(
        "templates",
        "name-with-newline",
        ("init", "p", "--no-git", "--name", "a\nb"),
        needle="invalid project name",
    ),
    Case("templates", "name-reserved", ("init", "p", "--no-git", "--name", "torch")),
    Case(
        "templates",
        "target-not-empty",
        ("init", "p", "--no-git"),
        files={"p/x": "keep"},
        needle="not empty",
    ),
    # release / verify inputs
    Case(
        "release",
        "version-malformed",
        ("release", "vx.1", "--run", "run"),
        setup=copy_run(lambda run: None),
        needle="invalid version 'vx.1'",
    ),
    Case("release", "verify-no-version", ("verify", "nonsense"), needle="TARGET@VERSION"),
    Case("release", "run-missing", ("release", "v1.0", "--run", "nowhere")),
]


def _files(tmp: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def snapshot(root: Path) -> dict[bytes, bytes | None]:
    """Every path under ``root`` (as bytes: names need not be UTF-8) and its content."""
    out: dict[bytes, bytes | None] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), base)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, base)] = fh.read()
    return out


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, format="PNG")  # 169 M pixels > PIL's 89 M limit
    return buf.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, cli, in_tmp: Path, request, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(in_tmp))
    _files(in_tmp, case.files)
    if case.setup is not None:
        case.setup(in_tmp, Fixtures(request))
    before = snapshot(in_tmp)
    outside = [Path(a) for a in case.args if a.startswith("/sys/")]

    code, out, err = cli(*case.args)

    assert code == case.code, f"exit {code}, stderr:\n{err}"
    lines = err.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    assert sum(line.startswith("hint: ") for line in lines) == 1, err
    assert "Traceback" not in err + out
    assert "unexpected" not in err, err
    if case.needle is not None:
        assert case.needle in err, err
    assert snapshot(in_tmp) == before, "the directory changed"
    assert not any(p.exists() for p in outside)


def test_case_counts_by_class() -> None:
    """The table covers every class with several cases, more than 60 in all."""
    groups: dict[str, int] = {}
    for c in CASES:
        groups[c.group] = groups.get(c.group, 0) + 1
    assert len(CASES) > 60 and len({c.id for c in CASES}) == len(CASES)
    assert all(n >= 3 for n in groups.values()), groups


# --- OS errors that cannot be staged in a directory: real errno values from real syscalls --


def test_enospc_is_an_environment_failure(tmp_path: Path) -> None:
    from modelkit.cli._output import describe_os_error

    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not available")
    with pytest.raises(OSError) as info, open("/dev/full", "wb") as f:  # noqa: PT012
        f.write(b"x")
        f.flush()
    assert info.value.errno == errno.ENOSPC
    info.value.filename = "/dev/full"
    message, hint, code = describe_os_error(info.value)
    assert code == 1 and message == "/dev/full: no space left on device" and "free" in hint


def test_emfile_is_an_environment_failure(tmp_path: Path) -> None:
    from modelkit.cli._output import describe_os_error

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        with pytest.raises(OSError) as info:  # noqa: PT012
            for _ in range(100):
                opened.append(os.open(tmp_path, os.O_RDONLY))
    finally:
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert info.value.errno == errno.EMFILE
    message, hint, code = describe_os_error(info.value)
    assert code == 1 and "too many open files" in message and "ulimit" in hint


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: os.open(p, os.O_WRONLY), 2, "is a directory"),  # EISDIR
        (lambda p: os.open(p / "x" / "y", os.O_RDONLY), 2, "no such file"),  # ENOENT
        (lambda p: os.mkdir(p), 2, "already exists"),  # EEXIST
        (lambda p: os.mkdir("/sys/modelkit-test"), 2, ""),  # EPERM (root) or EACCES: sysfs
    ],
)
def test_os_errors_name_the_path(tmp_path: Path, make, code: int, words: str) -> None:
    from modelkit.cli._output import describe_os_error

    with pytest.raises(OSError) as info:
        make(tmp_path)
    message, hint, got = describe_os_error(info.value)
    assert got == code and words in message and str(info.value.filename) in message and hint


def test_skip_bad_files_skips_a_bomb(cli, in_tmp: Path, request) -> None:
    bomb_folder(in_tmp, Fixtures(request))
    code, _out, err = cli(*TRAIN, "-d", "imagefolder:img", "--skip-bad-files", "--format", "json")
    assert code == 0, err
    record = json.loads((in_tmp / "run" / "run.json").read_text())
    assert record["data"]["skipped_files"] == 1 and record["data"]["skipped"] == ["cat/bomb.png"]


def test_quoted_requirement_is_stored_exactly(cli, in_tmp: Path) -> None:
    from modelkit.config import tomllib

    req = 'modelkit @ file:///tmp/a"b\\c'
    code, _out, err = cli("init", "p", "--no-git", "--modelkit-requirement", req)
    assert code == 0, err
    data = tomllib.loads((in_tmp / "p" / "pyproject.toml").read_text())
    assert data["project"]["dependencies"] == [req]


def test_mnist_gz_labels_out_of_range(cli, in_tmp: Path) -> None:
    for rel, blob in mnist_files([0, 200]).items():
        (in_tmp / (rel + ".gz")).parent.mkdir(parents=True, exist_ok=True)
        (in_tmp / (rel + ".gz")).write_bytes(gzip.compress(blob))
    code, _out, err = cli(*TRAIN, "-d", "mnist:m")
    assert code == 2 and "label 200 at index 1" in err and not (in_tmp / "run").exists()


# --- a real full disk and a real read-only file system (tmpfs; skipped where mount is denied) --


def _mount_tmpfs(target: Path, options: str) -> None:
    import subprocess

    target.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        target.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode})")


@pytest.fixture()
def small_disk(in_tmp: Path):
    import subprocess

    target = in_tmp / "full"
    _mount_tmpfs(target, "size=256k")
    yield target
    subprocess.run(["umount", str(target)], check=False)


@pytest.fixture()
def read_only_disk(in_tmp: Path):
    import subprocess

    target = in_tmp / "ro"
    _mount_tmpfs(target, "ro,size=64k")
    yield target
    subprocess.run(["umount", str(target)], check=False)


def _one_error(err: str) -> None:
    lines = err.splitlines()
    assert sum(x.startswith("error: ") for x in lines) == 1, err
    assert sum(x.startswith("hint: ") for x in lines) == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err


def test_full_disk_is_an_environment_failure(cli, small_disk: Path) -> None:
    code, _out, err = cli(*TRAIN[:-1], "full/run")
    assert code == 1, err
    _one_error(err)
    assert "no space left on device" in err and "free some space" in err


@pytest.mark.parametrize(
    "args",
    [
        (*TRAIN[:-1], "ro/run"),
        ("init", "ro/proj", "--no-git"),
        (*TRAIN[:-1], "run", "-c", "ro/c.toml"),
    ],
    ids=["train-out", "init", "config-missing-on-ro"],
)
def test_read_only_file_system_is_bad_input(cli, read_only_disk: Path, args) -> None:
    before = snapshot(read_only_disk)
    code, _out, err = cli(*args)
    assert code == 2, err
    _one_error(err)
    assert "ro/" in err
    assert snapshot(read_only_disk) == before
