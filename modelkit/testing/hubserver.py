"""A local Hub-compatible HTTP server for tests, with fault injection.

It speaks the subset of the Hugging Face Hub API that huggingface_hub (2.x, ``HF_HUB_DISABLE_XET=1``)
calls to create a repo, validate a card, pre-upload, upload LFS objects ("basic" transfer + verify),
commit (NDJSON, with ``parentCommit``), tag, list refs, read model info (``?blobs=true``), paths-info,
tree, and resolve files (HEAD/GET with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``,
``X-Linked-Size``). State lives in memory; file contents on disk (content-addressed by sha256).

Fault injection: ``server.faults = {n: kind}`` makes the n-th request (1-based, counted across the
server) fail: ``"500"``, ``"429"`` (with ``Retry-After``), ``"drop"`` (connection closed before the
request is handled) or ``"drop-after"`` (handled, then closed without an answer: the ambiguous case).

    with HubServer(token="hf_test") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

LFS_PATTERNS = re.compile(
    r".*\.(safetensors|bin|pt|pth|ckpt|h5|onnx|msgpack|npy|npz|pkl|png|jpg|jpeg|gz|zip|tar)$"
)
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LICENSES = {"apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "other", "unknown", "gpl-3.0"}


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Entry:
    sha256: str
    size: int
    lfs: bool
    oid: str  # git oid (regular) or sha256 (lfs) — what preupload reports


@dataclass
class Repo:
    commits: dict[str, tuple[str | None, dict[str, Entry], str]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class _Drop(Exception):
    pass


class HubServer:
    """Start with ``with HubServer() as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self, *, token: str | None = "hf_test_token", storage: Path | None = None) -> None:
        self.token = token
        self._tmp = None if storage else tempfile.TemporaryDirectory(prefix="hubserver-")
        self.storage = Path(storage or self._tmp.name)  # type: ignore[union-attr]
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.faults: dict[int, str] = {}
        self.retry_after = 0
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
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

    # ----------------------------------------------------------------- state helpers
    def blob(self, sha256: str) -> Path:
        return self.storage / sha256

    def resolve(self, repo: Repo, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        return rev if rev in repo.commits else None

    def tamper(self, repo_id: str, revision: str, path: str, data: bytes) -> None:
        """Overwrite a file's stored bytes in place (for verify tests): metadata stays as it was."""
        repo = self.repos[repo_id]
        entry = repo.commits[self.resolve(repo, revision)][1][path]
        self.blob(entry.sha256).write_bytes(data)


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:  # quiet
            pass

        # ------------------------------------------------------------- plumbing
        def _reply(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = (
                b""
                if body is None
                else (body if isinstance(body, bytes) else json.dumps(body).encode())
            )
            self.send_response(status)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _err(self, status: int, msg: str, code: str | None = None) -> None:
            self._reply(status, {"error": msg}, {"X-Error-Code": code} if code else None)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _drop(self) -> None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            raise _Drop

        def _authorised(self) -> bool:
            if hub.token is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            self._err(401, "Invalid credentials in Authorization header")
            return False

        def _dispatch(self) -> None:
            with hub.lock:
                hub.requests.append(f"{self.command} {self.path}")
                n = len(hub.requests)
                fault = hub.faults.get(n)
            if fault in ("500", "429", "drop"):
                self._body() if self.command in ("POST", "PUT") else None
                if fault == "drop":
                    self._drop()
                if fault == "429":
                    self._reply(
                        429, {"error": "rate limited"}, {"Retry-After": str(hub.retry_after)}
                    )
                else:
                    self._reply(500, {"error": "injected internal error"})
                return
            if fault == "drop-after":
                self.wfile = _Sink()  # handle it fully, answer nothing
                try:
                    self._route()
                finally:
                    self._drop()
            self._route()

        def _route(self) -> None:
            url = urlparse(self.path)
            path, query = url.path, parse_qs(url.query)
            for method, pattern, fn in ROUTES:
                if method == self.command or (method == "GET" and self.command == "HEAD"):
                    m = re.fullmatch(pattern, path)
                    if m:
                        return fn(self, *m.groups(), query=query)
            self._err(404, f"no route for {self.command} {path}")

        def do_GET(self) -> None:
            self._safe()

        do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

        def _safe(self) -> None:
            with contextlib.suppress(_Drop):
                self._dispatch()

        # ------------------------------------------------------------- repo helpers
        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._err(404, "Repository not found", "RepoNotFound")
            return repo

        def _files(self, repo_id: str, rev: str) -> tuple[Repo, str, dict[str, Entry]] | None:
            repo = self._repo(repo_id)
            if repo is None:
                return None
            commit = hub.resolve(repo, rev)
            if commit is None:
                self._err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return None
            return repo, commit, repo.commits[commit][1]

        @staticmethod
        def _file_json(path: str, e: Entry) -> dict[str, Any]:
            d: dict[str, Any] = {"type": "file", "path": path, "size": e.size}
            if e.lfs:
                d["oid"] = git_oid(
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{e.sha256}\nsize {e.size}\n".encode()
                )
                d["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": 134}
            else:
                d["oid"] = e.oid
            return d

        # ------------------------------------------------------------- endpoints
        def create_repo(self, query: Any) -> None:
            if not self._authorised():
                return
            p = json.loads(self._body() or b"{}")
            repo_id = (
                f"{p.get('organization')}/{p['name']}"
                if p.get("organization")
                else f"user/{p['name']}"
            )
            with hub.lock:
                if repo_id in hub.repos:
                    return self._reply(
                        409,
                        {
                            "error": "You already created this model repo",
                            "url": f"{hub.url}/{repo_id}",
                        },
                    )
                repo = Repo()
                data = GITATTRIBUTES
                sha = hashlib.sha256(data).hexdigest()
                hub.blob(sha).write_bytes(data)
                oid = uuid.uuid4().hex + uuid.uuid4().hex[:8]
                repo.commits[oid] = (
                    None,
                    {".gitattributes": Entry(sha, len(data), False, git_oid(data))},
                    "initial commit",
                )
                repo.branches["main"] = oid
                hub.repos[repo_id] = repo
            self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def model_info(self, repo_id: str, rev: str | None, query: Any) -> None:
            with hub.lock:
                got = self._files(repo_id, rev or "main")
                if got is None:
                    return
                _, commit, files = got
                blobs = "blobs" in query
                siblings = []
                for path, e in sorted(files.items()):
                    s: dict[str, Any] = {"rfilename": path}
                    if blobs:
                        f = self._file_json(path, e)
                        s.update(size=e.size, blobId=f["oid"])
                        if e.lfs:
                            s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": 134}
                    siblings.append(s)
            self._reply(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "tags": [],
                    "siblings": siblings,
                },
            )

        def refs(self, repo_id: str, query: Any) -> None:
            with hub.lock:
                repo = self._repo(repo_id)
                if repo is None:
                    return

                def fmt(kind, d):
                    return [
                        {"name": k, "ref": f"refs/{kind}/{k}", "targetCommit": v}
                        for k, v in sorted(d.items())
                    ]  # noqa: E731

                body = {
                    "branches": fmt("heads", repo.branches),
                    "tags": fmt("tags", repo.tags),
                    "converts": [],
                    "pullRequests": [],
                }
            self._reply(200, body)

        def validate_yaml(self, query: Any) -> None:
            p = json.loads(self._body() or b"{}")
            content = p.get("content", "")
            errors = []
            if content.startswith("---\n"):
                end = content.find("\n---", 4)
                try:
                    meta = yaml.safe_load(content[4:end]) or {}
                    lic = meta.get("license")
                    if lic is not None and lic not in LICENSES:
                        errors.append({"message": f'"license" must be a valid license id: {lic}'})
                    mi = meta.get("model-index")
                    if mi is not None and not (
                        isinstance(mi, list) and all("results" in x for x in mi)
                    ):
                        errors.append({"message": '"model-index" is malformed'})
                except yaml.YAMLError as exc:
                    errors.append({"message": f"YAML error: {exc}"})
            if errors:
                return self._reply(400, {"errors": errors})
            self._reply(200, {"errors": [], "warnings": []})

        def preupload(self, repo_id: str, rev: str, query: Any) -> None:
            if not self._authorised():
                return
            p = json.loads(self._body() or b"{}")
            with hub.lock:
                got = self._files(repo_id, rev)
                if got is None:
                    return
                files = got[2]
                out = []
                for f in p["files"]:
                    sample = base64.b64decode(f["sample"])
                    lfs = (
                        bool(LFS_PATTERNS.match(f["path"]))
                        or f["size"] >= 10 << 20
                        or b"\0" in sample
                    )
                    existing = files.get(f["path"])
                    out.append(
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                            "oid": existing.oid if existing else None,
                        }
                    )
            self._reply(200, {"files": out, "commitOid": got[1]})

        def lfs_batch(self, repo_id: str, query: Any) -> None:
            if not self._authorised():
                return
            p = json.loads(self._body() or b"{}")
            objects = []
            for o in p["objects"]:
                obj: dict[str, Any] = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                b = hub.blob(o["oid"])
                if not (b.is_file() and b.stat().st_size == o["size"]):
                    obj["actions"] = {
                        "upload": {"href": f"{hub.url}/__lfs/{o['oid']}"},
                        "verify": {"href": f"{hub.url}/__lfs/{o['oid']}/verify"},
                    }
                objects.append(obj)
            self._reply(200, {"transfer": "basic", "objects": objects})

        def lfs_put(self, oid: str, query: Any) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            h = hashlib.sha256()
            fd, tmp = tempfile.mkstemp(dir=hub.storage, prefix=".up.")
            with open(fd, "wb") as out:
                left = n
                while left:
                    block = self.rfile.read(min(left, 1 << 20))
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
                    left -= len(block)
            if h.hexdigest() != oid:
                Path(tmp).unlink()
                return self._err(400, "sha256 mismatch")
            Path(tmp).replace(hub.blob(oid))
            self._reply(200, {})

        def lfs_verify(self, oid: str, query: Any) -> None:
            p = json.loads(self._body() or b"{}")
            b = hub.blob(oid)
            if b.is_file() and b.stat().st_size == p.get("size"):
                return self._reply(200, {})
            self._err(404, "object not found")

        def commit(self, repo_id: str, rev: str, query: Any) -> None:
            if not self._authorised():
                return
            lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
            with hub.lock:
                got = self._files(repo_id, rev)
                if got is None:
                    return
                repo, head, files = got
                header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
                parent = header.get("parentCommit")
                if parent is not None and parent != head:
                    return self._err(
                        412, "A commit has happened since. Please refresh and try again."
                    )
                new = dict(files)
                for item in lines[1:]:
                    key, v = item["key"], item["value"]
                    if key == "file":
                        data = base64.b64decode(v["content"])
                        sha = hashlib.sha256(data).hexdigest()
                        hub.blob(sha).write_bytes(data)
                        new[v["path"]] = Entry(sha, len(data), False, git_oid(data))
                    elif key == "lfsFile":
                        b = hub.blob(v["oid"])
                        if not b.is_file():
                            return self._err(400, f"LFS object {v['oid']} was not uploaded")
                        new[v["path"]] = Entry(v["oid"], b.stat().st_size, True, v["oid"])
                    elif key == "deletedFile":
                        new.pop(v["path"], None)
                oid = hashlib.sha1(f"{head}{uuid.uuid4()}".encode()).hexdigest()
                repo.commits[oid] = (head, new, header.get("summary", ""))
                repo.branches[unquote(rev)] = oid
            self._reply(
                200,
                {
                    "success": True,
                    "commitOid": oid,
                    "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                    "hookOutput": "",
                },
            )

        def tag(self, repo_id: str, rev: str, query: Any) -> None:
            if not self._authorised():
                return
            p = json.loads(self._body() or b"{}")
            with hub.lock:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                commit = hub.resolve(repo, rev)
                if commit is None:
                    return self._err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                if p["tag"] in repo.tags:
                    return self._err(409, f"Tag {p['tag']} already exists")
                repo.tags[p["tag"]] = commit
            self._reply(200, {})

        def paths_info(self, repo_id: str, rev: str, query: Any) -> None:
            form = parse_qs(self._body().decode())
            with hub.lock:
                got = self._files(repo_id, rev)
                if got is None:
                    return
                files = got[2]
                out = [self._file_json(p, files[p]) for p in form.get("paths", []) if p in files]
            self._reply(200, out)

        def tree(self, repo_id: str, rev: str, sub: str | None, query: Any) -> None:
            with hub.lock:
                got = self._files(repo_id, rev)
                if got is None:
                    return
                prefix = (sub or "").strip("/")
                out = [
                    self._file_json(p, e)
                    for p, e in sorted(got[2].items())
                    if not prefix or p.startswith(prefix + "/")
                ]
            self._reply(200, out)

        def resolve(self, repo_id: str, rev: str, path: str, query: Any) -> None:
            with hub.lock:
                got = self._files(repo_id, rev)
                if got is None:
                    return
                _, commit, files = got
                e = files.get(unquote(path))
            if e is None:
                return self._err(404, "Entry not found", "EntryNotFound")
            headers = {
                "X-Repo-Commit": commit,
                "ETag": f'"{e.sha256 if e.lfs else e.oid}"',
                "Accept-Ranges": "bytes",
            }
            if e.lfs:
                headers.update({"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size)})
            blob = hub.blob(e.sha256)
            size = blob.stat().st_size
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            with open(blob, "rb") as f:
                while block := f.read(1 << 20):
                    self.wfile.write(block)

    R = r"([\w.-]+/[\w.-]+)"
    ROUTES = [
        ("POST", r"/api/repos/create", H.create_repo),
        ("GET", rf"/api/models/{R}/refs", H.refs),
        ("GET", rf"/api/models/{R}(?:/revision/([^/]+))?", H.model_info),
        ("POST", r"/api/validate-yaml", H.validate_yaml),
        ("POST", rf"/api/models/{R}/preupload/([^/]+)", H.preupload),
        ("POST", rf"/{R}\.git/info/lfs/objects/batch", H.lfs_batch),
        ("PUT", r"/__lfs/([0-9a-f]{64})", H.lfs_put),
        ("POST", r"/__lfs/([0-9a-f]{64})/verify", H.lfs_verify),
        ("POST", rf"/api/models/{R}/commit/([^/]+)", H.commit),
        ("POST", rf"/api/models/{R}/tag/([^/]+)", H.tag),
        ("POST", rf"/api/models/{R}/paths-info/([^/]+)", H.paths_info),
        ("GET", rf"/api/models/{R}/tree/([^/]+)(/.*)?", H.tree),
        ("GET", rf"/{R}/resolve/([^/]+)/(.+)", H.resolve),
    ]
    return H


class _Sink:
    """Swallows a response (for ``drop-after``)."""

    closed = False

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass
