"""The processes ``repro`` starts are owned: each in its own process group, signals forwarded,
every group killed when ``repro`` ends, and the workspace removed after them.

:class:`Workspace` is the one place a repro verb runs in::

    with Workspace(work_dir) as ws:
        proc = ws.spawn(argv, cwd=..., env=...)

``spawn`` starts the command as the leader of a new process group (``start_new_session``), so a
training script's own children (data-loader workers, a ``torchrun`` launcher's ranks) are in
that group too. While a workspace is open, SIGINT and SIGTERM sent to ``modelkit`` are forwarded
to every group and then raise :class:`~modelkit.errors.Interrupted`; on leaving the block, for
any reason, every group still alive gets SIGTERM, then SIGKILL after :data:`GRACE_S`, and a
temporary workspace is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from modelkit.errors import Interrupted, RunDirError

GRACE_S = 5.0  # how long a group may take to stop after SIGTERM before it is killed
FORWARDED = (signal.SIGINT, signal.SIGTERM)


class Workspace:
    """Where worker runs go (a temp dir, removed afterwards, unless the caller named one), and
    the owner of every process started through :meth:`spawn`."""

    def __init__(self, work_dir: Path | None) -> None:
        self.keep = work_dir is not None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            if any(work_dir.iterdir()):
                raise RunDirError(
                    f"--work-dir {work_dir} is not empty", hint="pass a new or empty directory"
                )
            self.path = work_dir
        else:
            self.path = Path(tempfile.mkdtemp(prefix="modelkit-repro-"))
        self._groups: list[subprocess.Popen[Any]] = []
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Workspace:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED:
                self._saved[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            self._saved.clear()
            self.close()

    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` as the leader of its own process group, owned by this workspace."""
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self._groups.append(proc)
        return proc

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        for proc in self._groups:
            _signal_group(proc, signum)
        raise Interrupted(signal.Signals(signum).name)

    def stop_all(self) -> None:
        """SIGTERM every owned group, SIGKILL what is left after :data:`GRACE_S`; reap them."""
        for proc in self._groups:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in self._groups:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self._groups:  # the leader may be gone while its children live on
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=GRACE_S)
        self._groups.clear()

    def close(self) -> None:
        """Remove a temporary workspace (a named one is kept)."""
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def _signal_group(proc: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)
