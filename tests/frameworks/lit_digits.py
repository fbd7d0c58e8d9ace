"""A Lightning MNIST-tutorial-style script on scikit-learn's bundled digits (8x8, offline):
a small MLP with dropout, validation every epoch, a checkpoint every epoch. The lines that
adopt modelkit end in `# modelkit`.

    python lit_digits.py [--epochs 3] [--ckpt PATH] [--kill-at STEP] [--out ckpts]
"""

from __future__ import annotations

import argparse
import os
import signal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modelkit.integrations.lightning import ModelkitCallback  # modelkit


class LitMLP(L.LightningModule):
    """64 -> hidden -> 10 with dropout (so the RNG matters between steps)."""

    def __init__(self, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 64) -> (B, 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class KillAt(L.Callback):
    """Test hook: SIGKILL this process after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def loaders() -> tuple[DataLoader, DataLoader]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    train = TensorDataset(x[:1500], y[:1500])
    val = TensorDataset(x[1500:], y[1500:])
    return DataLoader(train, batch_size=100, shuffle=True), DataLoader(val, batch_size=300)


def to_8x8(x: torch.Tensor) -> torch.Tensor:
    """modelkit's 1x28x28 digits (8x8 resized to 20x20, centred) back to this model's 64 inputs."""
    return nn.functional.adaptive_avg_pool2d(x[:, :, 4:24, 4:24], 8).flatten(1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="ckpts")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--kill-at", type=int, default=None)
    a = p.parse_args()
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    model = LitMLP(hidden=32, lr=0.01)
    # fmt: off
    callbacks = [
        ModelCheckpoint(dirpath=a.out, every_n_epochs=1, save_top_k=-1),
        ModelkitCallback("runs/lit", fingerprint_every=5, eval_transform="lit_digits:to_8x8"),  # modelkit
    ]
    # fmt: on
    if a.kill_at is not None:
        callbacks.append(KillAt(a.kill_at))
    trainer = L.Trainer(
        max_epochs=a.epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, train, val, ckpt_path=a.ckpt)


if __name__ == "__main__":
    main()
