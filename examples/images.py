"""Image density estimation: Glow, RealNVP, MintNet (dequantized) and integer discrete flows on
8x8 digits or MNIST-5k, with test bits/dim and a grid of samples.

Continuous flows model uniformly dequantized, logit pre-processed pixels; the reported number is
an upper bound on the test bits/dim of the discrete images (lower is better). An integer
discrete flow (``--flow idf``) models the integer pixels directly: its bits/dim are exact (a
code length), and its encoding is checked to be lossless on the whole test set.

    python examples/images.py                                 # glow on digits, 2 minutes
    python examples/images.py --data mnist5k --flow glow --budget 300
    python examples/images.py --flow idf --budget 120
    python examples/images.py --quick                         # what CI runs (glow and idf)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from pyro_flows.data import (
    DequantizedModel,
    UniformDequantization,
    load_digits_dataset,
    load_mnist5k,
    nats_to_bits_per_dim,
)
from pyro_flows.flows.image import glow, idf, mintnet, realnvp_image
from pyro_flows.infer import evaluate_nll, fit

LOADERS = {"digits": load_digits_dataset, "mnist5k": load_mnist5k}
FLOWS = ("glow", "realnvp_image", "mintnet", "idf")


def build(name: str, shape: tuple[int, int, int], num_levels: int, quick: bool) -> torch.nn.Module:
    """The model for ``name``: a dequantized continuous flow, or an integer discrete flow."""
    width = 16 if quick else 64
    steps = 2 if quick else 4
    if name == "idf":
        return idf(shape, num_transforms=steps, hidden_channels=width, num_levels=num_levels)
    if name == "glow":
        flow = glow(shape, num_transforms=steps, hidden_channels=width)
    elif name == "realnvp_image":
        flow = realnvp_image(shape, num_transforms=max(1, steps // 2), hidden_channels=width)
    else:
        flow = mintnet(shape, num_transforms=steps, hidden_per_channel=4 if quick else 8)
    D = math.prod(shape)
    return DequantizedModel(flow, UniformDequantization(num_levels, D))


def save_grid(samples: torch.Tensor, real: torch.Tensor, levels: int, title: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(6, 12, figsize=(9, 4.8))
    for i, ax in enumerate(axes.flat):
        row, col = divmod(i, 12)
        image = (samples if col < 6 else real)[row * 6 + col % 6, 0]
        ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=levels - 1)
        ax.axis("off")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(name: str, data_name: str, budget: float, quick: bool, out: Path) -> float:
    torch.manual_seed(0)
    data = LOADERS[data_name](flatten=False)
    model = build(name, data.shape, data.num_levels, quick)
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    history = fit(
        model,
        data.train,
        validation=data.val,
        epochs=1 if quick else 10_000,
        batch_size=64,
        lr=1e-3,
        patience=None if quick else 15,
        lr_schedule=None,
        max_time=budget,
        progress=not quick,
    )
    seconds = time.perf_counter() - start
    torch.manual_seed(1)  # the dequantization noise of the test bound
    test_bpd = float(nats_to_bits_per_dim(evaluate_nll(model, data.test, batch_size=250), data.dim))
    kind = "exact code length" if name == "idf" else "dequantized upper bound"
    print(
        f"{name} on {data_name}: test {test_bpd:.4f} bits/dim ({kind}), {params} parameters, "
        f"{history.epochs} epochs in {seconds:.0f} s"
    )
    if name == "idf":
        flow = model
        with torch.no_grad():
            z = data.test
            for t in reversed(flow.transforms):
                z = t.inverse_and_log_det(z)[0]
            back = z
            for t in flow.transforms:
                back = t.forward_and_log_det(back)[0]
        lossless = torch.equal(back, data.test) and torch.equal(z, z.round())
        print(f"  lossless integer round trip on all {data.test.shape[0]} test images: {lossless}")
        if not lossless:
            raise SystemExit("IDF round trip was not exact")
    model.eval()
    torch.manual_seed(2)
    samples = model.sample((36,))
    path = out / f"{data_name}_{name}.png"
    save_grid(samples, data.test[:36], data.num_levels,
              f"left: {name} samples, right: test images ({test_bpd:.3f} bits/dim)", path)
    print(f"  wrote {path}")
    return test_bpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(LOADERS), default="digits")
    parser.add_argument("--flow", choices=FLOWS, default="glow")
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/images"))
    parser.add_argument("--quick", action="store_true", help="glow and idf, 1 epoch (CI)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        for name in ("glow", "idf"):
            run(name, "digits", 20.0, True, args.out)
    else:
        run(args.flow, args.data, args.budget, False, args.out)


if __name__ == "__main__":
    main()
