"""How a training script ends when a run is open: errors as a verb would print them, and a run
left unfinished at exit recorded as failed (never half-written, never published).

``start_run`` may be used without ``with`` (``run = modelkit.start_run(...)`` ...
``run.finish(model)``): :func:`watch` registers the run, and at interpreter exit any run that
was neither finished nor failed is failed with the reason (its staging directory is kept for
``resume=True``; a previous complete run at the path is untouched).
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from typing import Any

from modelkit.errors import ModelkitError
from modelkit.io import exit_now

_open_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False
UNFINISHED = "the script ended without run.finish(model)"


def watch(session: Any) -> None:
    """Fail ``session`` at interpreter exit unless it was finished or failed by then."""
    global _registered
    _open_sessions.add(session)
    if not _registered:
        atexit.register(_fail_unfinished)
        _registered = True


def _fail_unfinished() -> None:
    error = getattr(sys, "last_value", None)  # an uncaught exception ended the script
    for session in list(_open_sessions):
        if not session.closed:
            session.fail(error if isinstance(error, BaseException) else UNFINISHED)


def install_error_hook() -> None:
    """An uncaught ModelkitError in a training script ends it as the CLI would: one ``error:``
    line, one ``hint:`` line, its exit code (1 failure, 2 bad input, 3 a check said no).
    Installed only over Python's default hook; ``MODELKIT_DEBUG=1`` keeps the traceback."""
    if sys.excepthook is not sys.__excepthook__:
        return

    def hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        sys.last_value = exc  # what _fail_unfinished records
        if not isinstance(exc, ModelkitError):
            sys.__excepthook__(exc_type, exc, tb)
            return
        if os.environ.get("MODELKIT_DEBUG", "") not in ("", "0"):
            sys.__excepthook__(exc_type, exc, tb)
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        if exc.exit_code == 1:
            return  # Python exits with 1 after an uncaught exception: a normal shutdown
        exit_now(exc.exit_code)

    sys.excepthook = hook
