"""VAE on binarized MNIST-5k with a diagonal, a planar-flow and an IAF posterior (Kingma et al.).

The three VAEs share the same encoder and decoder (same sizes, same initial weights); only the
posterior differs: a diagonal Gaussian, a context-conditioned planar flow, and IAF steps whose
MADEs read the encoder's context h(x) (pyro_flows.infer.amortized.AmortizedFlow). Each is trained
with SVI (Trace_ELBO, Adam, mini-batches, KL warm-up) and scored on the held-out test split by the
negative ELBO and the importance-weighted bound (IWAE, K samples) on log p(x), in nats.

Binarization: training images are binarized dynamically (a fresh Bernoulli(pixel / max) draw
each epoch); validation and test images once, stochastically, with a fixed seed.

    python examples/vae_iaf.py                      # MNIST-5k, K = 1000
    python examples/vae_iaf.py --quick              # 8x8 digits, seconds (what CI runs)
    python examples/vae_iaf.py --data digits --epochs 300
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyro_flows.data import load_digits_dataset, load_mnist5k
from pyro_flows.infer.amortized import AmortizedFlow
from pyro_flows.infer.iwae import iwae_log_likelihood

POSTERIORS = ("diagonal", "planar", "iaf")


@dataclass
class Config:
    latent_dim: int
    hidden: int
    context_dim: int
    epochs: int
    warmup: int
    batch_size: int
    lr: float
    planar_layers: int
    planar_hidden: tuple[int, ...]
    iaf_steps: int
    iaf_hidden: tuple[int, ...]
    num_samples: int  # K of the IWAE bound
    chunk_size: int


def config(args: argparse.Namespace) -> Config:
    if args.quick:
        return Config(
            latent_dim=8, hidden=64, context_dim=16, epochs=args.epochs or 15, warmup=3,
            batch_size=100, lr=3e-3, planar_layers=4, planar_hidden=(32,), iaf_steps=2,
            iaf_hidden=(32,), num_samples=50, chunk_size=50,
        )  # fmt: skip
    if args.data == "digits":
        return Config(
            latent_dim=8, hidden=128, context_dim=32, epochs=args.epochs or 300, warmup=30,
            batch_size=100, lr=1e-3, planar_layers=8, planar_hidden=(64,), iaf_steps=2,
            iaf_hidden=(128, 128), num_samples=1000, chunk_size=200,
        )  # fmt: skip
    return Config(
        latent_dim=32, hidden=400, context_dim=64, epochs=args.epochs or 200, warmup=10,
        batch_size=100, lr=1e-3, planar_layers=16, planar_hidden=(128,), iaf_steps=2,
        iaf_hidden=(320, 320), num_samples=1000, chunk_size=50,
    )  # fmt: skip


def binarized_data(name: str, seed: int) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """Train images as probabilities (dynamic binarization), val/test binarized once."""
    data = load_digits_dataset() if name == "digits" else load_mnist5k()
    probs = [x / (data.num_levels - 1) for x in (data.train, data.val, data.test)]
    g = torch.Generator().manual_seed(seed + 12345)
    val, test = (torch.bernoulli(p, generator=g) for p in probs[1:])
    return probs[0], val, test, data.shape[1:]


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Bernoulli decoder p(x|z) p(z), encoder (loc, scale, h)(x), and an amortized posterior."""

    def __init__(self, dim: int, cfg: Config, posterior: str, train_mean: Tensor) -> None:
        super().__init__()
        L, H, C = cfg.latent_dim, cfg.hidden, cfg.context_dim
        self.latent_dim = L
        self.encoder = mlp([dim, H, H, 2 * L + C])
        self.decoder = mlp([L, H, H, dim])
        with torch.no_grad():  # start the decoder at the mean image
            self.decoder[-1].bias.copy_(torch.logit(train_mean.clamp(1e-3, 1 - 1e-3)))
        options: dict = {}
        if posterior == "planar":
            options = {"num_transforms": cfg.planar_layers, "hidden_dims": cfg.planar_hidden}
        elif posterior == "iaf":
            options = {"num_transforms": cfg.iaf_steps, "hidden_dims": cfg.iaf_hidden}
        self.posterior = AmortizedFlow(L, C, flow=posterior, **options)
        self.beta = 1.0  # KL warm-up factor

    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", prior)
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        L = self.latent_dim
        out = self.encoder(x)
        return out[..., :L], F.softplus(out[..., L : 2 * L]) + 1e-4, out[..., 2 * L :]

    def guide(self, x: Tensor) -> None:
        pyro.module("encoder", self.encoder)
        pyro.module("posterior", self.posterior)
        loc, scale, h = self.encode(x)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=self.beta):
            pyro.sample("z", self.posterior(loc, scale, h))


@torch.no_grad()
def negative_elbo(vae: VAE, x: Tensor, num_particles: int = 10) -> float:
    """Held-out negative ELBO (nats per image), averaged over ``num_particles`` draws."""
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    return elbo.loss(vae.model, vae.guide, x) / x.shape[0]


