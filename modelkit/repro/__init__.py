"""Reproducibility: run twice or re-run a record, compare bitwise, localise the first divergence."""

from modelkit.repro.against import repro_against
from modelkit.repro.core import load_target, repro_twice

__all__ = ["load_target", "repro_against", "repro_twice"]
