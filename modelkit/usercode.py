"""The boundary with user code: every call into a user callable (a dataset loader, a model
factory, a loss, an eval transform) goes through :func:`call_user`, so an exception it raises
becomes one :class:`~modelkit.errors.UserCodeError` naming the callable (exit 1), with the
user's traceback chained (printed under ``MODELKIT_DEBUG=1``).

modelkit's own typed errors raised inside user code (a ``Dataset`` that refuses its labels)
pass through unchanged; so do ``KeyboardInterrupt`` and ``SystemExit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from modelkit.errors import ModelkitError, UserCodeError

T = TypeVar("T")


def call_user(what: str, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; an exception from it is a UserCodeError naming ``what name``."""
    try:
        return fn(*args, **kwargs)
    except ModelkitError:
        raise
    except Exception as exc:
        raise UserCodeError(what, name, exc) from exc
