"""A tiny causal-LM script in the style of transformers' run_clm.py: a GPT-2 from scratch
(n_layer=1, n_embd=32) with a BPE tokenizer trained locally by `tokenizers`, trained by
`transformers.Trainer`. The lines that adopt modelkit end in `# modelkit`.

    python hf_clm.py [--steps 8] [--resume DIR] [--kill-at STEP] [--out out]
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from modelkit.integrations.transformers import ModelkitCallback  # modelkit

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a model card says what a model is for and how it was trained",
    "reproducible training runs give the same weights twice",
    "the tokenizer splits text into tokens and the model predicts the next one",
    "small models train fast on a laptop without a gpu",
    "every release carries its weights its tokenizer and its card",
] * 4
BLOCK = 16


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on TEXT (deterministic)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<eos>"])
    tok.train_from_iterator(TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
    )


class Blocks(torch.utils.data.Dataset):
    """The text, tokenised and cut into BLOCK-token blocks (input_ids == labels)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        ids = [i for line in TEXT for i in tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]]
        self.blocks = [ids[i : i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = torch.tensor(self.blocks[i])
        return {"input_ids": t, "labels": t.clone()}


def eval_windows() -> torch.utils.data.TensorDataset:
    """Held-out text as (input windows, next tokens), for `modelkit eval --data hf_clm:eval_windows`."""
    tokenizer = build_tokenizer()
    ids = tokenizer(" ".join(reversed(TEXT[:6])))["input_ids"]
    n = (len(ids) - 1) // BLOCK
    x = torch.tensor(ids[: n * BLOCK]).view(n, BLOCK)
    y = torch.tensor(ids[1 : n * BLOCK + 1]).view(n, BLOCK)
    return torch.utils.data.TensorDataset(x, y)


class KillAt(TrainerCallback):
    """Test hook: SIGKILL this process at the end of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default="out")
    p.add_argument("--resume", default=None)
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    set_seed(a.seed)
    tokenizer = build_tokenizer()
    config = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=BLOCK, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=4, learning_rate=3e-3,
        logging_steps=1, save_steps=2, save_total_limit=10, report_to="none", use_cpu=True,
        seed=a.seed, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    callbacks = [ModelkitCallback("runs/clm", fingerprint_every=2)]  # modelkit
    if a.kill_at is not None:
        callbacks.append(KillAt(a.kill_at))
    trainer = Trainer(
        model=model, args=args, train_dataset=Blocks(tokenizer), processing_class=tokenizer,
        callbacks=callbacks,
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=a.resume)


if __name__ == "__main__":
    main()
