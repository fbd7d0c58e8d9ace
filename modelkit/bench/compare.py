"""The gate's entry points, gathered for callers: ``run_benchmark`` and what it is made of.

* :mod:`~modelkit.bench.plan` the measuring plan (lanes, processes, adaptive rounds)
* :mod:`~modelkit.bench.deciders` one decider per kind of metric
* :mod:`~modelkit.bench.accepts` accepted changes (commit trailers, ``--accept``)
* :mod:`~modelkit.bench.cache` REF sides reused by content key
* :mod:`~modelkit.bench.gate` the three modes (run, compare, baseline)
"""

from __future__ import annotations

from modelkit.bench.accepts import (
    ACCEPT_TRAILER,
    accepts_from_trailers,
    apply_accepts,
    name_matches,
    parse_accept_flag,
    parse_trailer,
)
from modelkit.bench.deciders import DECIDERS, evaluate
from modelkit.bench.gate import DEFAULT_REF, run_benchmark
from modelkit.bench.outcome import Outcome
from modelkit.bench.plan import MODES, resolve_lane, valgrind_usable

__all__ = [
    "ACCEPT_TRAILER", "DECIDERS", "DEFAULT_REF", "MODES", "Outcome", "accepts_from_trailers",
    "apply_accepts", "evaluate", "name_matches", "parse_accept_flag", "parse_trailer",
    "resolve_lane", "run_benchmark", "valgrind_usable",
]  # fmt: skip
