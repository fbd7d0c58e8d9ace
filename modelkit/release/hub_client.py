"""Talking to the Hub: the token, retries with backoff, and typed errors for every call.

* every call goes through :meth:`HubClient.call`: 429 / 5xx / dropped connections are retried
  with exponential backoff (``Retry-After`` honoured);
* a non-idempotent write (a commit, a tag) goes through :meth:`HubClient.ambiguous`: after a
  failure with no definite answer the refs are read first, so a write that did land is
  recognised instead of duplicated;
* the token comes from ``HF_TOKEN`` or ``hf auth login`` and is never printed or stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from modelkit.errors import BadInputError, ModelkitError
from modelkit.release.remote import ParentMoved

T = TypeVar("T")
RECORDS = ".modelkit/releases"  # release records on main: the commit each tag was created on
TRANSIENT = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    attempts: int = 6
    base_s: float = 1.0
    max_s: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Defaults, or ``MODELKIT_RETRY_BASE_S`` / ``MODELKIT_RETRY_ATTEMPTS``."""
        return cls(
            attempts=int(os.environ.get("MODELKIT_RETRY_ATTEMPTS", cls.attempts)),
            base_s=float(os.environ.get("MODELKIT_RETRY_BASE_S", cls.base_s)),
        )


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """429/5xx answers, dropped or timed-out connections, and downloads that got no answer."""
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    if _status(exc) in TRANSIENT:
        return True
    if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError)):
        return True
    return isinstance(exc.__cause__ or exc.__context__, httpx2.TransportError)


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    value = getattr(resp, "headers", {}).get("Retry-After") if resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def resolve_token(*, required: bool) -> str | None:
    """``HF_TOKEN`` or the token saved by ``hf auth login`` (never printed)."""
    token = os.environ.get("HF_TOKEN") or None
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    if token is None and required:
        raise BadInputError(
            "no Hugging Face token found",
            hint="run `hf auth login` (or set HF_TOKEN to a write token), then re-run",
        )
    return token


class HubClient:
    """The endpoint, the token, the retry policy and a log of what happened (for the report)."""

    repo_id: str

    def __init__(
        self,
        repo_id: str,
        *,
        endpoint: str | None = None,
        token_required: bool = True,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the library never prints; the CLI reports
        self.repo_id = repo_id
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip(
            "/"
        )
        self._token = resolve_token(required=token_required)
        self.api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self.retry = retry or RetryPolicy.from_env()
        self._sleep = sleep
        self.log: list[str] = []  # what happened (retries, recoveries), for the report

    def describe(self) -> str:
        return f"hf://{self.repo_id}" + (
            "" if "huggingface.co" in self.endpoint else f" at {self.endpoint}"
        )

    # ------------------------------------------------------------------ retries
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``; retry transient failures with backoff; map the rest to typed errors."""
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        delay = self.retry.base_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
                if _status(exc) == 404 or _status(exc) is None:
                    raise
                raise self._typed(what, exc) from None
            except EntryNotFoundError as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.retry.attempts:
                    raise self._typed(what, exc) from None
                self.log.append(f"{what}: no answer; retry {attempt}")
                self._sleep(delay)
                delay = min(self.retry.max_s, delay * 2)
            except Exception as exc:
                if not is_transient(exc) or attempt == self.retry.attempts:
                    raise self._typed(what, exc) from None
                wait = _retry_after(exc)
                wait = min(self.retry.max_s, delay if wait is None else wait)
                self.log.append(f"{what}: {self._short(exc)}; retry {attempt} in {wait:.1f}s")
                self._sleep(wait)
                delay = min(self.retry.max_s, delay * 2)
        raise AssertionError("unreachable")  # pragma: no cover

    def ambiguous(
        self,
        what: str,
        fn: Callable[[], T],
        landed: Callable[[], T | None],
        *,
        parent: str | None | bool = False,
    ) -> T:
        """Like :meth:`call` for a non-idempotent write: after a failure, look before retrying.

        A 409/412 that did not land is :class:`ParentMoved` when ``parent`` (the commit the
        write was built on) is given, so the caller can re-read and decide again."""
        delay = self.retry.base_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                status = _status(exc)
                definite = status is not None and status not in TRANSIENT
                if attempt == self.retry.attempts or (definite and status not in (409, 412)):
                    raise self._typed(what, exc) from None
                if not definite:
                    wait = _retry_after(exc)
                    wait = min(self.retry.max_s, delay if wait is None else wait)
                    self._sleep(wait)
                    delay = min(self.retry.max_s, delay * 2)
                self.log.append(f"{what}: {self._short(exc)}; checking refs before retrying")
                done = landed()
                if done is not None:
                    self.log.append(f"{what}: it had landed; not repeating it")
                    return done
                if definite and parent is not False:  # the compare-and-swap lost
                    raise ParentMoved(self.describe(), parent) from None
                if definite:  # 409/412 and it did not land: someone else moved the repo
                    raise self._typed(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _short(exc: BaseException) -> str:
        status = _status(exc)
        return f"HTTP {status}" if status else type(exc).__name__

    def _typed(self, what: str, exc: BaseException) -> ModelkitError:
        if isinstance(exc, ModelkitError):
            return exc
        status = _status(exc)
        detail = (str(exc).splitlines() or [""])[0][:200]
        if status in (401, 403):
            return BadInputError(
                f"the Hub refused {what} on {self.repo_id} (HTTP {status}): not authorised",
                hint="run `hf auth login` with a token that can write to this repo (or set HF_TOKEN)",
            )
        if is_transient(exc):
            return ModelkitError(
                f"{what} kept failing ({self._short(exc)}) after {self.retry.attempts} attempts",
                hint="no tag was created unless reported; re-run the same command (it is idempotent)",
            )
        return ModelkitError(f"{what} failed: {self._short(exc)}: {detail}", hint="see the message")
