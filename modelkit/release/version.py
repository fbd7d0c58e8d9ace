"""Release versions: ``v`` + a PEP 440 / semver-style release number, strictly increasing."""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.version import Version

from modelkit.errors import BadInputError

# The one grammar of a release tag: v1.2, v1.2.0, v1.2.0rc1, v2.0.0a3, v1.2.3b1, v1.2.0.post1
# (PEP 440 spellings, normalised; SemVer's MAJOR.MINOR.PATCH with a v prefix). ASCII digits
# only, matched whole (``fullmatch``: "v2.0\n" is not a version), at most 64 characters.
VERSION_RE = re.compile(
    r"v(?P<release>(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){1,2})(?P<pre>(a|b|rc)(0|[1-9][0-9]*))?"
    r"(?P<post>\.post(0|[1-9][0-9]*))?",
    re.ASCII,
)
MAX_LEN = 64


def is_version_tag(tag: object) -> bool:
    """True when ``tag`` is a release tag modelkit understands (``v1.2``, ``v1.2.0rc1``...)."""
    return isinstance(tag, str) and len(tag) <= MAX_LEN and VERSION_RE.fullmatch(tag) is not None


def parse_version(tag: str) -> Version:
    """Parse a release tag such as ``v1.2`` or ``v1.2.0``; BadInputError otherwise."""
    if not is_version_tag(tag):
        raise BadInputError(
            f"invalid version {tag!r}: expected a tag like v1.2 or v1.2.0 "
            "(v + MAJOR.MINOR[.PATCH][aN|bN|rcN][.postN])",
            hint="for example: modelkit release v1.0",
        )
    return Version(tag[1:])


def released_versions(tags: Iterable[str]) -> list[tuple[Version, str]]:
    """The version tags among ``tags``, sorted ascending (other tags are ignored)."""
    found = [(Version(t[1:]), t) for t in tags if is_version_tag(t)]
    return sorted(found)


def check_greater(tag: str, existing: Iterable[str], *, target: str) -> Version:
    """Refuse ``tag`` unless it is greater than every version already released to ``target``."""
    new = parse_version(tag)
    versions = released_versions(existing)
    if versions and new <= versions[-1][0]:
        latest = versions[-1][1]
        same = [t for v, t in versions if v == new]
        if same:
            msg = f"version {tag} equals the released {same[0]} on {target}"
        else:
            msg = f"version {tag} is not greater than the latest release {latest} on {target}"
        raise BadInputError(msg, hint=f"pick a version above {latest}, e.g. {suggest_next(latest)}")
    return new


def suggest_next(tag: str) -> str:
    """The next minor version after ``tag`` (v1.2 -> v1.3, v1.2.3 -> v1.3.0)."""
    v = Version(tag[1:])
    parts = [v.major, v.minor + 1] + ([0] if len(v.release) > 2 else [])
    return "v" + ".".join(map(str, parts))
