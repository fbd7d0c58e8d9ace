"""Text as token windows for language models: ``pystdlib`` (offline default) and ``text:PATH``.

A corpus is tokenized whole (``byte``: one token per UTF-8 byte, vocabulary 256; ``char``: one
token per character, vocabulary = the corpus's sorted characters), then split by position: the
last ``test_fraction`` (10%) of the tokens is held out, the rest is training text (a contiguous
split, so no held-out window overlaps a training one). Each split is cut into non-overlapping
windows of ``context_length`` tokens; the targets are the same windows shifted by one token.

``pystdlib`` is a fixed snapshot of 30 pure-Python modules of the CPython 3.11 standard library
(``modelkit/data/corpus/pystdlib.txt.gz``, ~985 KB, PSF licence beside it), byte-level: real
text that ships with modelkit, so ``modelkit train --model gpt-tiny`` needs no network.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import DataError

TOKENIZERS = ("byte", "char")
DEFAULT_CONTEXT = 128
CORPUS = Path(__file__).parent / "corpus" / "pystdlib.txt.gz"


@dataclass
class TokenDataset:
    """Train and held-out token windows (int64 ``(N, T)`` inputs and next-token targets)."""

    spec: str
    x_train: torch.Tensor  # (N, T) int64 token ids
    y_train: torch.Tensor  # (N, T) int64: x shifted by one token
    x_test: torch.Tensor  # (M, T)
    y_test: torch.Tensor  # (M, T)
    vocab_size: int
    tokenizer: str  # byte | char
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    task = "language-modeling"

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim != 2 or x.shape != y.shape or len(x) == 0:
                raise DataError(
                    f"data '{self.spec}': the {split} split has {len(x)} windows of "
                    f"{tuple(x.shape[1:])} tokens",
                    hint="use a longer text or a shorter context_length",
                )

    @property
    def context_length(self) -> int:
        """Tokens per window."""
        return int(self.x_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(context_length,)``."""
        return (self.context_length,)

    def model_hints(self) -> dict[str, Any]:
        """Values a model factory may take from the data."""
        return {"vocab_size": self.vocab_size, "context_length": self.context_length}

    def summary(self) -> dict[str, Any]:
        """What the run record stores about the data."""
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "train_size": int(self.x_train.shape[0]),
            "test_size": int(self.x_test.shape[0]),
            "train_tokens": int(self.y_train.numel()),
            "test_tokens": int(self.y_test.numel()),
            "input_shape": list(self.input_shape),
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer,
            **self.info,
        }

    def to(self, device: torch.device | str) -> TokenDataset:
        """Move every tensor to ``device``."""
        for name in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def tokenize(
    text: bytes, tokenizer: str, *, chars: str | None = None
) -> tuple[torch.Tensor, int, str]:
    """``(ids int64, vocabulary size, the char vocabulary or "")`` of ``text``."""
    if tokenizer == "byte":
        return torch.frombuffer(bytearray(text), dtype=torch.uint8).long(), 256, ""
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"the text is not UTF-8 (byte {exc.start})", hint='use tokenizer = "byte"'
        ) from None
    vocab = chars if chars is not None else "".join(sorted(set(s)))
    index = {c: i for i, c in enumerate(vocab)}
    missing = sorted(set(s) - set(index))
    if missing:
        raise DataError(
            f"the text has {len(missing)} characters outside the model's vocabulary "
            f"(e.g. {missing[0]!r})",
            hint="evaluate on text with the training corpus's characters, or train byte-level",
        )
    return torch.tensor([index[c] for c in s], dtype=torch.int64), len(vocab), vocab


def windows(ids: torch.Tensor, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping ``(inputs, targets)`` windows of ``context_length`` tokens."""
    n = (len(ids) - 1) // context_length
    x = ids[: n * context_length].view(n, context_length)
    y = ids[1 : n * context_length + 1].view(n, context_length)
    return x.contiguous(), y.contiguous()


def token_dataset(
    text: bytes,
    *,
    spec: str,
    tokenizer: str = "byte",
    context_length: int = 0,
    test_fraction: float = 0.1,
    chars: str | None = None,
    info: dict[str, Any] | None = None,
) -> TokenDataset:
    """Tokenize ``text``, hold out its last ``test_fraction``, cut both parts into windows."""
    if tokenizer not in TOKENIZERS:
        raise DataError(
            f"data '{spec}': unknown tokenizer '{tokenizer}' (valid: {', '.join(TOKENIZERS)})",
            hint='tokenizer = "byte" or "char"',
        )
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"data '{spec}': test_fraction must be in (0, 1)", hint="e.g. 0.1")
    context_length = context_length or DEFAULT_CONTEXT
    ids, vocab_size, vocab = tokenize(text, tokenizer, chars=chars)
    cut = int(len(ids) * (1.0 - test_fraction))
    x_train, y_train = windows(ids[:cut], context_length)
    x_test, y_test = windows(ids[cut:], context_length)
    digest = hashlib.sha256(f"text-v1|{tokenizer}|{context_length}|{test_fraction}|".encode())
    digest.update(vocab.encode("utf-8"))
    digest.update(text)
    extra = dict(info or {})
    extra["split"] = f"last {test_fraction:g} of the tokens held out; windows of {context_length}"
    if vocab:
        extra["chars"] = vocab
    return TokenDataset(
        spec, x_train, y_train, x_test, y_test, vocab_size, tokenizer,
        "sha256:" + digest.hexdigest(), extra,
    )  # fmt: skip


def _read_text(path: Path) -> bytes:
    """A file's bytes, or a folder's files (sorted by path, hidden ones skipped) joined by \\n."""
    if path.is_file():
        return path.read_bytes()
    if not path.is_dir():
        raise DataError(f"text data: {path} does not exist", hint="text:FILE or text:FOLDER")
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )  # fmt: skip
    if not files:
        raise DataError(f"text data: {path} holds no files", hint="put .txt files in it")
    return b"\n".join(p.read_bytes() for p in files)


def load_text_dataset(
    path: str,
    *,
    tokenizer: str = "byte",
    context_length: int = 0,
    test_fraction: float = 0.1,
    chars: str | None = None,
) -> TokenDataset:
    """``text:PATH``: a text file or a folder of text files, as token windows."""
    text = _read_text(Path(path))
    return token_dataset(
        text,
        spec=f"text:{path}",
        tokenizer=tokenizer,
        context_length=context_length,
        test_fraction=test_fraction,
        chars=chars,
        info={"source": Path(path).name},
    )


def load_pystdlib(*, context_length: int = 0) -> TokenDataset:
    """``pystdlib``: the bundled CPython standard-library snapshot, byte-level (offline)."""
    with gzip.open(CORPUS, "rb") as f:
        text = f.read()
    return token_dataset(
        text,
        spec="pystdlib",
        tokenizer="byte",
        context_length=context_length,
        info={"source": "CPython 3.11 standard library (30 modules; PSF licence)"},
    )
