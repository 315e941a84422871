"""The hand-written loops and the problems that ``benchmarks/loops.py`` times the library's own
training loops against.

Each loop is what a user writes with plain torch / Pyro: no finiteness checks, no progress bar,
no checkpoints. :func:`fit_like` also does the extra work that ``fit()`` does by default
(validation NLL every epoch, best state kept and restored, early stopping, cosine schedule,
gradient clipping), so that the time difference is the loop's overhead, not its features;
:func:`bare_fit` is the minimal loop (shuffle, Adam, nothing else).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

LogProb = Callable[[Tensor], Tensor]
#: ``draw(batch) -> (x, log q(x))``: reparametrised samples and their log density
Draw = Callable[[int], tuple[Tensor, Tensor]]


# -- maximum likelihood ---------------------------------------------------------------------------
def split_rows(x: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train, validation)`` rows, held out exactly as ``fit(validation=fraction, seed=seed)``
    holds them out (the same seeded permutation)."""
    n_val = int(round(fraction * x.shape[0]))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[perm[n_val:]], x[perm[:n_val]]


@torch.no_grad()
def mean_nll(log_prob: LogProb, rows: Tensor, batch_size: int = 4096) -> float:
    """``-mean log q(rows)``, in batches of ``batch_size`` (as ``fit``'s validation does)."""
    total = 0.0
    for start in range(0, rows.shape[0], batch_size):
        total += float(log_prob(rows[start : start + batch_size]).double().sum())
    return -total / rows.shape[0]


def fit_like(
    model: nn.Module,
    log_prob: LogProb,
    x: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    validation: float = 0.1,
    patience: int = 10,
    clip: float = 10.0,
    callback: Callable[[int], object] | None = None,
) -> int:
    """A hand loop with ``fit()``'s default features: the same validation split, a seeded
    shuffle per epoch, Adam, a per-step cosine decay to zero, gradient clipping at ``clip``,
    the validation NLL (eval mode, no grad) after every epoch, the best state kept, early
    stopping after ``patience`` epochs without improvement, and the best state restored;
    ``callback(epoch)`` after every epoch (as ``fit``'s). Returns the epochs run."""
    train, val = split_rows(x, validation, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = max(1, math.ceil(train.shape[0] / batch_size))
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, bad, ran = math.inf, None, 0, 0
    for _ in range(epochs):
        ran += 1
        model.train()
        perm = torch.randperm(train.shape[0], generator=generator)
        for b in range(per_epoch):
            loss = -log_prob(train[perm[b * batch_size : (b + 1) * batch_size]]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            schedule.step()
        model.eval()
        score = mean_nll(log_prob, val)
        if score < best:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if callback is not None:
            callback(ran - 1)
        if bad >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return ran


def bare_fit(
    model: nn.Module,
    log_prob: LogProb,
    x: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    validation: float = 0.1,
) -> int:
    """The minimal loop: a seeded shuffle per epoch and Adam, on the same training rows (so
    the same number of steps as :func:`fit_like`), nothing else. Returns the epochs run."""
    train, _ = split_rows(x, validation, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = max(1, math.ceil(train.shape[0] / batch_size))
    opt = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(train.shape[0], generator=generator)
        for b in range(per_epoch):
            loss = -log_prob(train[perm[b * batch_size : (b + 1) * batch_size]]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs


# -- reverse KL -----------------------------------------------------------------------------------
def reverse_kl_loop(
    draw: Draw,
    log_p: LogProb,
    params: Sequence[Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    callback: Callable[[int], object] | None = None,
) -> list[float]:
    r"""``steps`` Adam steps on :math:`\frac1B\sum_b [\log q(x_b) - \log\tilde p(x_b)]` with
    ``(x, log q) = draw(B)`` (``optimizer(params, lr=lr)``: another optimiser or its options);
    ``callback(k)`` after step ``k = 1, 2, ...`` (as ``fit_target``'s). Returns
    ``time.perf_counter()`` after every step."""
    opt = optimizer(list(params), lr=lr)
    stamps = []
    for k in range(1, steps + 1):
        x, log_q = draw(batch_size)
        loss = (log_q - log_p(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stamps.append(time.perf_counter())
        if callback is not None:
            callback(k)
    return stamps


def per_step(stamps: Sequence[float], skip: int) -> float:
    """Mean seconds per step from the step timestamps, leaving out the first ``skip`` steps
    (warm-up: the allocator, lazy set-up)."""
    skip = min(skip, len(stamps) - 2)
    return (stamps[-1] - stamps[skip]) / (len(stamps) - 1 - skip)


# -- the SVI problem ------------------------------------------------------------------------------
def logistic_regression(dim: int, rows: int, seed: int) -> tuple[Callable[..., None], Tensor,
                                                                 Tensor]:
    r"""A Bayesian logistic regression, :math:`w \sim \mathcal N(0, I_{dim})`,
    :math:`y_n \sim \mathrm{Bernoulli}(\sigma(X_n^\top w))`, with seeded data
    :math:`X \in \mathbb R^{rows \times dim}`; returns ``(model, X, y)``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, dim, generator=g)
    w_true = torch.randn(dim, generator=g)
    y = torch.bernoulli(torch.sigmoid(X @ w_true), generator=g)

    def model(X: Tensor, y: Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            # X @ w[..., None] broadcasts over vectorized particles (AutoFlow's Gaussian start
            # draws them: with plain X @ w it refuses the start and drops the tail stage)
            pyro.sample("y", dist.Bernoulli(logits=(X @ w.unsqueeze(-1)).squeeze(-1)), obs=y)

    return model, X, y
