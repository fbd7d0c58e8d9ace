"""Causal language modelling: logits (N, T, vocab) against next tokens (N, T).

The loss is token-weighted cross-entropy over every position (not the last one only; targets
of ``-100`` are ignored, as in torch and transformers); perplexity is ``exp(loss)`` and, where
the tokenizer is byte- or char-level, bits per byte/char is ``loss / ln 2``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelkit.tasks.base import Accumulator, Metric, Task, count, model_logits

if TYPE_CHECKING:  # the run core imports the tasks: typed records for annotations only
    from modelkit.runs.documents import EvalRecord
    from modelkit.runs.parts import DataInfo

IGNORE_INDEX = -100
# model kwargs that state a context length (gpt-tiny, nanoGPT, GPT-2 in transformers, others)
CONTEXT_KEYS = ("context_length", "block_size", "n_positions", "max_position_embeddings")
VOCAB_KEY = "vocab_size"  # the model keyword argument naming its vocabulary size
# tokenizer kind -> the bits metric it allows (one token is one byte / one character)
BITS_METRIC = {"byte": "bits_per_byte", "char": "bits_per_char"}


class TokenAccumulator(Accumulator):
    """Summed next-token negative log-likelihood (float64) and the number of scored tokens."""

    def __init__(self, tokenizer: str | None = None) -> None:
        import torch

        self.tokenizer = tokenizer
        self.nll = torch.zeros((), dtype=torch.float64)
        self.tokens = torch.zeros((), dtype=torch.int64)

    def update(self, output: Any, target: Any) -> None:
        """Add a batch: logits (N, T, V), next tokens (N, T)."""
        import torch.nn.functional as F

        logits = model_logits(output).float()
        nll = F.cross_entropy(
            logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).double()
        self.nll = self.nll.to(nll.device) + nll
        self.tokens = self.tokens.to(nll.device) + (target != IGNORE_INDEX).sum()

    def tensors(self) -> list[Any]:
        return [self.nll, self.tokens]

    def load(self, tensors: list[Any]) -> None:
        self.nll, self.tokens = tensors

    def summary(self) -> dict[str, Any]:
        n = int(self.tokens)
        loss = float(self.nll) / n if n else float("nan")
        out: dict[str, Any] = {
            "perplexity": math.exp(min(loss, 700.0)) if n else float("nan"),
            "loss": loss,
            "tokens": n,
        }
        if self.tokenizer in BITS_METRIC:
            out[BITS_METRIC[self.tokenizer]] = loss / math.log(2)
        return out


def _takes_targets(model: Any) -> bool:
    try:
        return "targets" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False


class LanguageModeling(Task):
    """Next-token prediction over token windows (decoder-only / causal language models)."""

    name = "language-modeling"
    title = "causal language model (text generation)"
    pipeline_tag = "text-generation"
    hub_task_name = "Text Generation"
    metrics = (
        Metric("perplexity", "Perplexity", higher_is_better=False),
        Metric("loss", "Cross-entropy loss (nats per token)", higher_is_better=False),
        Metric("bits_per_byte", "Bits per byte", higher_is_better=False),
        Metric("bits_per_char", "Bits per character", higher_is_better=False),
    )
    unit = "tokens"
    count_key = "tokens"

    def loss(
        self, output: Any, target: Any, loss_fn: Callable[..., Any], *, reduction: str = "mean"
    ) -> Any:
        logits = model_logits(output).float().flatten(0, -2)  # (N*T, V)
        flat = target.flatten()  # (N*T,)
        if reduction == "mean":
            return loss_fn(logits, flat)
        return loss_fn(logits, flat, reduction=reduction)

    def units(self, target: Any) -> int:
        return int((target != IGNORE_INDEX).sum())

    def accumulator(self, data: Any) -> TokenAccumulator:
        return TokenAccumulator(getattr(data, "tokenizer", None))

    def forward(self, model: Any, inputs: Any, target: Any) -> Any:
        """``model(inputs)``; a nanoGPT-style ``forward(idx, targets=None)`` that returns only
        the last position's logits without targets is called with them (every position)."""
        output = model(inputs)
        logits = model_logits(output)
        if logits.ndim == 3 and logits.shape[1] != target.shape[1] and _takes_targets(model):
            output = model(inputs, targets=target)
        return output

    def check_fit(self, output: Any, target: Any, data: Any) -> str | None:
        logits = model_logits(output)
        if target.ndim != 2:
            return f"targets are {list(target.shape)}, not token windows (batch, positions)"
        if logits.ndim != 3 or tuple(logits.shape[:2]) != tuple(target.shape):
            return (
                f"the model returned logits {list(logits.shape)} for token windows "
                f"{list(target.shape)}; expected (batch, positions, vocabulary) for every position"
            )
        vocab = getattr(data, "vocab_size", None)
        if vocab and logits.shape[2] < vocab:
            return f"the model's vocabulary has {logits.shape[2]} tokens, the data {vocab}"
        return None

    def model_type(
        self, data: DataInfo, ev: EvalRecord | None, model_kwargs: dict[str, Any] | None = None
    ) -> list[str]:
        """What the model is; context and vocabulary from the data, else the model's kwargs
        (nanoGPT's ``block_size``, transformers' ``n_positions``)."""
        kwargs = model_kwargs or {}
        context = next(
            (kwargs.get(k) for k in CONTEXT_KEYS if isinstance(kwargs.get(k), int)), None
        )
        context = data.context_length if data.context_length is not None else context
        vocab = data.vocab_size if data.vocab_size is not None else kwargs.get(VOCAB_KEY)
        return [
            f"- **Model type:** {self.title}",
            f"- **Context length:** {count(context, missing='not recorded')} tokens",
            f"- **Vocabulary:** {count(vocab, missing='not recorded')} tokens, "
            f"tokenizer: {data.tokenizer or 'not recorded'}",
        ]

    def data_lines(self, data: DataInfo, ev: EvalRecord | None) -> list[str]:
        held_out = data.test_tokens if data.test_tokens is not None else _count(ev, "tokens")
        return [
            f"- **Split:** {data.split or 'not recorded'}; train "
            f"{count(data.train_tokens, missing='not recorded')} tokens, held-out "
            f"{count(held_out, missing='not recorded')} tokens",
        ]

    def scope_line(self, name: str, data: DataInfo, *, others: bool) -> str:
        seen = data.train_tokens
        amount = f"{count(seen)} tokens of " if seen is not None else ""
        return f"- Trained on {amount}`{name}` only; " + (
            "text of other kinds (other languages, domains, styles) was not measured."
            if not others
            else "other text was measured only where listed under Evaluation."
        )

    def limitations(self, ev: EvalRecord | None) -> list[str]:
        lines = [
            "- A language model repeats patterns of its training text; its output is not checked "
            "for facts, licences of reproduced text or harmful content."
        ]
        if ev is not None:
            lines.insert(
                0,
                f"- The reported perplexity comes from one held-out split of "
                f"{count(ev.count('tokens'))} "
                "tokens, one seed, no confidence interval.",
            )
        return lines


def _count(ev: EvalRecord | None, name: str) -> Any:
    """A count the evaluation states (None without an evaluation)."""
    return ev.count(name) if ev is not None else None
