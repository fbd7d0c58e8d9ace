"""Typed errors with fields. The library says what is wrong, in API terms; the CLI adds which
flag to use (``modelkit/cli/_errors.py``) and prints one line + a hint + the exit code.

Exit codes (documented in the README):
    0 ok · 1 failure · 2 bad input/usage · 3 a check said no.

Every error carries its facts as attributes (``UnknownName.kind/.name/.choices``,
``WorldSizeMismatch.saved/.now``, ...), so code that handles an error branches on its type and
fields, never on its wording. ``ModelkitError(message, hint=...)`` stays valid for a one-off.
The classes live in ``base`` (the categories), ``code`` and ``files``; import them from here.
"""

from modelkit.errors.base import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_FAILURE,
    EXIT_OK,
    BadInputError,
    CheckFailed,
    ConfigError,
    DataError,
    ModelkitError,
    RunDirError,
    TrainingError,
    UnknownName,
    UnknownNameError,
    did_you_mean,
    unknown,
)
from modelkit.errors.code import (
    CheckpointMismatch,
    Interrupted,
    InvalidArgument,
    ModelNotImportable,
    NotImportable,
    NotRecordable,
    ShardingUnsupported,
    UserCodeError,
    WorldSizeMismatch,
)
from modelkit.errors.files import (
    FileMissing,
    IntegrityError,
    NoWeights,
    ShardMissing,
    UnexpectedShard,
    UnrecordedWeights,
    UnsafeManifestPath,
    UnsafeRunFile,
    WeightsLayoutError,
    WeightsMismatch,
    WriteFailed,
)

__all__ = [
    "BadInputError",
    "CheckFailed",
    "CheckpointMismatch",
    "ConfigError",
    "DataError",
    "EXIT_BAD_INPUT",
    "EXIT_CHECK_FAILED",
    "EXIT_FAILURE",
    "EXIT_OK",
    "FileMissing",
    "IntegrityError",
    "Interrupted",
    "InvalidArgument",
    "ModelNotImportable",
    "ModelkitError",
    "NoWeights",
    "NotImportable",
    "NotRecordable",
    "RunDirError",
    "ShardMissing",
    "ShardingUnsupported",
    "TrainingError",
    "UnexpectedShard",
    "UnknownName",
    "UnknownNameError",
    "UnrecordedWeights",
    "UnsafeManifestPath",
    "UnsafeRunFile",
    "UserCodeError",
    "WeightsLayoutError",
    "WeightsMismatch",
    "WorldSizeMismatch",
    "WriteFailed",
    "did_you_mean",
    "unknown",
]
