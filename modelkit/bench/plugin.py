"""The ``pytest11`` entry point (``modelkit``): the benchmark harness's fixtures and hooks.

The harness itself lives in :mod:`modelkit.bench.harness` (self-contained, so the gate can load
one copy of it into both sides' processes); this module only re-exports it for pytest.
"""

from __future__ import annotations

from modelkit.bench.harness import *  # noqa: F403
from modelkit.bench.harness import (  # noqa: F401  (pytest finds hooks and fixtures by name)
    _device,
    _modelkit_seed,
    pytest_addoption,
    pytest_benchmark_generate_machine_info,
    pytest_collection_modifyitems,
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
)
