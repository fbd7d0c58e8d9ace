"""``[tool.modelkit.benchmark]``: the gate's settings, globally and per benchmark.

Example::

    [tool.modelkit.benchmark]
    suite = "benchmarks"          # folder (or file) of pytest-benchmark tests, from HEAD's tree
    markers = "not slow"          # pytest -m expression selecting the gate's benchmarks
    package = "my_pkg"            # checked to import on both sides before measuring
    threshold = 0.03              # a timing ratio beyond 1 +/- 3% matters
    instr_threshold = 0.005       # instruction lane: a change of 0.5% or more in instructions/call
    mode = "auto"                 # instructions | time | auto (instructions on CPU with valgrind)
    instruction_isa = "native"    # instruction lane: MKL/oneDNN kernels: native | sse4 (faster)
    alpha = 0.05                  # family-wise false-alarm rate (Holm over all timing metrics)
    accuracy_margin = 0.5         # non-inferiority margin, accuracy points
    quality_margin = 0.01         # other quality metrics (bench.metric): relative to REF's value
    memory_tolerance = 0.10       # CPU peak RSS: relative growth tolerated
    exact_tolerance = 0.0         # parameter count / CUDA peak memory: relative tolerance
    min_rounds = 5                # ABBA rounds before any verdict can stop the run early
    max_rounds = 30
    max_time = 300                # seconds for the whole --compare
    bench_max_time = 0.3          # pytest-benchmark --benchmark-max-time per test per process
    bench_min_rounds = 5
    [tool.modelkit.benchmark.per_benchmark."test_inference*"]
    threshold = 0.10              # any of the metric settings above, for matching test names
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from modelkit.errors import ConfigError, did_you_mean

METRIC_KEYS = (
    "threshold",
    "alpha",
    "accuracy_margin",
    "memory_tolerance",
    "exact_tolerance",
    "instr_threshold",
    "quality_margin",
)
MODES = ("auto", "instructions", "time")
# the instruction lane's MKL/oneDNN kernels: the machine's own, or capped at SSE4 (their AVX2
# kernels run 100-400x slower under valgrind; docs/benchmark.md, "Which kernels are counted")
INSTRUCTION_ISAS = ("native", "sse4")
STRING_KEYS = ("suite", "markers", "keyword", "package", "mode", "instruction_isa")
INT_KEYS = ("min_rounds", "max_rounds", "bench_min_rounds")  # the rest are numbers


@dataclass(frozen=True)
class Thresholds:
    """How one benchmark's metrics are judged."""

    threshold: float = 0.03
    alpha: float = 0.05
    accuracy_margin: float = 0.5
    memory_tolerance: float = 0.10
    exact_tolerance: float = 0.0
    instr_threshold: float = 0.005
    quality_margin: float = 0.01


