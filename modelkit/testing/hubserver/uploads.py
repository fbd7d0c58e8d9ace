"""Upload routes of the test Hub: pre-upload, the LFS batch API ("basic" transfer: PUT then
verify) and the NDJSON commit with its ``parentCommit`` compare-and-swap.

An LFS object is stored only once its bytes arrived whole and hash to its oid: a connection
dropped mid-upload leaves nothing behind, and the batch answer omits the upload action for
an object already stored, so a re-run uploads only what is missing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from modelkit.testing.hubserver.repos import files_at
from modelkit.testing.hubserver.state import LFS_PATTERNS, Entry, git_oid

if TYPE_CHECKING:
    from modelkit.testing.hubserver.http import Request


def preupload(req: Request, repo_id: str, rev: str, *, query: Any) -> None:
    """Which files go through LFS (binary pattern, >= 10 MB, or a NUL in the sample)."""
    if not req.authorised():
        return
    asked = req.json()["files"]
    with req.hub.lock:
        got = files_at(req, repo_id, rev)
        if got is None:
            return
        files = got[2]
    out = []
    for f in asked:
        sample = base64.b64decode(f["sample"])
        lfs = bool(LFS_PATTERNS.match(f["path"])) or f["size"] >= 10 << 20 or b"\0" in sample
        existing = files.get(f["path"])
        out.append(
            {
                "path": f["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
                "oid": existing.oid if existing else None,
            }
        )
    req.reply(200, {"files": out, "commitOid": got[1]})


def lfs_batch(req: Request, repo_id: str, *, query: Any) -> None:
    """The LFS batch answer: an upload + verify action only for objects not stored yet."""
    if not req.authorised():
        return
    objects = []
    for o in req.json()["objects"]:
        obj: dict[str, Any] = {"oid": o["oid"], "size": o["size"], "authenticated": True}
        if not req.hub.has_object(o["oid"], o["size"]):
            url = f"{req.hub.url}/__lfs/{o['oid']}"
            obj["actions"] = {"upload": {"href": url}, "verify": {"href": f"{url}/verify"}}
        objects.append(obj)
    req.hub.batches.append([o["oid"] for o in objects if "actions" in o])
    req.reply(200, {"transfer": "basic", "objects": objects})


def lfs_put(req: Request, oid: str, *, query: Any) -> None:
    """Receive an object; keep it only when it arrived whole and hashes to ``oid``."""
    left = int(req.headers.get("Content-Length") or 0)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=req.hub.storage, prefix=".up.")
    try:
        with os.fdopen(fd, "wb") as out:
            while left and (block := req.rfile.read(min(left, 1 << 20))):
                h.update(block)
                out.write(block)
                left -= len(block)
        if left:  # the connection went away mid-upload: nothing is stored
            req.close_connection = True
            return
        if h.hexdigest() != oid:
            return req.err(400, "sha256 mismatch")
        Path(tmp).replace(req.hub.blob(oid))
        req.hub.uploaded.append(oid)
    finally:
        Path(tmp).unlink(missing_ok=True)
    req.reply(200, {})


def lfs_verify(req: Request, oid: str, *, query: Any) -> None:
    if req.hub.has_object(oid, req.json().get("size")):
        return req.reply(200, {})
    req.err(404, "object not found")


def _apply(req: Request, files: dict[str, Entry], lines: list[dict[str, Any]]) -> str | None:
    """``files`` with the commit's operations applied in place; an error message or None."""
    for item in lines:
        key, v = item["key"], item["value"]
        if key == "file":
            data = base64.b64decode(v["content"])
            files[v["path"]] = Entry(req.hub.put(data), len(data), False, git_oid(data))
        elif key == "lfsFile":
            blob = req.hub.blob(v["oid"])
            if not blob.is_file():
                return f"LFS object {v['oid']} was not uploaded"
            files[v["path"]] = Entry(v["oid"], blob.stat().st_size, True, v["oid"])
        elif key == "deletedFile":
            files.pop(v["path"], None)
    return None


def commit(req: Request, repo_id: str, rev: str, *, query: Any) -> None:
    """One commit on ``rev``; refused (412) when ``parentCommit`` is not the head any more."""
    import json

    if not req.authorised():
        return
    lines = [json.loads(x) for x in req.body().splitlines() if x.strip()]
    header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
    with req.hub.lock:
        got = files_at(req, repo_id, rev)
        if got is None:
            return
        repo, head, files = got
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            return req.err(412, "A commit has happened since. Please refresh and try again.")
        new = dict(files)
        problem = _apply(req, new, lines[1:])
        if problem is not None:
            return req.err(400, problem)
        oid = hashlib.sha1(f"{head}{uuid.uuid4()}".encode()).hexdigest()
        repo.commits[oid] = (head, new, header.get("summary", ""))
        repo.branches[unquote(rev)] = oid
    url = f"{req.hub.url}/{repo_id}/commit/{oid}"
    req.reply(200, {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""})
