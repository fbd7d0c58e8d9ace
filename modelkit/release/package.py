"""The release package: the files a release publishes, hashed in one streaming pass, + a manifest.

A package is a plan, not a copy: files stay where they are (in the run directory) and are read
in fixed-size chunks, so packaging 1 GiB of weights needs no more than a few MiB of memory.
Only the card (its loading snippet pinned to the release tag) and the manifest live in memory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CHUNK = 4 << 20  # 4 MiB reads: as fast as sha256sum, a fixed few MiB of memory
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files >= 10 MB in LFS
# the Hub's default .gitattributes (the patterns that matter for model repos) + images
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack",
    "*.npy", "*.npz", "*.pkl", "*.pickle", "*.tar", "*.tar.*", "*.gz", "*.zip", "*.zst",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp",
)  # fmt: skip
REQUIRED = ("model.safetensors", "config.json", "run.json", "README.md")
OPTIONAL = ("eval.json", "training_curves.png")
EVALS = "evals"  # evals/<dataset>.json: evaluations on data other than the training data's


def evaluation_files(run_dir: Path) -> list[Path]:
    """A run's evaluations: ``eval.json`` (the training data's held-out split) then ``evals/*``."""
    own = [run_dir / "eval.json"] if (run_dir / "eval.json").is_file() else []
    return own + sorted((run_dir / EVALS).glob("*.json"))


def require_evaluation(run_dir: Path) -> list[Path]:
    """At least one evaluation, or a RunDirError saying how to make one."""
    found = evaluation_files(run_dir)
    if not found:
        raise RunDirError(
            f"no evaluation in {run_dir} (eval.json or evals/*.json)",
            hint=f"evaluate first: modelkit eval {run_dir} (a run from your own loop: add --data SPEC)",
        )
    return found


@dataclass(frozen=True)
class PackageFile:
    """One file of a release: where it comes from, its size and hashes, regular or LFS."""

    path: str
    size: int
    sha256: str
    lfs: bool
    source: Path | None = None  # read from disk...
    data: bytes | None = None  # ...or held in memory (card, manifest)
    git_oid: str | None = None  # git blob sha1 (regular files: what the Hub reports as blob id)

    def open(self) -> Any:
        """A binary file object over the content."""
        import io

        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        return open(self.source, "rb")


@dataclass(frozen=True)
class Package:
    """Everything a target needs to publish one version."""

    version: str
    repo_id: str
    run_dir: Path
    files: list[PackageFile]
    manifest: dict[str, Any]
    weights: dict[str, Any] = field(default_factory=dict)
    signer: str | None = None  # the signing key's fingerprint, when signed

    def file(self, path: str) -> PackageFile:
        """The package file named ``path``."""
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def hash_file(path: Path, *, chunk: int = CHUNK) -> tuple[str, int]:
    """Streaming ``(sha256 hex, size)`` of a file with one reusable buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def git_blob_oid(data: bytes) -> str:
    """The git blob id (sha1 of ``blob <size>\\0`` + content), what the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, *, size: int, sample: bytes) -> bool:
    """Whether the Hub stores ``path`` in LFS: a binary pattern, >= 10 MB, or binary content."""
    name = path.rsplit("/", 1)[-1]
    return (
        any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)
        or size >= LFS_THRESHOLD
        or b"\0" in sample[:8000]
    )


def safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and check a safetensors header; returns metadata, tensors, dtypes, parameter count."""
    from modelkit.validation import check_safetensors_header

    try:
        total = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > min(total - 8, 100 << 20):
                raise ValueError(f"header length {n} is larger than the file")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"{path} is not a valid safetensors file: {exc}",
            hint="re-train, or restore the weights from a checkpoint",
        ) from None
    check_safetensors_header(header, path=path, error=RunDirError)  # every entry well-typed
    meta = header.pop("__metadata__", {}) or {}
    dtypes: dict[str, int] = {}
    params = 0
    end = 0
    for _name, t in header.items():
        count = 1
        for d in t["shape"]:
            count *= d
        params += count
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + count
        end = max(end, t["data_offsets"][1])
    if 8 + n + end != total:
        raise RunDirError(
            f"{path} is truncated or padded: header says {8 + n + end} bytes, file has {total}",
            hint="the weights file is corrupt; re-train or restore it",
        )
    return {
        "metadata": dict(meta),
        "tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items()},
        "num_tensors": len(header),
        "num_parameters": params,
        "dtypes": dtypes,
    }


def _disk_file(path: Path, name: str) -> PackageFile:
    sha, size = hash_file(path)
    with open(path, "rb") as f:
        sample = f.read(8000)
    lfs = is_lfs(name, size=size, sample=sample)
    oid = None if lfs else git_blob_oid(path.read_bytes())
    return PackageFile(name, size, sha, lfs, source=path, git_oid=oid)


def memory_file(name: str, data: bytes) -> PackageFile:
    """A package file held in memory (the card, the manifest)."""
    lfs = is_lfs(name, size=len(data), sample=data[:8000])
    return PackageFile(
        name,
        len(data),
        hashlib.sha256(data).hexdigest(),
        lfs,
        data=data,
        git_oid=None if lfs else git_blob_oid(data),
    )


def build_package(
    run_dir: Path | str,
    *,
    version: str,
    repo_id: str,
    card: bytes,
    sign_key: Path | str | None = None,
) -> Package:
    """Check a run directory and hash its release files (streaming) into a :class:`Package`.

    ``card`` is the final README.md (its loading snippet pinned to ``version``); with
    ``sign_key`` (an EC private key PEM) the manifest is signed (``manifest.sig`` +
    ``signer.pub``).
    """
    from modelkit import __version__
    from modelkit.runs import open_run

    run = open_run(run_dir, require=REQUIRED)
    record = run.read_record()
    if record.get("status") != "complete":
        raise RunDirError(
            f"run {run.path} is not complete (status: {record.get('status')})",
            hint="release a finished run",
        )
    header = safetensors_header(run.weights)
    if not header["metadata"].get("format"):
        raise RunDirError(
            f"{run.weights} has no 'format' in its safetensors metadata",
            hint="save weights with metadata={'format': 'pt'} (modelkit train does)",
        )
    files: list[PackageFile] = []
    for name in (*REQUIRED, *OPTIONAL):
        if name == "README.md":
            files.append(memory_file(name, card))
        elif (run.path / name).is_file():
            files.append(_disk_file(run.path / name, name))
    evals = run.path / EVALS
    if evals.is_dir():  # results on other data, each under its own dataset name
        for p in sorted(evals.glob("*.json")):
            files.append(_disk_file(p, f"{EVALS}/{p.name}"))
    weights = next(f for f in files if f.path == "model.safetensors")
    expected = record.get("weights_sha256")
    if expected != weights.sha256:
        raise RunDirError(
            f"{run.weights} sha256 {weights.sha256[:12]}… does not match run.json "
            f"({str(expected)[:12]}…)",
            hint="the weights changed after training; restore them or re-train",
        )
    for path in require_evaluation(run.path):
        try:
            evaluated = json.loads(path.read_text(encoding="utf-8")).get("weights_sha256")
        except (ValueError, AttributeError):
            raise RunDirError(
                f"{path} is not an evaluation result", hint=f"re-run: modelkit eval {run.path}"
            ) from None
        if evaluated not in (None, weights.sha256):
            raise RunDirError(
                f"{path} was computed for other weights",
                hint=f"re-run: modelkit eval {run.path}"
                + ("" if path.name == "eval.json" else " --data SPEC"),
            )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "repo_id": repo_id,
        "version": version,
        "created_by": f"modelkit {__version__}",
        "run": {
            "model": record.get("model"),
            "config_sha256": record.get("config_sha256"),
            "git_commit": (record.get("git") or {}).get("commit"),
            "data_fingerprint": (record.get("data") or {}).get("fingerprint"),
            "weights_sha256": expected,
            "reference": (run.read_config().get("modelkit") or {}).get("reference"),
        },
        "weights": {
            "metadata": header["metadata"],
            "num_parameters": header["num_parameters"],
            "dtypes": header["dtypes"],
        },
        "files": {
            f.path: {"sha256": f.sha256, "size": f.size, "lfs": f.lfs}
            | ({"git_oid": f.git_oid} if f.git_oid else {})
            for f in files
        },
    }
    blob = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()
    files.append(memory_file(MANIFEST, blob))
    if sign_key is not None:
        from modelkit.release.signing import PUBLIC_KEY, SIGNATURE, sign_manifest

        signature = sign_manifest(blob, key=sign_key)
        files.append(memory_file(SIGNATURE, signature.bundle))
        files.append(memory_file(PUBLIC_KEY, signature.public_key))
    return Package(
        version,
        repo_id,
        run.path,
        files,
        manifest,
        weights=header,
        signer=signature.fingerprint if sign_key is not None else None,
    )


def read_manifest(data: bytes, *, source: str) -> dict[str, Any]:
    """Parse a manifest, with a clear error when it is not one."""
    from modelkit.errors import CheckFailed

    try:
        m = json.loads(data)
        files = m["files"]
        assert isinstance(files, dict) and all(
            "sha256" in v and "size" in v for v in files.values()
        )
    except Exception:
        raise CheckFailed(
            f"{source}: {MANIFEST} is missing or malformed", hint="the release is incomplete"
        ) from None
    return m
