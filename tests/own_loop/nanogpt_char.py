"""A character-level GPT script in the style of a minimal public GPT repository (nanoGPT's
model.py + train.py, shakespeare_char): a model built from a dataclass config, ``forward(idx,
targets=None)`` returning ``(logits, loss)`` -- the last position's logits only when there are
no targets --, an iteration-based loop on random windows and its own ``estimate_loss``.
Adopted for modelkit by the lines marked ``# modelkit``. Reads ``input.txt`` from the cwd.
"""

import argparse
import math
from dataclasses import asdict, dataclass

import modelkit  # modelkit
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 32
    vocab_size: int = 65
    n_layer: int = 1
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])  # inference: only the last position
            loss = None
        return logits, loss


def build_gpt(**kwargs):  # modelkit
    return GPT(GPTConfig(**kwargs))  # modelkit


def get_batch(data, block_size, batch_size):
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


@torch.no_grad()
def estimate_loss(model, splits, block_size, batch_size, eval_iters):
    out = {}
    model.eval()
    for split, data in splits.items():
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(data, block_size, batch_size)
            _, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iters", type=int, default=60)
    parser.add_argument("--eval-interval", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    with open("input.txt", encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]

    gptconf = GPTConfig(vocab_size=len(chars))
    model = GPT(gptconf)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    run = modelkit.start_run("runs/gpt", config=vars(args), model=model, data="input.txt", task="language-modeling", reference="nanogpt_char:build_gpt", model_kwargs=asdict(gptconf))  # modelkit
    for it in range(args.max_iters + 1):
        lr = args.lr * min(1.0, (it + 1) / 10) * 0.5 * (1 + math.cos(math.pi * it / args.max_iters))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % args.eval_interval == 0 or it == args.max_iters:
            losses = estimate_loss(model, {"train": train_data, "val": val_data}, gptconf.block_size, args.batch_size, 4)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            run.log_epoch(it // args.eval_interval, step=it, val_loss=losses["val"], train_loss=losses["train"])  # modelkit
        if it == args.max_iters:
            break
        X, Y = get_batch(train_data, gptconf.block_size, args.batch_size)
        _, loss = model(X, Y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.log(it, loss=loss.item())  # modelkit
    run.finish(model, metrics={"val_loss": losses["val"]})  # modelkit


if __name__ == "__main__":
    main()