@dataclass(frozen=True)
class BenchConfig:
    """Everything ``modelkit benchmark`` reads from ``[tool.modelkit.benchmark]``."""

    suite: str = "benchmarks"
    markers: str | None = None
    keyword: str | None = None
    package: str | None = None
    mode: str = "auto"
    instruction_isa: str = "native"
    thresholds: Thresholds = field(default_factory=Thresholds)
    min_rounds: int = 5
    max_rounds: int = 30
    max_time: float = 300.0
    bench_max_time: float = 0.3
    bench_min_rounds: int = 5
    per_benchmark: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_benchmark(self, name: str) -> Thresholds:
        """The thresholds for one benchmark (``per_benchmark`` patterns override, in order)."""
        t = self.thresholds
        for pattern, overrides in self.per_benchmark.items():
            if fnmatch.fnmatchcase(name, pattern):
                t = replace(t, **overrides)
        return t

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the report)."""
        return asdict(self)


_TOP_KEYS = {f.name for f in fields(BenchConfig)} - {"thresholds"} | set(METRIC_KEYS)


def _number(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}", hint="e.g. 0.05")
    if value < 0:
        raise ConfigError(f"{where}: '{key}' must be >= 0, got {value}", hint="use a number >= 0")
    return float(value)


def _per_benchmark(raw_per: Any, where: str) -> dict[str, dict[str, float]]:
    """``per_benchmark`` tables: pattern -> metric settings."""
    if not isinstance(raw_per, dict):
        raise ConfigError(f"{where}: 'per_benchmark' must be a table", hint="see docs/benchmark.md")
    per: dict[str, dict[str, float]] = {}
    for pattern, sub in raw_per.items():
        w = f"{where} per_benchmark.{pattern}"
        if not isinstance(sub, dict):
            raise ConfigError(f"{w} must be a table", hint="e.g. threshold = 0.1")
        for k in sub:
            if k not in METRIC_KEYS:
                raise ConfigError(
                    f"{w}: unknown key '{k}'{did_you_mean(k, METRIC_KEYS)}",
                    hint=f"valid keys: {', '.join(METRIC_KEYS)}",
                )
        per[str(pattern)] = {k: _number(k, v, w) for k, v in sub.items()}
    return per


def _table_values(table: dict[str, Any], where: str) -> tuple[dict, dict, dict]:
    """The table's metric settings, ``per_benchmark`` tables and other settings, each checked."""
    metric: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in METRIC_KEYS:
            metric[key] = _number(key, value, where)
        elif key == "per_benchmark":
            per = _per_benchmark(value, where)
        elif key in STRING_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: '{key}' must be a string", hint="quote it")
            values[key] = value
        elif key in INT_KEYS:
            values[key] = int(_number(key, value, where))
        else:
            values[key] = _number(key, value, where)
    return metric, per, values


def _check(cfg: BenchConfig, where: str) -> BenchConfig:
    """The settings' ranges, checked on the typed config."""
    if not 0 < cfg.thresholds.alpha < 1:
        raise ConfigError(f"{where}: 'alpha' must be in (0, 1)", hint="e.g. alpha = 0.05")
    scopes = [(where, cfg.thresholds)] + [
        (f"{where} per_benchmark.{k}", replace(cfg.thresholds, **v))
        for k, v in cfg.per_benchmark.items()
    ]
    for scope, t in scopes:
        if not 0 < t.instr_threshold < 1:
            raise ConfigError(
                f"{scope}: 'instr_threshold' must be in (0, 1), got {t.instr_threshold}",
                hint="a fraction: 0.005 flags a change of 0.5% or more in instructions per call",
            )
    if cfg.mode not in MODES:
        raise ConfigError(
            f"{where}: 'mode' must be one of {', '.join(MODES)}, got {cfg.mode!r}"
            f"{did_you_mean(str(cfg.mode), MODES)}",
            hint="auto = instructions on CPU when valgrind is installed, time otherwise",
        )
    if cfg.instruction_isa not in INSTRUCTION_ISAS:
        raise ConfigError(
            f"{where}: 'instruction_isa' must be one of {', '.join(INSTRUCTION_ISAS)}, got "
            f"{cfg.instruction_isa!r}{did_you_mean(str(cfg.instruction_isa), INSTRUCTION_ISAS)}",
            hint="native = the machine's own MKL/oneDNN kernels (ratios closest to native "
            "speed); sse4 = capped at SSE4 under valgrind (counts several times faster)",
        )
    if cfg.min_rounds < 2:
        raise ConfigError("min_rounds must be at least 2", hint="a ratio's interval needs 2 rounds")
    if cfg.max_rounds < cfg.min_rounds:
        raise ConfigError(
            f"max_rounds ({cfg.max_rounds}) is below min_rounds ({cfg.min_rounds})",
            hint="raise max_rounds",
        )
    return cfg


def parse_bench_config(table: dict[str, Any] | None, **overrides: Any) -> BenchConfig:
    """Validate ``[tool.modelkit.benchmark]`` into a :class:`BenchConfig` and apply CLI
    overrides (None = not given)."""
    table = dict(table or {})
    where = "[tool.modelkit.benchmark]"
    for key in table:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, _TOP_KEYS)}",
                hint=f"valid keys: {', '.join(sorted(_TOP_KEYS))}",
            )
    metric, per, values = _table_values(table, where)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in METRIC_KEYS:
            metric[key] = float(value)
        else:
            values[key] = value
    return _check(BenchConfig(thresholds=Thresholds(**metric), per_benchmark=per, **values), where)
