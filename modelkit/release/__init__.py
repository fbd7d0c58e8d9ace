"""Releases: versions, packaging + manifest, targets (Hub, local registry), verification."""

from modelkit.release.publish import release
from modelkit.release.verify import verify_release

__all__ = ["release", "verify_release"]
