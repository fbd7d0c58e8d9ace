"""A plain training script in the style of the official PyTorch MNIST example
(github.com/pytorch/examples, mnist/main.py): its own conv ``Net`` ending in log_softmax,
Adadelta, StepLR, NLL loss and its own DataLoaders, on scikit-learn's bundled digits (8x8,
scaled to 28x28 like MNIST) so it runs in seconds.
This is ``mnist_plain.py`` adopted for modelkit: the lines marked ``# modelkit``
(tests/test_own_loop.py checks that there are at most 10).
"""

import argparse

import modelkit  # modelkit
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from sklearn.datasets import load_digits
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2304, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def train(args, model, device, train_loader, optimizer, epoch, run):  # modelkit
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        run.log((epoch - 1) * len(train_loader) + batch_idx, loss=loss.item())  # modelkit
        if batch_idx % args.log_interval == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}]\tLoss: {loss.item():.6f}")


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    print(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(test_loader.dataset)}")
    return correct / len(test_loader.dataset)  # modelkit


def digits(train):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear"), (4, 4, 4, 4))  # 28x28, as MNIST
    y = torch.tensor(d.target)
    return TensorDataset(x[:1500], y[:1500]) if train else TensorDataset(x[1500:], y[1500:])


def main():
    parser = argparse.ArgumentParser(description="PyTorch MNIST-style example on digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    args = parser.parse_args()
    modelkit.seed_everything(args.seed)  # modelkit
    device = torch.device("cpu")

    train_loader = DataLoader(digits(True), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(digits(False), batch_size=args.test_batch_size)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    run = modelkit.start_run("runs/mnist", config=vars(args), model=model, data=train_loader.dataset)  # modelkit
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch, run)  # modelkit
        accuracy = test(model, device, test_loader)  # modelkit
        scheduler.step()
    run.finish(model, metrics={"accuracy": accuracy})  # modelkit


if __name__ == "__main__":
    main()
