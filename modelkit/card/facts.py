"""Small facts shared by eval, the card and the release: a dataset's public name.

A data spec may hold a local path (``mnist:/home/me/data/mnist``); what a card or an
``evals/`` file name shows is the dataset's name (``mnist``), never the path.
"""

from __future__ import annotations

import re
from pathlib import PurePath

UNKNOWN = "unknown"


def dataset_name(spec: str | None) -> str:
    """The public name of a data spec: ``digits`` -> digits, ``mnist:/a/b/mnist`` -> mnist,
    ``imagefolder:/data/catsdogs`` -> catsdogs, ``pkg.data:load_toy`` -> load_toy."""
    if not spec:
        return UNKNOWN
    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return kind
    base = PurePath(rest.rstrip("/\\")).name or kind
    return base


def slug(name: str) -> str:
    """A file-name-safe form of ``name``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or UNKNOWN


def known(value: object, *, unknown: str = UNKNOWN) -> str:
    """``value`` as text, or ``unknown`` for None / empty (a card never says None)."""
    if value is None or value == "" or value == [] or value == {}:
        return unknown
    return str(value)
