"""How the CLI words a library error: one table, error type -> (message, hint) in CLI terms.

The library speaks in API terms (``world size``, ``overwrite=True``); a verb's user needs the
flag (``--nproc-per-node``, ``--overwrite``). Types not in the table print their own message
and hint. huggingface_hub's ``hf`` CLI keeps such a table (``cli/_errors.py``); each row has
a test in ``tests/test_cli_errors.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from modelkit import errors as E

Wording = Callable[[E.ModelkitError], tuple[str, str | None]]


def _world_size(exc: E.ModelkitError) -> tuple[str, str | None]:
    saved = exc.saved if isinstance(exc, E.WorldSizeMismatch) else 1
    flag = f" --nproc-per-node {saved}" if saved > 1 else ""
    return exc.message, f"resume with the same number of processes:{flag or ' one (no flag)'}"


def _not_importable(exc: E.ModelkitError) -> tuple[str, str | None]:
    return exc.message, (
        "run the verb where that module is importable (the project root, or the training "
        "script's folder), or pip install the package that defines it"
    )


def _user_code(exc: E.ModelkitError) -> tuple[str, str | None]:
    return exc.message, "fix that function; re-run with MODELKIT_DEBUG=1 for its traceback"


def _unrecorded(exc: E.ModelkitError) -> tuple[str, str | None]:
    return exc.message, (
        "pass --trust-unrecorded (modelkit eval) only if you trust these weights, or record "
        "them again by finishing a run"
    )


def _sharding(exc: E.ModelkitError) -> tuple[str, str | None]:
    if not isinstance(exc, E.ShardingUnsupported):
        return exc.message, exc.hint
    reason, option = exc.reason, exc.option
    hints = {
        "processes": "add --nproc-per-node 2 (or more), or start it with torchrun "
        "--nproc-per-node 2 -m modelkit train --shard",
        "option": f"drop --{str(option).replace('_', '-')} or --shard",
    }
    if option == "repro":
        hints["option"] = "compare the weights_sha256 of two `modelkit train --shard` runs instead"
    return exc.message, hints.get(reason, exc.hint)


CLI_ERROR_MAPPINGS: dict[type[E.ModelkitError], Wording] = {
    E.WorldSizeMismatch: _world_size,
    E.NotImportable: _not_importable,
    E.UserCodeError: _user_code,
    E.UnrecordedWeights: _unrecorded,
    E.ShardingUnsupported: _sharding,
}


def cli_wording(exc: E.ModelkitError) -> tuple[str, str | None]:
    """``(message, hint)`` for the CLI: the table's row for the error's type (or a base type),
    else the error's own message and hint. An explicit hint from the raiser always wins."""
    for cls in type(exc).__mro__:
        wording = CLI_ERROR_MAPPINGS.get(cls)  # type: ignore[arg-type]
        if wording is not None:
            message, hint = wording(exc)
            return message, exc.hint if exc.hint and exc.hint != exc.describe()[1] else hint
    return exc.message, exc.hint
