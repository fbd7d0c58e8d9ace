"""``repro`` owns the processes it starts (issue 22, item 5): a real ``modelkit repro`` with a
real process tree under it (the user's command and a grandchild it started), stopped with
SIGTERM or SIGINT: every process of the tree is gone and the temporary workspace removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the user's command: starts a grandchild, says who they are, then trains "forever"
SCRIPT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(os.environ["PIDS_FILE"], "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "State:\tZ" in state


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_repro_stops_its_process_tree(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    pids_file = tmp_path / "pids.txt"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmp), "PIDS_FILE": str(pids_file)}
    cmd = [sys.executable, "-m", "modelkit", "repro", "--", sys.executable, "train.py"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        started = _wait_for(
            lambda: pids_file.is_file() and len(pids_file.read_text().split()) == 4, 120
        )
        assert started, proc.stderr.read() if proc.poll() is not None else "no pids"
        pids = [int(p) for p in pids_file.read_text().split()]
        assert [p.name for p in tmp.iterdir()][0].startswith("modelkit-repro-")
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert f"error: interrupted by {sig.name}" in err and "hint:" in err
    assert "Traceback" not in err
    assert _wait_for(lambda: all(_gone(p) for p in pids), 10), [p for p in pids if not _gone(p)]
    assert list(tmp.iterdir()) == []  # the temporary workspace is removed


def test_a_finished_command_leaves_no_process_behind(tmp_path: Path) -> None:
    """A grandchild the command left running is killed with its group when repro ends."""
    from modelkit.repro.procs import Workspace

    pids_file = tmp_path / "pids.txt"
    script = tmp_path / "leave.py"
    script.write_text(SCRIPT.replace("time.sleep(300)\n", "", 1).rstrip() + "\n")
    env = {**os.environ, "PIDS_FILE": str(pids_file)}
    with Workspace(None) as ws:
        workspace = ws.path
        proc = ws.spawn([sys.executable, str(script)], env=env)
        assert proc.wait(timeout=60) == 0  # the command itself exits at once
        grandchild = int(pids_file.read_text().split()[1])
        assert not _gone(grandchild)
    assert _wait_for(lambda: _gone(grandchild), 10)
    assert not workspace.exists()
