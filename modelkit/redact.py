"""Secrets never enter a record: one function, :func:`redact`, applied before anything is written.

A run records its command line, its config and facts about its environment; a card and a
release publish them. :func:`redact` returns a copy of any JSON-like value (dict, list, str,
numbers) with every secret replaced by :data:`REDACTED`:

* **token-shaped values** anywhere in a string: Hugging Face (``hf_…``), GitHub (``ghp_…``,
  ``gho_…``, ``github_pat_…``), OpenAI-style (``sk-…``), AWS access key ids (``AKIA…``), Slack
  (``xox…-``), GitLab (``glpat-…``), JWTs, PEM private keys, the password of a URL
  (``https://user:PASS@host``), a ``Bearer`` credential, and the value after a secret-named key
  inside a string (``token=…``, ``"api_key": "…"``);
* **secret arguments** in a command line (a list of strings): ``--token X``, ``--token=X``,
  ``--password``, ``--api-key``, ``--hf-token``, … (any flag whose name is secret, see below);
* **secret keys** in a mapping (config, environment): a string value under a key whose words
  include ``token``, ``password``/``passwd``, ``secret``, ``credential(s)``, ``auth``,
  ``apikey``, or whose last word is ``key`` (``HF_TOKEN``, ``OPENAI_API_KEY``,
  ``db_password``, ``AWS_SECRET_ACCESS_KEY``). Numbers, booleans and null are kept
  (``max_tokens = 512`` is no secret); ``tokenizer`` is another word than ``token``.

Redaction is idempotent and never raises on JSON-like input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"

SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "secret",
        "credential",
        "credentials",
        "auth",
        "apikey",
        "passphrase",
        "cookie",
    }  # fmt: skip
)

# values that are secrets by their shape, wherever they appear
_START = r"(?<![A-Za-z0-9])"  # for prefixes that also end ordinary words ("task-")
_TOKEN_PATTERNS = (
    r"hf_[A-Za-z0-9]{16,}",
    r"gh[pousr]_[A-Za-z0-9]{16,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    _START + r"sk-[A-Za-z0-9_\-]{16,}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"glpat-[A-Za-z0-9_\-]{16,}",
    _START + r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
)
_TOKENS = re.compile("|".join(f"(?:{p})" for p in _TOKEN_PATTERNS))
# a secret after a secret-named key inside a string: token=..., "api_key": "...", Bearer ...
_KEYED = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z0-9_\-]*)(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"'&,;}]+)"
)
_FLAG = re.compile(
    r"(?<![\w-])(?P<key>--?[A-Za-z][A-Za-z0-9_\-]*)(?P<sep>=| +)(?P<value>[^\s\"'-][^\s\"']*)"
)
_BEARER = re.compile(r"(?i)\b(?P<key>bearer)(?P<sep>\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})")
_URL_PASSWORD = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*)(?P<sep>:)(?P<value>[^/\s@]+)(?=@)"
)
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret replaced by :data:`REDACTED` (see the module doc)."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = _redact_argv(value) if all(isinstance(x, str) for x in value) else value
        out = [redact(x) for x in items]
        return out if isinstance(value, list) else tuple(out)
    return value


def is_secret_name(name: Any) -> bool:
    """Whether a key, variable or flag name (``HF_TOKEN``, ``--api-key``, ``dbPassword``) is secret."""
    if not isinstance(name, str):
        return False
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if not words:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    return words[-1] == "key" or joined.endswith(("apikey", "accesskey", "privatekey"))


def has_secret(value: Any) -> bool:
    """Whether :func:`redact` would change ``value``."""
    return redact(value) != value


def _redact_item(key: Any, value: Any) -> Any:
    if is_secret_name(key) and isinstance(value, str) and value not in ("", REDACTED):
        return REDACTED
    if is_secret_name(key) and isinstance(value, list | tuple):
        return [REDACTED if isinstance(x, str) and x else redact(x) for x in value]
    return redact(value)


def _redact_argv(argv: list[str] | tuple[str, ...]) -> list[str]:
    """``--token X`` / ``--token=X`` (any secret flag name) -> the value redacted."""
    out: list[str] = []
    secret_next = False
    for arg in argv:
        if secret_next:
            secret_next = False
            if not arg.startswith("-") or arg == "-":
                out.append(REDACTED)
                continue
        flag, eq, _ = arg.partition("=")
        if flag.startswith("-") and is_secret_name(flag.lstrip("-")):
            if eq:
                out.append(f"{flag}={REDACTED}")
                continue
            secret_next = True
        out.append(arg)
    return out


def _redact_text(text: str) -> str:
    text = _TOKENS.sub(REDACTED, text)
    for pattern in (_URL_PASSWORD, _BEARER, _FLAG, _KEYED):
        text = pattern.sub(_keep_key, text)
    return text


def _keep_key(match: re.Match[str]) -> str:
    value = match.group("value")
    if value == REDACTED or value.startswith(("<redacted", "redacted>")):
        return match.group(0)
    if match.re is _FLAG and not is_secret_name(match.group("key").lstrip("-")):
        return match.group(0)
    if match.re is _KEYED and not (is_secret_name(match.group("key")) and _looks_secret(value)):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{REDACTED}"


def _looks_secret(value: str) -> bool:
    """A value after a secret-named key: anything but a short plain word or number."""
    if value.lower() in ("none", "null", "true", "false", "yes", "no"):
        return False
    return not re.fullmatch(r"[0-9.]+", value)
