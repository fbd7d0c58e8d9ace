"""A plain training script in the style of the PyTorch MNIST example (its own model class,
Adadelta, StepLR, NLL loss, its own DataLoader), adopted with the lines marked ``# modelkit``.

Used by tests/test_tracking.py. Options: --out DIR, --epochs N, --seed S, --lr LR,
--checkpoint-every N (with --resume), --kill-at-step N (SIGKILL itself, a crash test),
--nan-at-step N (the loss becomes NaN), --device cuda, --deterministic. MODELKIT_TEST_OVERWRITE=1 passes overwrite=True.
"""

import argparse
import os
import signal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

import modelkit  # modelkit

NOT_CONFIG = ("kill_at_step", "resume", "out", "device")  # options that do not change the result


class Net(nn.Module):
    def __init__(self, hidden=32, dropout=0.25):
        super().__init__()
        self.hidden = hidden
        self.dropout = dropout
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.drop(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/own")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--kill-at-step", type=int, default=-1)
    p.add_argument("--nan-at-step", type=int, default=-1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--deterministic", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    from modelkit.data import load_dataset

    ds = load_dataset("digits")
    train_ds = TensorDataset(ds.x_train, ds.y_train)
    device = torch.device(args.device)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    config = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}
    tracked = {"data": train_ds, "seed": args.seed, "resume": args.resume}  # modelkit
    tracked["deterministic"] = args.deterministic
    tracked["overwrite"] = os.environ.get("MODELKIT_TEST_OVERWRITE") == "1"
    with modelkit.start_run(args.out, config=config, model=model, **tracked) as run:  # modelkit
        start = run.resume(model, optimizer, scheduler) if args.resume else None  # modelkit
        step = start["step"] + 1 if start else 0
        steps_per_epoch = -(-len(train_ds) // args.batch_size)
        for epoch in range(step // steps_per_epoch, args.epochs):
            # the data order is a function of (seed, epoch): a resumed epoch sees the same batches
            g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, generator=g)
            model.train()
            for i, (x, y) in enumerate(loader):
                if epoch * steps_per_epoch + i < step:
                    continue  # batches done before the checkpoint
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                loss = F.nll_loss(model(x), y)
                if step == args.nan_at_step:
                    loss = loss * float("nan")
                loss.backward()
                optimizer.step()
                run.log(step, loss=loss.item(), epoch=epoch + 1)  # modelkit
                if args.checkpoint_every and step % args.checkpoint_every == 0:
                    run.checkpoint(model, optimizer, scheduler, step=step)  # modelkit
                if step == args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                step += 1
            scheduler.step()
        model.eval()
        with torch.no_grad():
            pred = model(ds.x_test.to(device)).argmax(1).cpu()
            acc = (pred == ds.y_test).float().mean().item()
        run.finish(model, metrics={"accuracy": acc})  # modelkit


if __name__ == "__main__":
    main()
