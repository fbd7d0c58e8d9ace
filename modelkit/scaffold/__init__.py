"""`modelkit init`: scaffold a new model repository with the maintainer workflow built in.

The templates live in ``modelkit/scaffold/templates/`` (package data). A template path maps to
the generated path by three rules: a leading ``dot-`` becomes ``.`` (so ``dot-github`` is
``.github``), a ``__package__`` segment becomes the Python package name, and the ``.tmpl``
suffix is dropped. Inside a template, ``{{key}}`` (no spaces, so GitHub's ``${{ expr }}`` is
left alone) is replaced by the values in :func:`template_values`.

Writing is all-or-nothing: every file is rendered first, then written into a staging
directory beside the target, then moved into place; on any error the files created so far
are removed again. An existing file is never overwritten: with ``force`` it is kept and
reported in :attr:`InitResult.kept`.
"""

from __future__ import annotations

import contextlib
import json
import keyword
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError

__all__ = [
    "InitResult",
    "init_project",
    "package_name",
    "render_templates",
    "template_values",
    "validate_name",
]

# Project names: PEP 508 names that also make a valid Python package once normalised.
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")
_PLACEHOLDER_RE = re.compile(r"\{\{[a-z_]+\}\}")
# Package names that would shadow something the generated project imports.
_RESERVED = frozenset(
    {
        "modelkit",
        "torch",
        "torchvision",
        "numpy",
        "safetensors",
        "huggingface_hub",
        "typer",
        "rich",
        "yaml",
        "sklearn",
        "scipy",
        "pytest",
        "test",
        "tests",
        "benchmarks",
        "src",
        "setuptools",
    }
)


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_project` did."""

    root: Path
    name: str
    package: str
    created: list[str] = field(default_factory=list)  # relative paths written
    kept: list[str] = field(default_factory=list)  # existing files left untouched (--force)
    git: dict[str, Any] = field(default_factory=dict)  # {"initialised", "committed", "note"}
    adopted: dict[str, Any] | None = None  # init --force: the repository's own model/script

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "root": str(self.root),
            "name": self.name,
            "package": self.package,
            "created": list(self.created),
            "kept": list(self.kept),
            "git": dict(self.git),
            "adopted": self.adopted,
        }


def package_name(name: str) -> str:
    """The Python package for a project name: lower case, ``-``/``.`` become ``_``."""
    return re.sub(r"[-.]+", "_", name).lower()


def validate_name(name: str) -> str:
    """Check a project name (and the package it implies); return the package name."""
    if not name or not _NAME_RE.match(name):
        raise BadInputError(
            f"invalid project name '{name}'",
            hint="use letters, digits and single - _ . between them, starting with a letter "
            "(e.g. digit-net); pass --name when the directory name is not one",
        )
    pkg = package_name(name)
    if not pkg.isidentifier() or keyword.iskeyword(pkg):
        raise BadInputError(
            f"project name '{name}' gives the package '{pkg}', which is not a valid Python name",
            hint="pick another --name",
        )
    if pkg in _RESERVED:
        raise BadInputError(
            f"project name '{name}' gives the package '{pkg}', which would shadow a module "
            "the project imports",
            hint="pick a more specific --name, e.g. my-" + name,
        )
    return pkg


def class_name(package: str) -> str:
    """``digit_net`` -> ``DigitNet``: the model class of the generated module."""
    return "".join(part[:1].upper() + part[1:] for part in package.split("_") if part)


def modelkit_requirement() -> str:
    """How the generated project should depend on modelkit: where this modelkit came from.

    A VCS install gives ``modelkit @ git+URL@COMMIT``, a local (editable) install
    ``modelkit @ file:///path``, anything else ``modelkit>=VERSION``.
    """
    from importlib import metadata

    from modelkit import __version__

    try:
        direct = metadata.distribution("modelkit").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    if direct:
        info = json.loads(direct)
        url = info.get("url", "")
        vcs = info.get("vcs_info")
        if vcs and url:
            commit = vcs.get("commit_id") or vcs.get("requested_revision")
            return f"modelkit @ {vcs.get('vcs', 'git')}+{url}" + (f"@{commit}" if commit else "")
        if url.startswith("file://"):
            return f"modelkit @ {url}"
    return f"modelkit>={__version__}"


def template_values(
    name: str, *, package: str | None = None, requirement: str | None = None
) -> dict[str, str]:
    """The ``{{key}}`` values the templates use."""
    from modelkit import __version__

    pkg = package or package_name(name)
    return {
        "name": name,
        "package": pkg,
        "class_name": class_name(pkg),
        "modelkit_requirement": requirement or modelkit_requirement(),
        "modelkit_version": __version__,
    }


def _templates_root() -> Any:
    return resources.files("modelkit.scaffold") / "templates"


def _walk(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            out.extend(_walk(child, (*prefix, child.name)))
        elif child.name.endswith(".tmpl"):
            out.append(((*prefix, child.name), child))
    return out


def _target_path(parts: tuple[str, ...], package: str) -> str:
    mapped = []
    for part in parts:
        if part.endswith(".tmpl"):
            part = part[: -len(".tmpl")]
        if part.startswith("dot-"):
            part = "." + part[len("dot-") :]
        if part == "__package__":
            part = package
        mapped.append(part)
    return "/".join(mapped)


def toml_string_content(value: str) -> str:
    """``value`` escaped for the inside of a TOML basic string ``"..."`` (TOML 1.0 §String):
    backslash and quote escaped, every control character as ``\\uXXXX``."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise BadInputError(
                f"value {value!r} holds a lone surrogate, which TOML cannot store",
                hint="pass valid UTF-8 text",
            )
        else:
            out.append(ch)
    return "".join(out)


def yaml_string_content(value: str) -> str:
    """``value`` escaped for the inside of a YAML double-quoted scalar ``"..."``."""
    return toml_string_content(value)  # the same escapes are valid YAML (\\, \\", \\uXXXX)


# how a value is escaped inside a template, by the generated file's suffix; every {{key}}
# in a .toml/.yaml template sits inside a double-quoted string (checked after rendering by
# parsing the file). Other files only receive validated names (letters, digits, - _ .).
ESCAPERS: dict[str, Any] = {
    ".toml": toml_string_content,
    ".yaml": yaml_string_content,
    ".yml": yaml_string_content,
}


def _parse_check(rel: str, text: str) -> None:
    """A generated TOML/YAML file must parse: a template or escaping bug, never a user error."""
    from modelkit.config import tomllib

    try:
        if rel.endswith(".toml"):
            tomllib.loads(text)
        elif rel.endswith((".yaml", ".yml")):
            import yaml

            yaml.safe_load(text)
    except Exception as exc:
        raise ModelkitError(f"generated {rel} does not parse: {exc}") from None


def render_templates(values: dict[str, str]) -> dict[str, str]:
    """Every generated file: relative path -> text (nothing written).

    Values go through the escaper of the generated file's format (:data:`ESCAPERS`), and a
    generated TOML/YAML file is parsed again, so no value can inject a key or break a file.
    """
    files: dict[str, str] = {}
    for parts, node in _walk(_templates_root()):
        rel = _target_path(parts, values["package"])
        escape = ESCAPERS.get(Path(rel).suffix, str)
        text = node.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", escape(value))
        leftover = _PLACEHOLDER_RE.search(text)
        if leftover:  # a template bug, not a user error
            raise ModelkitError(f"template {'/'.join(parts)} has an unknown {leftover.group(0)}")
        _parse_check(rel, text)
        files[rel] = text
    return files


def validate_requirement(requirement: str) -> str:
    """``--modelkit-requirement`` must be one PEP 508 requirement on modelkit."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise BadInputError(
            f"--modelkit-requirement {requirement!r} is not a valid requirement: {first}",
            hint="e.g. 'modelkit>=0.1', or 'modelkit @ git+https://github.com/ORG/modelkit@v0.1'",
        ) from None
    if package_name(req.name) != "modelkit":
        raise BadInputError(
            f"--modelkit-requirement {requirement!r} names '{req.name}', not modelkit",
            hint="e.g. 'modelkit>=0.1'",
        )
    return requirement


def _check_target(root: Path, *, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise BadInputError(f"{root} exists and is not a directory", hint="choose another PATH")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise BadInputError(
            f"{root} is not empty",
            hint="choose a new or empty directory, or pass --force to add the scaffold "
            "(existing files are kept, never overwritten)",
        )
    # the nearest existing ancestor must be a writable directory
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise BadInputError(
            f"cannot create {root}: {probe} is a file, not a directory", hint="choose another PATH"
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".modelkit-init-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInputError(
            f"{root} is not writable: {exc.strerror or exc}",
            hint="choose a directory you can write to",
        ) from None


def init_project(
    path: Path | str,
    *,
    name: str | None = None,
    force: bool = False,
    git: bool = True,
    requirement: str | None = None,
    model: str | None = None,
    script: str | None = None,
) -> InitResult:
    """Scaffold a model repository at ``path``; returns what was created and kept.

    With ``force`` on an existing repository that defines a model (or given ``model``,
    "module:attr"), that model and its training script are registered instead of the
    template model (see :mod:`modelkit.scaffold.adopt`).
    """
    root = Path(path).expanduser().absolute()
    name = name or root.name
    package = validate_name(name)
    if requirement is not None:
        validate_requirement(requirement)
    _check_target(root, force=force)
    files = render_templates(template_values(name, package=package, requirement=requirement))
    adoption, files = _adopt(root, files, name=name, package=package, model=model, script=script)

    existed = root.exists()
    kept = sorted(rel for rel in files if (root / rel).exists() or (root / rel).is_symlink())
    for rel in kept:
        if (root / rel).is_dir():
            raise BadInputError(
                f"{root / rel} is a directory where the scaffold puts a file",
                hint="move it away, or choose another PATH",
            )
    for rel in files:
        for parent in Path(rel).parents:
            if parent != Path(".") and (root / parent).exists() and not (root / parent).is_dir():
                raise BadInputError(
                    f"{root / parent} is a file where the scaffold puts a directory",
                    hint="move it away, or choose another PATH",
                )
    to_write = {rel: text for rel, text in files.items() if rel not in kept}

    staging_parent = root.parent if not existed else root
    created_paths: list[Path] = []
    created_dirs: list[Path] = [p for p in reversed(staging_parent.parents) if not p.exists()]
    if not staging_parent.exists():
        created_dirs.append(staging_parent)
    staging: Path | None = None
    try:
        staging_parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".modelkit-init-", dir=staging_parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; root gets the usual mode
        for rel, text in to_write.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        if not existed:
            os.rename(staging, root)  # one atomic step: the directory appears complete
        else:
            for rel in to_write:
                dest = root / rel
                missing_dirs = [p for p in reversed(dest.parents) if not p.exists()]
                dest.parent.mkdir(parents=True, exist_ok=True)
                created_dirs.extend(missing_dirs)
                try:
                    os.link(staging / rel, dest)  # fails if dest exists: never overwrites
                except FileExistsError:
                    raise BadInputError(
                        f"{dest} appeared while the scaffold was written", hint="run it again"
                    ) from None
                created_paths.append(dest)
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for p in created_paths:
            p.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for d in sorted(created_dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty
        raise

    if adoption is not None and "pyproject.toml" in kept:
        _register_in_existing_pyproject(root / "pyproject.toml", adoption)
    git_state = (
        _git_init(root, files=sorted(to_write))
        if git
        else {"initialised": False, "committed": False, "note": "--no-git: git left alone"}
    )
    return InitResult(
        root=root,
        name=name,
        package=package,
        created=sorted(to_write),
        kept=kept,
        git=git_state,
        adopted=adoption.to_dict() if adoption is not None else None,
    )


def _adopt(
    root: Path,
    files: dict[str, str],
    *,
    name: str,
    package: str,
    model: str | None,
    script: str | None,
) -> tuple[Any, dict[str, str]]:
    """``init --force`` on an existing repository: its model instead of the template's."""
    from modelkit.scaffold.adopt import adopt_files, find_adoption

    if model is None and script is None and not (root.is_dir() and any(root.iterdir())):
        return None, files
    adoption = find_adoption(root, name=name, model=model, script=script)
    if adoption is None:
        return None, files
    return adoption, adopt_files(files, adoption, package=package)


def _register_in_existing_pyproject(path: Path, adoption: Any) -> None:
    """Append the [tool.modelkit] registration to the user's pyproject.toml (if it has none)."""
    from modelkit.io import write_bytes_atomic
    from modelkit.scaffold.adopt import pyproject_addition

    text = path.read_text(encoding="utf-8")
    if "[tool.modelkit" in text:
        return  # the user's own table: left alone (init reports what it found)
    body = text + ("" if text.endswith("\n") else "\n") + pyproject_addition(adoption)
    write_bytes_atomic(path, body.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _git_init(root: Path, *, files: list[str]) -> dict[str, Any]:
    """``git init`` + a first commit of ``files`` (only what init wrote), unless ``root``
    already lies in a git work tree."""
    from modelkit.gitinfo import git

    state: dict[str, Any] = {"initialised": False, "committed": False, "note": ""}
    try:
        inside = git("rev-parse", "--is-inside-work-tree", cwd=root, check=False) == "true"
    except (FileNotFoundError, OSError):
        state["note"] = "git not found: run `git init` yourself"
        return state
    if inside:
        state["note"] = "already inside a git repository: commit the new files yourself"
        return state
    try:
        git("init", "-q", "-b", "main", cwd=root)
        state["initialised"] = True
        git("add", "--", *files, cwd=root)
        git("commit", "-q", "-m", "Initial commit: modelkit init", cwd=root)
        state["committed"] = True
    except subprocess.CalledProcessError as exc:
        first = (exc.stderr or "").strip().splitlines()
        reason = first[0] if first else f"git exited {exc.returncode}"
        if state["initialised"]:
            state["note"] = f"files staged but not committed ({reason}); commit them yourself"
        else:
            state["note"] = f"git init failed ({reason})"
    return state
