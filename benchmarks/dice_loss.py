"""The Dice loss's one-hot targets: ``F.one_hot`` against emfm's comparison with ``arange(K)``, side by side.

Checks first that both give the same loss and gradient to the bit, then times loss + backward on a batch of
two Lucchi++ slices at 518 px (2 x 389 x 518 pixels, 2 classes), alternating the two so that a busy machine
slows both alike. This is the loss of every cache-only training step, where it used to cost more than the head.

    python benchmarks/dice_loss.py [--repeats 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from emfm.evaluate.metrics import dice_loss


def dice_loss_with_one_hot(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """The earlier formulation (``F.one_hot``, channels last, permuted), for comparison."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = torch.nn.functional.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 389, 518, generator=gen, requires_grad=True)
    target = torch.randint(0, 2, (2, 389, 518), generator=gen)
    (grad_a,) = torch.autograd.grad(a := dice_loss_with_one_hot(logits, target), logits)
    (grad_b,) = torch.autograd.grad(b := dice_loss(logits, target), logits)
    print(f"same loss: {torch.equal(a, b)}, same gradient: {torch.equal(grad_a, grad_b)}")
    times = {"F.one_hot": [], "arange comparison (emfm)": []}
    for _ in range(2):
        for name, fn in zip(times, (dice_loss_with_one_hot, dice_loss)):
            start = time.perf_counter()
            for _ in range(args.repeats):
                fn(logits, target).backward()
            times[name].append((time.perf_counter() - start) / args.repeats * 1e3)
    for name, ms in times.items():
        print(f"{name:26s} {min(ms):6.2f} ms per loss + backward")
    first, second = (min(ms) for ms in times.values())
    print(f"dice loss: {first / second:.2f}x faster")


if __name__ == "__main__":
    main()
