"""What each test did, written for the gate at the end of the session: outcome (passed, failed,
skipped) with a one-line reason, and every metric a test recorded, including tests whose
``benchmark`` fixture never ran (pytest-benchmark leaves those out of its JSON)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .env import ENV_OUTCOMES


def _last_error_line(report: Any) -> str:
    text = str(getattr(report, "longreprtext", "") or report.longrepr or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("E ")]
    return (err[-1][2:].strip() if err else (lines[-1] if lines else ""))[:300]


class Outcomes:
    """Per-test outcome, reason and recorded metrics of one pytest session."""

    def __init__(self) -> None:
        self.collected: list[str] = []
        self.outcomes: dict[str, str] = {}
        self.messages: dict[str, str] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    def add(self, report: Any) -> None:
        """Remember one test report (setup, call or teardown)."""
        nodeid = report.nodeid
        if report.failed:
            self.outcomes[nodeid] = "failed" if report.when == "call" else "error"
            self.messages[nodeid] = _last_error_line(report)
        elif report.skipped and nodeid not in self.outcomes:
            self.outcomes[nodeid] = "skipped"
            # pytest's skip longrepr is (file, line, "Skipped: reason")
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.messages[nodeid] = str(reason).removeprefix("Skipped: ")[:300]
        elif report.when == "call" and report.passed:
            self.outcomes.setdefault(nodeid, "passed")

    def add_collect_error(self, report: Any) -> None:
        """A file that fails to import is an error for every benchmark in it."""
        self.outcomes[report.nodeid] = "error"
        self.messages[report.nodeid] = _last_error_line(report)

    def write(self, exitstatus: int, harness: str) -> None:
        """Write the outcomes file when ``$MODELKIT_BENCH_OUTCOMES`` names one."""
        path = os.environ.get(ENV_OUTCOMES)
        if not path:
            return
        doc = {
            "harness": harness,
            "exitstatus": int(exitstatus),
            "collected": self.collected,
            "outcomes": self.outcomes,
            "messages": self.messages,
            "metrics": self.metrics,
            "seconds": round(time.time() - self.started, 3),
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)


OUTCOMES = Outcomes()
