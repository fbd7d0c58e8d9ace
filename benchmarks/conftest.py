"""The benchmark suite's shared setup: modelkit's harness fixtures (``bench``, ``bench_device``).

``pip install modelkit`` registers them through the ``pytest11`` entry point; this makes a plain
``pytest benchmarks/`` work from a source checkout too. Under ``modelkit benchmark`` the gate
loads its own copy of the harness into both sides' processes, and this hook leaves it alone.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("modelkit") or pm.has_plugin("_modelkit_bench_plugin")):
        from modelkit.bench import plugin

        pm.register(plugin, "modelkit")
