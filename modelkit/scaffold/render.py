"""Template rendering for `modelkit init`: names, values, escaping, and the rendered files.

A template path maps to the generated path by three rules: a leading ``dot-`` becomes ``.``
(so ``dot-github`` is ``.github``), a ``__package__`` segment becomes the Python package name,
and the ``.tmpl`` suffix is dropped. Inside a template, ``{{key}}`` (no spaces, so GitHub's
``${{ expr }}`` is left alone) is replaced by the values in :func:`template_values`.
"""

from __future__ import annotations

import json
import keyword
import re
from importlib import resources
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError

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