def train(vae: VAE, train_probs: Tensor, val: Tensor, cfg: Config, progress: bool) -> dict:
    """SVI with dynamic binarization and KL warm-up; keeps the parameters of the best val ELBO."""
    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": cfg.lr, "clip_norm": 100.0}), Trace_ELBO())
    n = train_probs.shape[0]
    best = (float("inf"), copy.deepcopy(vae.state_dict()), 0)
    start = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        vae.beta = min(1.0, (epoch + 1) / cfg.warmup) if cfg.warmup else 1.0
        x = torch.bernoulli(train_probs)
        total = 0.0
        for idx in torch.randperm(n).split(cfg.batch_size):
            total += svi.step(x[idx])
        vae.beta = 1.0
        last = epoch == cfg.epochs - 1
        if last or (epoch + 1 >= cfg.warmup and epoch % 5 == 4):
            val_loss = negative_elbo(vae, val, num_particles=4)
            if val_loss < best[0]:
                best = (val_loss, copy.deepcopy(vae.state_dict()), epoch + 1)
            bar.set_postfix(train=f"{total / n:.2f}", val=f"{val_loss:.2f}")
    vae.load_state_dict(best[1])
    return {"seconds": time.perf_counter() - start, "best_epoch": best[2], "val": best[0]}


def save_grids(vaes: dict[str, VAE], test: Tensor, shape: tuple[int, int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    z = torch.randn(64, next(iter(vaes.values())).latent_dim)
    x = test[:16]
    fig, axes = plt.subplots(len(vaes), 2, figsize=(8, 4 * len(vaes)), squeeze=False)
    for row, (name, vae) in enumerate(vaes.items()):
        with torch.no_grad():
            samples = torch.sigmoid(vae.decoder(z))
            d = vae.posterior(*vae.encode(x))
            recon = torch.sigmoid(vae.decoder(d.sample()))
        grids = [
            (samples, f"{name}: samples from p(x|z) p(z) (pixel means)"),
            (
                torch.cat([x.view(2, 8, -1), recon.view(2, 8, -1)]).reshape(32, -1),
                f"{name}: test images (rows 1-2), reconstructions (3-4)",
            ),
        ]
        for col, (images, title) in enumerate(grids):
            h, w = shape  # one blank pixel after each image, so that neighbours stay apart
            tiles = F.pad(images.reshape(-1, 8, h, w), (0, 1, 0, 1))
            grid = tiles.permute(0, 2, 1, 3).reshape(-1, 8 * (w + 1))
            axes[row, col].imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
            axes[row, col].set_title(title, fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    path = out / "vae_iaf_grids.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/vae_iaf"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8x8 digits, small nets, K=50 (CI)")
    args = parser.parse_args()
    if args.quick:
        args.data = "digits"
    torch.set_num_threads(1)
    cfg = config(args)
    train_probs, val, test, shape = binarized_data(args.data, args.seed)
    dim = train_probs.shape[1]
    print(
        f"{args.data}: {train_probs.shape[0]} train / {val.shape[0]} val / {test.shape[0]} test "
        f"images of {dim} pixels, latent {cfg.latent_dim}, {cfg.epochs} epochs"
    )
    rows, vaes = [], {}
    for name in POSTERIORS:
        torch.manual_seed(args.seed)  # same encoder/decoder initialisation for all three
        vae = VAE(dim, cfg, name, train_probs.mean(0))
        info = train(vae, train_probs, val, cfg, progress=not args.quick)
        torch.manual_seed(args.seed + 1)
        iwae, elbo = iwae_log_likelihood(
            vae.model,
            vae.guide,
            test,
            num_samples=cfg.num_samples,
            chunk_size=cfg.chunk_size,
            return_elbo=True,
            progress=not args.quick,
        )
        rows.append((name, float(-elbo.mean()), float(-iwae.mean()), info))
        vaes[name] = vae
        print(
            f"  {name:8s} trained in {info['seconds']:.0f} s (best val -ELBO "
            f"{info['val']:.2f} at epoch {info['best_epoch']})"
        )
    print(f"\ntest split ({test.shape[0]} images), nats per image, lower is better")
    print(f"{'posterior':10s} {'-ELBO':>9s} {f'-log p(x) IWAE K={cfg.num_samples}':>24s}")
    for name, nelbo, nll, _ in rows:
        print(f"{name:10s} {nelbo:9.2f} {nll:24.2f}")
    gain = rows[0][2] - rows[2][2]
    verdict = "PASS" if gain >= 1.0 else "FAIL"
    print(f"IAF vs diagonal: {gain:+.2f} nats of held-out IWAE log p(x) (target >= 1): {verdict}")
    save_grids(vaes, test, shape, args.out)


if __name__ == "__main__":
    main()
