"""A local Hub-compatible HTTP server for tests, with fault injection.

It speaks the subset of the Hugging Face Hub API that huggingface_hub (2.x,
``HF_HUB_DISABLE_XET=1``) calls to create a repo, validate a card, pre-upload, upload LFS
objects (the batch API, "basic" transfer: PUT + verify), commit (NDJSON, with
``parentCommit``), tag, list refs, read model info (``?blobs=true``), paths-info, tree, and
resolve files (HEAD/GET with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``,
``X-Linked-Size``). State lives in memory; file contents on disk (content-addressed by sha256).
The routes are one table (:mod:`.routes`), answered by :mod:`.repos` and :mod:`.uploads`.

Fault injection: ``server.faults = {n: kind}`` makes the n-th request (1-based, counted across
the server) fail: ``"500"``, ``"429"`` (with ``Retry-After``), ``"drop"`` (connection closed
before the request is handled), ``"drop-after"`` (handled, then closed without an answer: the
ambiguous case) or ``"drop-mid"`` (closed after half the request body arrived: a large upload
cut off). ``server.fault_on = {"PUT /__lfs": [n, ...]}`` counts only requests whose
``METHOD path`` starts with the key (``[1]``: the first such request).

    with HubServer(token="hf_test") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modelkit.testing.hubserver.http import FAULTS, Request
from modelkit.testing.hubserver.state import Entry, Repo, Store, git_oid

__all__ = ["FAULTS", "Entry", "HubServer", "Repo", "git_oid"]


class HubServer(Store):
    """Start with ``with HubServer() as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self, *, token: str | None = "hf_test_token", storage: Path | None = None) -> None:
        self._tmp = None if storage else tempfile.TemporaryDirectory(prefix="hubserver-")
        super().__init__(Path(storage or self._tmp.name))  # type: ignore[union-attr]
        self.token = token
        self.lock = threading.RLock()
        self.faults: dict[int, str] = {}
        self.fault_on: dict[str, dict[int, str]] = {}
        self.retry_after = 0
        self.requests: list[str] = []
        self.batches: list[list[str]] = []  # per LFS batch call: the oids it asked to upload
        self.uploaded: list[str] = []  # LFS objects received whole
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def count(self, request: str) -> str | None:
        """Record ``request``; the fault injected at its position, if any."""
        with self.lock:
            self.requests.append(request)
            fault = self.faults.get(len(self.requests))
            for prefix, plan in self.fault_on.items():
                if request.startswith(prefix):
                    n = sum(r.startswith(prefix) for r in self.requests)
                    fault = plan.get(n, fault)
        return fault

    def has_object(self, oid: str, size: Any) -> bool:
        """Whether the LFS object ``oid`` of ``size`` bytes is stored."""
        blob = self.blob(oid)
        return blob.is_file() and blob.stat().st_size == size
