"""Repo routes of the test Hub: create, info, refs, card validation, tree, paths-info, tag,
resolve (download)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import yaml

from modelkit.testing.hubserver.state import LICENSES, Entry, Repo, lfs_pointer_oid

if TYPE_CHECKING:
    from modelkit.testing.hubserver.http import Request


def find_repo(req: Request, repo_id: str) -> Repo | None:
    """The repo, or None after answering 404 ``RepoNotFound``."""
    repo = req.hub.repos.get(repo_id)
    if repo is None:
        req.err(404, "Repository not found", "RepoNotFound")
    return repo


def files_at(req: Request, repo_id: str, rev: str) -> tuple[Repo, str, dict[str, Entry]] | None:
    """(repo, commit, files) of ``rev``, or None after answering 404."""
    repo = find_repo(req, repo_id)
    if repo is None:
        return None
    commit = req.hub.resolve(repo, rev)
    if commit is None:
        req.err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return None
    return repo, commit, repo.commits[commit][1]


def file_json(path: str, e: Entry) -> dict[str, Any]:
    """A file as the tree / paths-info endpoints describe it."""
    d: dict[str, Any] = {"type": "file", "path": path, "size": e.size}
    if e.lfs:
        d["oid"] = lfs_pointer_oid(e.sha256, e.size)
        d["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": 134}
    else:
        d["oid"] = e.oid
    return d


def create_repo(req: Request, *, query: Any) -> None:
    if not req.authorised():
        return
    p = req.json()
    org = p.get("organization") or "user"
    repo_id = f"{org}/{p['name']}"
    hub = req.hub
    with hub.lock:
        if repo_id in hub.repos:
            body = {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
            return req.reply(409, body)
        hub.new_repo(repo_id)
    req.reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})


def model_info(req: Request, repo_id: str, rev: str | None, *, query: Any) -> None:
    with req.hub.lock:
        got = files_at(req, repo_id, rev or "main")
        if got is None:
            return
        _, commit, files = got
        siblings = []
        for path, e in sorted(files.items()):
            s: dict[str, Any] = {"rfilename": path}
            if "blobs" in query:
                s.update(size=e.size, blobId=file_json(path, e)["oid"])
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": 134}
            siblings.append(s)
    body = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False}
    req.reply(200, body | {"tags": [], "siblings": siblings})


def refs(req: Request, repo_id: str, *, query: Any) -> None:
    def listed(kind: str, refs: dict[str, str]) -> list[dict[str, str]]:
        return [
            {"name": k, "ref": f"refs/{kind}/{k}", "targetCommit": v}
            for k, v in sorted(refs.items())
        ]

    with req.hub.lock:
        repo = find_repo(req, repo_id)
        if repo is None:
            return
        body = {
            "branches": listed("heads", repo.branches),
            "tags": listed("tags", repo.tags),
            "converts": [],
            "pullRequests": [],
        }
    req.reply(200, body)


def _card_errors(content: str) -> list[dict[str, str]]:
    """The Hub's card metadata checks that matter here: license id, model-index shape."""
    if not content.startswith("---\n"):
        return []
    try:
        meta = yaml.safe_load(content[4 : content.find("\n---", 4)]) or {}
    except yaml.YAMLError as exc:
        return [{"message": f"YAML error: {exc}"}]
    errors = []
    lic = meta.get("license")
    if lic is not None and lic not in LICENSES:
        errors.append({"message": f'"license" must be a valid license id: {lic}'})
    mi = meta.get("model-index")
    if mi is not None and not (isinstance(mi, list) and all("results" in x for x in mi)):
        errors.append({"message": '"model-index" is malformed'})
    return errors


def validate_yaml(req: Request, *, query: Any) -> None:
    errors = _card_errors(req.json().get("content", ""))
    if errors:
        return req.reply(400, {"errors": errors})
    req.reply(200, {"errors": [], "warnings": []})


def tag(req: Request, repo_id: str, rev: str, *, query: Any) -> None:
    if not req.authorised():
        return
    name = req.json()["tag"]
    with req.hub.lock:
        repo = find_repo(req, repo_id)
        if repo is None:
            return
        commit = req.hub.resolve(repo, rev)
        if commit is None:
            return req.err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if name in repo.tags:
            return req.err(409, f"Tag {name} already exists")
        repo.tags[name] = commit
    req.reply(200, {})


def paths_info(req: Request, repo_id: str, rev: str, *, query: Any) -> None:
    form = parse_qs(req.body().decode())
    with req.hub.lock:
        got = files_at(req, repo_id, rev)
        if got is None:
            return
        files = got[2]
        out = [file_json(p, files[p]) for p in form.get("paths", []) if p in files]
    req.reply(200, out)


def tree(req: Request, repo_id: str, rev: str, sub: str | None, *, query: Any) -> None:
    with req.hub.lock:
        got = files_at(req, repo_id, rev)
        if got is None:
            return
        prefix = (sub or "").strip("/")
        out = [
            file_json(p, e)
            for p, e in sorted(got[2].items())
            if not prefix or p.startswith(prefix + "/")
        ]
    req.reply(200, out)


def resolve(req: Request, repo_id: str, rev: str, path: str, *, query: Any) -> None:
    """Download a file (HEAD: its metadata) with the headers huggingface_hub reads."""
    with req.hub.lock:
        got = files_at(req, repo_id, rev)
        if got is None:
            return
        commit, e = got[1], got[2].get(unquote(path))
    if e is None:
        return req.err(404, "Entry not found", "EntryNotFound")
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{e.sha256 if e.lfs else e.oid}"',
        "Accept-Ranges": "bytes",
    }
    if e.lfs:
        headers.update({"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size)})
    blob = req.hub.blob(e.sha256)
    req.send_response(200)
    for k, v in headers.items():
        req.send_header(k, v)
    req.send_header("Content-Length", str(blob.stat().st_size))
    req.end_headers()
    if req.command == "HEAD":
        return
    with open(blob, "rb") as f:
        while block := f.read(1 << 20):
            req.wfile.write(block)
