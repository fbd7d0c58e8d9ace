"""Moved to :mod:`modelkit.runs.fingerprint`; kept for imports."""

from modelkit.runs.fingerprint import hash_tensors, state_digest, step_fingerprint, tensor_bytes

__all__ = ["hash_tensors", "state_digest", "step_fingerprint", "tensor_bytes"]
