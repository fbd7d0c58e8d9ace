"""Signed releases with OpenSSF ``model-signing``: the manifest, signed with an elliptic-curve key.

The manifest lists the sha256 of every file of a release, so one signature over it covers
them all. ``release --sign-key KEY.pem`` writes, beside ``manifest.json``:

* ``manifest.sig``: the sigstore bundle (DSSE envelope over an in-toto statement) that
  ``model_signing`` produces for ``manifest.json``; it works offline (no transparency log);
* ``signer.pub``: the signer's public key (PEM), whose fingerprint (sha256 of the PEM, the
  same value as the bundle's key hint) identifies the signer.

``verify`` checks the signature with ``signer.pub`` or, better, with a public key the user
already trusts (``--public-key``), and reports the fingerprint. The private key is read once,
never copied, printed or stored; its password, if any, comes from ``MODELKIT_SIGN_KEY_PASSWORD``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelkit.errors import BadInputError, CheckFailed

SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signer.pub"
PASSWORD_ENV = "MODELKIT_SIGN_KEY_PASSWORD"


@dataclass(frozen=True)
class Signature:
    """A signature over a manifest: the bundle, the signer's public key and its fingerprint."""

    bundle: bytes
    public_key: bytes
    fingerprint: str


def fingerprint(public_key_pem: bytes) -> str:
    """``sha256:<hex>`` of a public key's PEM (model_signing's key hint)."""
    return "sha256:" + hashlib.sha256(public_key_pem).hexdigest()


def read_public_key(path: Path) -> bytes:
    """The PEM bytes of a signer's public key the user trusts (``verify --public-key``)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInputError(
            f"cannot read the public key {path}: {exc.strerror}",
            hint="pass the signer's public key file (PEM)",
        ) from None


def _public_pem(private_key_path: Path, password: bytes | None) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key_path.read_bytes(), password)
    except OSError as exc:
        raise BadInputError(
            f"cannot read the signing key {private_key_path}: {exc.strerror}",
            hint="pass the path of an elliptic-curve private key (PEM)",
        ) from None
    except TypeError:  # a password for a plain key, or none for an encrypted one
        if password is not None:
            raise BadInputError(
                f"the signing key {private_key_path} is not encrypted, but a password is set",
                hint=f"unset the {PASSWORD_ENV} environment variable for this key",
            ) from None
        raise BadInputError(
            f"the signing key {private_key_path} is encrypted",
            hint=f"put its password in the {PASSWORD_ENV} environment variable",
        ) from None
    except ValueError:
        raise BadInputError(
            f"{private_key_path} is not a PEM private key (or the password is wrong)",
            hint="create one: openssl ecparam -name prime256v1 -genkey -noout -out key.pem",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadInputError(
            f"{private_key_path} is a {type(key).__name__.lstrip('_')}, not an elliptic-curve key",
            hint="model-signing signs with EC keys: openssl ecparam -name prime256v1 -genkey",
        )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_manifest(manifest: bytes, *, key: Path | str) -> Signature:
    """Sign ``manifest`` (the bytes of manifest.json) with the EC private key at ``key``."""
    from model_signing import signing

    key = Path(key)
    password = os.environ.get(PASSWORD_ENV)
    pw = password.encode() if password else None
    public = _public_pem(key, pw)
    with tempfile.TemporaryDirectory(prefix="modelkit-sign-") as tmp:
        target = Path(tmp) / "manifest.json"
        target.write_bytes(manifest)
        sig = Path(tmp) / SIGNATURE
        try:
            signing.Config().use_elliptic_key_signer(private_key=key, password=pw).sign(target, sig)
        except ValueError as exc:  # unsupported curve
            raise BadInputError(
                f"model-signing cannot sign with {key}: {exc}",
                hint="use a P-256, P-384 or P-521 key",
            ) from None
        return Signature(sig.read_bytes(), public, fingerprint(public))


def verify_manifest(
    manifest: bytes, *, bundle: bytes, public_key: bytes, trusted_key: bytes | None = None
) -> str:
    """Check ``bundle`` signs ``manifest``; returns the signer's fingerprint.

    ``public_key`` is the one shipped with the release; ``trusted_key`` (when given) is the
    key the user trusts, and must be the same key. :class:`CheckFailed` otherwise.
    """
    from model_signing import verifying

    key = trusted_key if trusted_key is not None else public_key
    if trusted_key is not None and fingerprint(trusted_key) != fingerprint(public_key):
        raise CheckFailed(
            f"the release is signed by {fingerprint(public_key)}, not by the trusted key "
            f"{fingerprint(trusted_key)}",
            hint="the release was re-signed by someone else; do not use it",
        )
    with tempfile.TemporaryDirectory(prefix="modelkit-verify-sig-") as tmp:
        target = Path(tmp) / "manifest.json"
        target.write_bytes(manifest)
        (Path(tmp) / SIGNATURE).write_bytes(bundle)
        (Path(tmp) / PUBLIC_KEY).write_bytes(key)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=Path(tmp) / PUBLIC_KEY).verify(
                target, Path(tmp) / SIGNATURE
            )
        except Exception as exc:
            detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckFailed(
                f"the signature does not match the manifest: {detail}",
                hint="the release was modified after it was signed; do not use it",
            ) from None
    return fingerprint(key)
