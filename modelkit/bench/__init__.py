"""Benchmarks and the regression gate: pytest fixtures (plugin), statistics, git worktrees,
the interleaved comparison and its reports. See docs/benchmark.md."""
