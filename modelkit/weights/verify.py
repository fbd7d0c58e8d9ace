"""Weights are read only after their files match the record: :func:`verified_weights`.

Every reader of a run's (or a release's) weights calls it. It reads the layout (typed errors
name a malformed, missing or extra shard: exit 2), then hashes each file once, streaming, and
compares it with run.json's ``weights.files`` (and with ``manifest.json`` when the directory is
a release): a mismatch names the file (:class:`~modelkit.errors.IntegrityError`, exit 3).
"""

from __future__ import annotations

from pathlib import Path

from modelkit.errors import IntegrityError, UnrecordedWeights
from modelkit.weights.hashing import file_hashes, weights_sha256
from modelkit.weights.layout import WeightsLayout, read_layout
from modelkit.weights.record import read_manifest_hashes, read_weights_record

MANIFEST = "manifest.json"
ABSENT = "(absent)"


def recorded_hashes(directory: Path, *, trust_unrecorded: bool) -> dict[str, str] | None:
    """``{file: sha256}`` run.json records for the weights (None: unrecorded and trusted)."""
    record = read_weights_record(directory)
    if record is None or not record.weights_sha256 or not record.files:
        if trust_unrecorded:
            return None
        raise UnrecordedWeights(directory)
    return record.files


def compare_hashes(
    layout: WeightsLayout, actual: dict[str, str], expected: dict[str, str], *, against: str
) -> None:
    """Every file of the layout, and only those, with the sha256 ``expected`` (named when not)."""
    hint = "the file was modified or replaced after it was recorded; restore it"
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name, ABSENT), actual.get(name, ABSENT)
        if want != got:
            path = layout.path(name)
            raise IntegrityError(path, expected=want, actual=got, record=against, hint=hint)


def verified_weights(directory: Path | str, *, trust_unrecorded: bool = False) -> WeightsLayout:
    """The checked layout of ``directory`` after every file matched run.json's record (and
    manifest.json's, in a release). ``trust_unrecorded`` accepts a run that records none."""
    d = Path(directory)
    layout = read_layout(d)
    expected = recorded_hashes(d, trust_unrecorded=trust_unrecorded)
    manifest = read_manifest_hashes(d / MANIFEST) if (d / MANIFEST).is_file() else None
    if expected is None and manifest is None:
        return layout
    actual = file_hashes(layout)
    if expected is not None:
        compare_hashes(layout, actual, expected, against="run.json")
    if manifest is not None:
        listed = {name: manifest.get(name, ABSENT) for name in layout.files}
        compare_hashes(layout, actual, listed, against=MANIFEST)
    return layout


def identity_of(directory: Path | str, layout: WeightsLayout) -> str:
    """The weights' identity: run.json's ``weights_sha256`` when it records one (the files
    were checked against the same record), else computed from the files."""
    record = read_weights_record(Path(directory))
    if record is not None and record.weights_sha256:
        return record.weights_sha256
    return weights_sha256(layout)
