"""Train the dense network briefly, then prune it with plain ``torch.nn.utils.prune``.

This stands for whatever you did to get your sparse network: safs-optuna takes the result as it
is (``[sparsity] checkpoint``), masks included, and never prunes it again.

    python prune.py                 # writes pruned.pt beside this file
    python prune.py --epochs 1 --amount 0.95
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader

from data import load_data
from model import make_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--amount", type=float, default=0.99, help="share of weights removed")
    parser.add_argument("--out", default=str(Path(__file__).with_name("pruned.pt")))
    args = parser.parse_args()

    torch.manual_seed(0)
    train, _, test = load_data()
    model = make_model(num_classes=10, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        model.train()
        for x, y in DataLoader(train, batch_size=128, shuffle=True):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        print(f"dense epoch {epoch + 1}/{args.epochs}: test accuracy {accuracy(model, test):.2f}%")

    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=args.amount)
    print(f"pruned {100 * args.amount:g}% of the weights (global magnitude): test accuracy "
          f"{accuracy(model, test):.2f}%")
    torch.save(model.state_dict(), args.out)  # weight_orig and weight_mask: the masks travel along
    print(f"wrote {args.out}")


def accuracy(model: nn.Module, data) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=1000):
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(data)


if __name__ == "__main__":
    main()
