"""Property-based tests (hypothesis): the readers of user input either return a value that is
exactly what was given, or raise the documented typed error, for every input tried.

Covers config parsing and validation (TrainConfig, [tool.modelkit]), release version tags,
the IDX reader, the safetensors header check, and the TOML escaping of generated files.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import struct
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelkit.config import TrainConfig, read_config_file, tomllib, validate_train_mapping
from modelkit.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from modelkit.errors import BadInputError, ConfigError, DataError, RunDirError
from modelkit.project import validate_project_table
from modelkit.release.package import safetensors_header
from modelkit.release.version import check_greater, parse_version
from modelkit.scaffold import render_templates, template_values, toml_string_content
from modelkit.validation import INT64_MAX

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# every value TOML/YAML/JSON can hold (TOML has no null; YAML/JSON do)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
HINTS = typing.get_type_hints(TrainConfig, include_extras=True)


def _base(tp: object) -> object:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _conforms(tp: object, value: object) -> bool:
    """An independent, deliberately simple reading of the annotation (no pydantic)."""
    tp = _base(tp)
    origin = typing.get_origin(tp)
    if tp is int:
        return type(value) is int and -(2**63) <= value < 2**63
    if tp is float:
        return type(value) in (int, float) and math.isfinite(value)
    if tp is bool:
        return type(value) is bool
    if tp is str:
        return type(value) is str
    if tp is typing.Any:
        return True
    if origin is dict:
        return isinstance(value, dict)
    if origin in (typing.Union, __import__("types").UnionType):
        return any(_conforms(a, value) for a in typing.get_args(tp))
    return True


@SETTINGS
@given(st.sampled_from(FIELDS), values)
def test_any_value_for_any_key_is_accepted_exactly_or_refused_naming_the_key(key, value) -> None:
    try:
        validate_train_mapping({key: value}, source="cfg.toml")
    except ConfigError as exc:
        assert exc.message.startswith("cfg.toml: key '" + key)
        assert exc.hint
        assert exc.exit_code == 2
        return
    # accepted: the value has the annotated type (bool is not an int, NaN is not a float)
    assert _conforms(HINTS[key], value), (key, value)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_from_dict_never_raises_anything_but_config_error(data) -> None:
    try:
        cfg = TrainConfig.from_dict(data, source="c.yaml")
    except ConfigError as exc:
        assert exc.message.startswith("c.yaml: ")
        return
    for key, value in data.items():  # what was accepted is stored exactly
        assert getattr(cfg, key) == value or (value != value)  # noqa: PLR0124 (NaN never accepted)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg  # the saved form round-trips


@SETTINGS
@given(st.text(min_size=1, max_size=10).filter(lambda k: k not in FIELDS))
def test_unknown_keys_are_refused(key) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        validate_train_mapping({key: 1}, source="x")


@SETTINGS
@given(st.binary(max_size=200))
def test_config_file_bytes_parse_or_fail_cleanly(tmp_path: Path, blob: bytes) -> None:
    for suffix in (".toml", ".yaml", ".json"):
        path = tmp_path / f"c{suffix}"
        path.write_bytes(blob)
        try:
            data = read_config_file(path)
        except ConfigError as exc:
            assert str(path) in exc.message
            continue
        assert isinstance(data, dict)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["models", "datasets", "defaults", "run", "hub"]), values))
def test_project_table_is_checked_by_type(table) -> None:
    try:
        validate_project_table(table, source="p.toml [tool.modelkit]")
    except ConfigError as exc:
        assert exc.message.startswith("p.toml [tool.modelkit")
        return
    for key in ("run", "hub"):
        assert table.get(key) is None or isinstance(table[key], str)
    for key in ("models", "datasets", "defaults"):
        assert key not in table or isinstance(table[key], dict)


# --- benchmark results files (a saved --baseline, a cached side) ---------------------------

metric_entries = st.dictionaries(
    st.sampled_from(["kind", "unit", "higher_is_better", "value", "values", "margin"]), values
)
bench_entries = st.fixed_dictionaries(
    {"fullname": st.text(max_size=6) | scalars},
    optional={"stats": values, "extra_info": st.fixed_dictionaries(
        {}, optional={"modelkit": st.dictionaries(st.text(max_size=4), metric_entries | values),
                      "modelkit_gate_time": values})},
)  # fmt: skip


@SETTINGS
@given(
    st.lists(bench_entries, max_size=3),
    st.dictionaries(st.sampled_from(["machine_info", "commit_info", "modelkit"]), values),
)
def test_benchmark_results_read_typed_or_refused_naming_the_file(entries, rest) -> None:
    from modelkit.bench.results import BenchmarkDoc, read_record, summarise_doc

    try:
        doc = read_record(BenchmarkDoc, {"benchmarks": entries, **rest}, source="r.json")
    except BadInputError as exc:
        assert exc.message.startswith("r.json: ") and exc.hint
        return
    summaries = summarise_doc(doc)
    assert set(summaries) == {e["fullname"] for e in entries}
    for s in summaries.values():
        assert all(isinstance(m.kind, str) for m in s.metrics.values())


# --- release versions --------------------------------------------------------------------

nums = st.integers(min_value=0, max_value=10**6)
tags = st.builds(
    lambda parts, pre, post: (
        "v"
        + ".".join(map(str, parts))
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
    ),
    st.lists(nums, min_size=2, max_size=3),
    st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), nums),
    st.none() | nums,
)


@SETTINGS
@given(tags)
def test_every_wellformed_tag_parses_to_its_numbers(tag) -> None:
    v = parse_version(tag)
    assert (
        ".".join(map(str, v.release))
        == tag[1:].split("a")[0].split("b")[0].split("rc")[0].split(".post")[0]
    )


@SETTINGS
@given(st.text(max_size=20))
def test_any_text_is_a_version_or_a_bad_input(text) -> None:
    from modelkit.errors import BadInputError

    try:
        parse_version(text)
    except BadInputError as exc:
        assert exc.exit_code == 2
        return
    assert text.startswith("v")


@SETTINGS
@given(tags, tags)
def test_check_greater_is_the_version_order(a, b) -> None:
    from modelkit.errors import BadInputError

    va, vb = parse_version(a), parse_version(b)
    try:
        check_greater(b, [a], target="t")
    except BadInputError:
        assert vb <= va
    else:
        assert vb > va


# --- IDX reader --------------------------------------------------------------------------


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@SETTINGS
@given(
    st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.integers(0, 255), min_size=n * 4, max_size=n * 4),
        )
    ),
    st.booleans(),
)
def test_idx_roundtrip(tmp_path: Path, data, gz: bool) -> None:
    n, pixels = data
    images = np.array(pixels, dtype=np.uint8).reshape(n, 2, 2)
    blob = _idx(IMAGES_MAGIC, images)
    path = tmp_path / "i.idx"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    assert np.array_equal(read_idx(path, expect_magic=IMAGES_MAGIC), images)


@SETTINGS
@given(st.binary(max_size=64), st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]))
def test_idx_any_bytes_read_or_data_error(tmp_path: Path, blob: bytes, magic: int) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(blob)
    try:
        arr = read_idx(path, expect_magic=magic)
    except DataError as exc:
        assert str(path) in exc.message
        return
    assert blob[:4] == struct.pack(">I", magic)
    assert arr.size == len(blob) - 4 - 4 * blob[3]


@SETTINGS
@given(st.binary(max_size=40))
def test_idx_header_with_garbage_after_the_magic(tmp_path: Path, rest: bytes) -> None:
    path = tmp_path / "y.idx"
    path.write_bytes(struct.pack(">I", LABELS_MAGIC) + rest)
    try:
        arr = read_idx(path, expect_magic=LABELS_MAGIC)
    except DataError as exc:
        assert exc.exit_code == 2
        return
    assert arr.dtype == np.uint8 and arr.size == len(rest) - 4  # 1-d: one size word


# --- safetensors header ------------------------------------------------------------------

entry = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "I64"]) | values,
        "shape": st.lists(st.integers(0, 3), max_size=3) | values,
        "data_offsets": st.lists(st.integers(0, 64), min_size=2, max_size=2) | values,
    },
)


@SETTINGS
@given(
    st.dictionaries(st.text(min_size=1, max_size=5), entry | values, max_size=3),
    st.binary(max_size=64),
)
def test_safetensors_header_any_entries_read_or_run_dir_error(tmp_path: Path, header, body) -> None:
    raw = json.dumps(header, allow_nan=True).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    try:
        info = safetensors_header(path)
    except RunDirError as exc:
        assert str(path) in exc.message
        return
    assert info["num_tensors"] == len([k for k in header if k != "__metadata__"])


# --- generated files -----------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=40))
def test_toml_escaping_roundtrips_any_text(text) -> None:
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
    doc = f'key = "{toml_string_content(text)}"\n'
    assert tomllib.loads(doc) == {"key": text}


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_rendered_pyproject_holds_exactly_the_requirement(text) -> None:
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
    files = render_templates(template_values("demo-net", requirement=text))
    pyproject = tomllib.loads(files["pyproject.toml"])
    assert pyproject["project"]["dependencies"] == [text]
    assert pyproject["project"]["name"] == "demo-net"


def test_int64_bound_is_the_limit() -> None:
    validate_train_mapping({"model_kwargs": {"a": INT64_MAX}}, source="s")
    with pytest.raises(ConfigError, match="64-bit"):
        validate_train_mapping({"model_kwargs": {"a": INT64_MAX + 1}}, source="s")
