#!/usr/bin/env python
"""Image density estimation: Glow vs a same-size MAF on flattened images, with RealNVP's
multi-scale model, MintNet and (when installed) normflows' Glow beside them.

Run from the repository root::

    python benchmarks/images.py                          # MNIST-5k, 300 s per model
    python benchmarks/images.py --data digits --budget 60
    python benchmarks/images.py --models glow maf --budget 240
    python benchmarks/images.py --quick                  # a smoke run for CI (< 60 s)

Every model sees the same data and pre-processing: the training images, uniformly dequantized
(:math:`y = (x + u)/256`) and logit pre-processed with :math:`\\alpha = 0.05` through
``pyro_flows.data.DequantizedModel``, trained by the same loop (``pyro_flows.infer.fit``: AdamW,
lr 1e-3, batch 64, constant learning rate, the best validation state restored) for the same
wall-time budget per model. The MAF works on the flattened images (784 dimensions) with a
hidden width chosen so that its parameter count is closest to our Glow's; normflows' Glow is
sized the same way. Reported: test bits/dim (the one-sample dequantization bound, an upper
bound on the discrete bits/dim; lower is better), parameters, epochs and training throughput
(images per second), plus the sampling time of 16 images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402

from pyro_flows import flows  # noqa: E402
from pyro_flows.data import (  # noqa: E402
    DequantizedModel,
    UniformDequantization,
    load_digits_dataset,
    load_mnist5k,
    nats_to_bits_per_dim,
)
from pyro_flows.flows.image import glow, mintnet, realnvp_image  # noqa: E402
from pyro_flows.infer import evaluate_nll, fit  # noqa: E402

try:  # optional peer: pip install --no-deps normflows
    import normflows as nf
except ImportError:  # pragma: no cover - depends on the environment
    nf = None

Shape = tuple[int, int, int]


class NormflowsGlow(nn.Module):
    """normflows' ``MultiscaleFlow`` of ``GlowBlock``s (its documented Glow recipe, with an
    unconditional ``GlowBase`` per scale) behind the ``log_prob``/``sample`` interface that
    ``DequantizedModel`` uses."""

    def __init__(self, shape: Shape, num_transforms: int, hidden: int, scales: int) -> None:
        super().__init__()
        c, h, w = shape
        q0, merges, layers = [], [], []
        for i in range(scales):
            level = [
                nf.flows.GlowBlock(c * 2 ** (scales + 1 - i), hidden, split_mode="channel",
                                   scale=True)
                for _ in range(num_transforms)
            ]
            level.append(nf.flows.Squeeze())
            layers.append(level)
            if i > 0:
                merges.append(nf.flows.Merge())
                k = 2 ** (scales - i)
                latent = (c * k, h // k, w // k)
            else:
                k = 2**scales
                latent = (c * 2 * k, h // k, w // k)
            q0.append(nf.distributions.GlowBase(latent))
        self.model = nf.MultiscaleFlow(q0, layers, merges, class_cond=False)
        self.event_shape = torch.Size(shape)
        self.input_dim = math.prod(shape)
        self.context_dim = None

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.model.log_prob(x, None)

    def sample(self, sample_shape=(), context: Tensor | None = None) -> Tensor:
        n = math.prod(sample_shape) if sample_shape else 1
        return self.model.sample(n)[0].reshape(*sample_shape, *self.event_shape)


@dataclass
class Row:
    model: str
    params: int
    width: int
    epochs: int
    seconds: float
    images_per_s: float
    val_bpd: float
    test_bpd: float
    sample_s: float


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def closest(make: Callable[[int], nn.Module], widths: list[int], target: int) -> tuple[int, int]:
    """The width whose parameter count is closest to ``target``: ``(width, params)``."""
    best: tuple[int, int] | None = None
    for width in widths:
        torch.manual_seed(0)
        n = count(make(width))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["mnist5k", "digits"], default="mnist5k")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["glow", "maf", "normflows-glow", "realnvp_image", "mintnet"],
    )
    parser.add_argument("--steps", type=int, default=4, help="Glow steps per scale")
    parser.add_argument("--hidden", type=int, default=64, help="Glow conditioner width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=str, default=None)
    parser.add_argument("--quick", action="store_true", help="digits, tiny models, 3 s each")
    args = parser.parse_args()
    if args.quick:
        args.data, args.budget, args.steps, args.hidden = "digits", 3.0, 1, 8
    threads = _timing.set_threads(args.threads)
    env = _timing.environment(threads, "torch", "pyro", "normflows")
    print("  ".join(f"{k} {v}" for k, v in env.items()))

    data = (load_mnist5k if args.data == "mnist5k" else load_digits_dataset)(flatten=False)
    shape, K, D = data.shape, data.num_levels, data.dim
    scales = 2 if args.data == "mnist5k" else 3
    if args.quick:
        scales = 1

    def dequantized(flow: nn.Module) -> DequantizedModel:
        return DequantizedModel(flow, UniformDequantization(K, D))

    def make_glow(width: int) -> nn.Module:
        return glow(shape, args.steps, width, num_scales=scales, num_blocks=1)

    torch.manual_seed(0)
    target = count(make_glow(args.hidden))
    widths = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    makers: dict[str, tuple[Callable[[int], nn.Module], int, bool]] = {}
    makers["glow"] = (make_glow, args.hidden, True)

    def make_maf(width: int) -> nn.Module:
        return flows.maf(D, num_transforms=5, hidden_dims=(width, width), permutation="random")

    maf_width, _ = closest(make_maf, widths, target)
    makers["maf"] = (make_maf, maf_width, False)
    if nf is not None:

        def make_nf(width: int) -> nn.Module:
            return NormflowsGlow(shape, args.steps, width, scales)

        nf_width, _ = closest(make_nf, widths, target)
        makers["normflows-glow"] = (make_nf, nf_width, True)
    makers["realnvp_image"] = (
        lambda w: realnvp_image(shape, max(1, args.steps // 2), w, num_scales=scales),
        args.hidden // 2 if not args.quick else 8,
        True,
    )
    makers["mintnet"] = (
        lambda w: mintnet(shape, args.steps, w, num_scales=scales),
        8 if not args.quick else 2,
        True,
    )

    print(f"== {args.data}: {data.train.shape[0]} train / {data.val.shape[0]} val / "
          f"{data.test.shape[0]} test images {shape}, {K} levels, budget {args.budget:g} s ==")
    print(f"{'model':16s} {'params':>8s} {'width':>5s} {'epochs':>6s} {'secs':>5s} "
          f"{'img/s':>7s} {'val bpd':>8s} {'test bpd':>8s} {'sample16':>8s}")
    rows: list[Row] = []
    for name in args.models:
        if name not in makers:
            why = "normflows is not installed" if "normflows" in name else "unknown model"
            print(f"{name:16s} skipped ({why})")
            continue
        make, width, image = makers[name]
        torch.manual_seed(0)
        model = dequantized(make(width))
        train, val, test = (data.train, data.val, data.test)
        if not image:
            train, val, test = (data.flat(t) for t in (train, val, test))
        start = time.perf_counter()
        history = fit(model, train, validation=val, epochs=100_000, batch_size=64, lr=1e-3,
                      lr_schedule=None, patience=None, max_time=args.budget, progress=False)
        seconds = time.perf_counter() - start
        torch.manual_seed(1)  # the same dequantization noise for every model's test bound
        test_bpd = float(nats_to_bits_per_dim(evaluate_nll(model, test, batch_size=100), D))
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.sample((16,))
        row = Row(
            name, count(model), width, history.epochs, round(seconds, 1),
            round(history.epochs * train.shape[0] / seconds, 1),
            round(float(nats_to_bits_per_dim(history.best_val_nll, D)), 4), round(test_bpd, 4),
            round(time.perf_counter() - t0, 3),
        )
        rows.append(row)
        print(f"{row.model:16s} {row.params:8d} {row.width:5d} {row.epochs:6d} {row.seconds:5.0f} "
              f"{row.images_per_s:7.1f} {row.val_bpd:8.4f} {row.test_bpd:8.4f} {row.sample_s:8.2f}",
              flush=True)
    by = {r.model: r for r in rows}
    if "glow" in by and "maf" in by:
        g, m = by["glow"], by["maf"]
        verdict = "beats" if g.test_bpd < m.test_bpd else "does not beat"
        print(f"glow ({g.params} params) {verdict} the flattened maf ({m.params} params) at "
              f"{args.budget:g} s: {g.test_bpd:.4f} vs {m.test_bpd:.4f} bits/dim")
    if args.json:
        with open(args.json, "w") as f:
            out = {"environment": env, "settings": vars(args), "rows": [asdict(r) for r in rows]}
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
