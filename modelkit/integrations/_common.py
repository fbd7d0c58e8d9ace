"""What both framework callbacks share: the environment's seed, the determinism block, the
config they record and the tokenizer they keep. Imports no framework."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.models.configs import encode_config, kind_of

# keys of a framework's arguments that do not change the result (where it writes, how it
# reports, credentials): left out of the recorded config, so a run written to another folder
# (repro's two sides, a resumed run) has the same config digest
VOLATILE_KEYS = frozenset(
    {"output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "report_to",
     "overwrite_output_dir", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo",
     "default_root_dir", "dirpath"}
)  # fmt: skip


def env_seed(default: int | None = None) -> int | None:
    """``MODELKIT_SEED`` as an int when set (else ``default``); a usage error when malformed."""
    from modelkit.tracking import SEED_ENV

    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise BadInputError(
            f"{SEED_ENV}={raw!r} is not an integer >= 0", hint=f"set {SEED_ENV} to a seed"
        )
    return int(raw)


def env_deterministic() -> bool:
    """``MODELKIT_DETERMINISTIC`` asks for deterministic algorithms."""
    from modelkit.tracking import DETERMINISTIC_ENV

    return os.environ.get(DETERMINISTIC_ENV, "") not in ("", "0")


def determinism_block(seed: int | None, *, seeded_by: str) -> dict[str, Any]:
    """run.json's determinism block for a framework that seeded itself (nothing is re-seeded)."""
    import torch

    from modelkit.tracking import SEED_ENV
    from modelkit.training.determinism import determinism_state

    block = determinism_state(enabled=torch.are_deterministic_algorithms_enabled(), seed=seed)
    block["seeded"] = seeded_by
    if os.environ.get(SEED_ENV):
        block["seed_from_env"] = SEED_ENV
    return block


def clean_config(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without :data:`VOLATILE_KEYS` and credentials (any ``*token*`` key); a config
    object among them (a dataclass in a Lightning module's hparams) as its values."""

    out = {}
    for key, value in values.items():
        if key in VOLATILE_KEYS or "token" in key.lower():
            continue
        if kind_of(value) is not None:
            value = encode_config(value, reference="the config", argument=key).values
        out[key] = value
    return out


def save_tokenizer(tokenizer: Any, run: Any) -> list[str]:
    """Declare ``tokenizer``'s files (anything with ``save_pretrained``) as run artifacts
    (``artifacts/``; a release carries them beside config.json); returns their names."""
    import tempfile

    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        return []
    with tempfile.TemporaryDirectory(prefix="modelkit-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        files = sorted(p for p in Path(tmp).iterdir() if p.is_file())
        for path in files:
            run.add_artifact(path)
    return [p.name for p in files]
