"""Records are read into typed objects once, then used by field (docs/architecture.md).

A modelkit record (run.json, config.json, eval files, metrics rows, release records, repro and
benchmark outcomes) is parsed by its type's reader (`modelkit.runs.typed.read_typed` under a
frozen dataclass) and read by attribute everywhere else. This test finds every string-keyed
read (`x["key"]`, `x.get("key")`, `x.pop("key")`, `x.setdefault("key")`; writes are not reads,
`os.environ` is not a record) outside the run core and fails unless the module is listed
below with the kind of *non-record* document it reads: an HTTP payload, a third-party file
format, a torch state dict, a user's own table of options. Each entry must still hold such
reads (a stale entry fails), so the list shrinks with the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "modelkit"
CORE = ("modelkit/runs/",)  # the run core parses the records (and checkpoints)

# module -> the non-record documents it reads by key
NOT_RECORDS: dict[str, str] = {
    "modelkit/config.py": "the user's TOML/YAML training config tables (validated here)",
    "modelkit/project.py": "pyproject.toml's [tool.modelkit] tables (validated here)",
    "modelkit/validation.py": "pydantic's error dicts and safetensors headers (a file format)",
    "modelkit/models/imports.py": "sys.modules (the interpreter's module table: __main__)",
    "modelkit/models/registry.py": "a factory's __annotations__ mapping",
    "modelkit/tasks/base.py": "a model's output mapping (transformers' ModelOutput['logits'])",
    "modelkit/weights/stream.py": "huggingface_hub's StateDictSplit.metadata (the library's plan)",
    "modelkit/weights/layout.py": "safetensors headers and HF's model.safetensors.index.json",
    "modelkit/testing/hubserver/http.py": "HTTP headers (the local Hub test server)",
    "modelkit/testing/hubserver/repos.py": "Hub API payloads and a card's YAML (test server)",
    "modelkit/testing/hubserver/uploads.py": "Hub API commit payloads (test server)",
    "modelkit/release/artifacts.py": "pyproject.toml's [tool.modelkit.release] include list (user config)",
    "modelkit/release/hub_client.py": "HTTP response headers (Retry-After)",
    "modelkit/repro/dumps.py": "a state dump's metadata: torch optimizer/scheduler state dicts",
    "modelkit/scaffold/render.py": "pip's direct_url.json (PEP 610)",
    "modelkit/scaffold/adopt.py": "a file table of the scaffold's templates",
    "modelkit/card/metadata.py": "a model card's YAML front matter (the Hub's card metadata)",
    "modelkit/card/options.py": "pyproject's [tool.modelkit.card], [project] license; pkg metadata",
    "modelkit/bench/cache.py": "pyproject.toml's dependency tables (the cache key); "
    "store()'s setdefault writes the key into a results document",
    "modelkit/training/dryrun.py": "the recipe's optimizer and lr_schedule tables (user config)",
    "modelkit/training/losses.py": "the recipe's loss table (user config)",
    "modelkit/training/optim.py": "torch's optimizer param_groups and the recipe's option tables",
    "modelkit/training/setup.py": "the recipe's option tables and the user's model kwargs (config)",
    "modelkit/training/sharded_checkpoint.py": "torch.distributed.checkpoint state dicts",
    "modelkit/training/state.py": "a checkpoint's torch state dict",
    "modelkit/data/__init__.py": "the project's dataset tables, loader options, the source registry",
    "modelkit/data/augment.py": "the recipe's augmentation table (user config)",
    "modelkit/data/batches.py": "the recipe's normalisation table (user config)",
    "modelkit/data/imagefolder.py": "an image folder's split table (train/val/test dirs)",
}


def key_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every string-keyed read in ``tree``."""
    out = []
    for node in ast.walk(tree):
        key, receiver = None, None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                key, receiver = node.slice.value, node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            key, receiver = node.args[0].value, node.func.value
        if key is not None and "environ" not in ast.unparse(receiver):
            out.append((node.lineno, key))
    return out


def _reads() -> dict[str, list[tuple[int, str]]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        reads = key_reads(ast.parse(path.read_text(), str(path)))
        if reads:
            out[rel] = reads
    return out


READS = _reads()


def test_records_are_read_by_field_outside_the_core() -> None:
    offenders = {
        rel: [f"{line}:{key}" for line, key in reads][:8] + ([f"... {len(reads)}"])
        for rel, reads in READS.items()
        if not rel.startswith(CORE) and rel not in NOT_RECORDS
    }
    assert not offenders, (
        "string-keyed reads outside modelkit/runs/: read the record into its type "
        "(modelkit.runs.typed.read_typed) and use fields, or list a non-record document "
        f"in NOT_RECORDS: {offenders}"
    )


def test_the_non_record_list_is_current() -> None:
    stale = [rel for rel in NOT_RECORDS if rel not in READS]
    assert not stale, f"no string-keyed reads left in {stale}: remove them from NOT_RECORDS"
