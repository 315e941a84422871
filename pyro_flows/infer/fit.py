r"""Maximum-likelihood (forward KL) training of a flow, with the care any model deserves.

Minimising the average negative log-likelihood of data :math:`x_{1..N} \sim p` is minimising
:math:`\mathrm{KL}(p \,\|\, q_\theta)` up to the (constant) entropy of :math:`p`:

.. math::

    \hat\theta = \arg\min_\theta -\frac1N \sum_{n} \log q_\theta(x_n \mid c_n)
    \approx \arg\min_\theta \mathrm{KL}(p \,\|\, q_\theta) + H(p).

:func:`fit` does this with mini-batches and Adam, a held-out validation split with early stopping
that restores the best parameters, a learning-rate schedule, gradient clipping, a progress bar,
atomic checkpoints that resume exactly (parameters, optimiser, schedule, RNG, position in the
epoch), a stop with the last good state restored on a non-finite loss, and data parallelism under
``torchrun``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import _checkpoint
from ._data import check_pair, split
from ._distributed import setup, shard

SCHEDULES = ("cosine", "plateau", None)


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN/inf loss; the model holds the last good parameters.

    :ivar history: the :class:`FitHistory` up to the failure.
    """

    def __init__(self, message: str, history: FitHistory) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class FitHistory:
    """What :func:`fit` did, one entry per completed epoch (NLL in nats per example)."""

    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)  # seconds since the start, cumulative
    best_epoch: int | None = None
    best_val_nll: float | None = None
    stopped: str = "running"  # "completed", "early stopping", "time budget"

    @property
    def epochs(self) -> int:
        return len(self.train_nll)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _NegativeLogLikelihood(nn.Module):
    """``-mean log q(x | c)`` as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        if context is None:
            return -self.model.log_prob(x).mean()
        return -self.model.log_prob(x, context).mean()


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate_nll(
    model: nn.Module, data: Tensor, context: Tensor | None = None, batch_size: int = 4096
) -> float:
    r"""Average negative log-likelihood (nats per example) of ``data`` in eval mode:
    :math:`-\frac1N \sum_{n=1}^N \log q(x_n)`, summed in float64 over batches.

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.maf(2, num_transforms=1)  # at initialisation: close to N(0, I)
    >>> round(evaluate_nll(flow, torch.zeros(10, 2)), 1)  # log(2 pi) = 1.84
    1.8

    References: the test log-likelihoods of Papamakarios et al., *Masked Autoregressive Flow for
    Density Estimation*, NeurIPS 2017 are this quantity (negated) on held-out rows.
    """
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, data.shape[0], batch_size):
            x = data[start : start + batch_size]
            if context is None:
                lp = model.log_prob(x)
            else:
                lp = model.log_prob(x, context[start : start + batch_size])
            total += float(lp.double().sum())
    finally:
        model.train(was_training)
    return -total / data.shape[0]


def fit(
    model: nn.Module,
    data: Tensor,
    *,
    context: Tensor | None = None,
    epochs: int = 100,
    batch_size: int = 512,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    validation: float | Tensor | tuple[Tensor, Tensor] | None = 0.1,
    patience: int | None = 10,
    lr_schedule: str | None = "cosine",
    clip_grad_norm: float | None = 10.0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    seed: int = 0,
    max_time: float | None = None,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> FitHistory:
    r"""Fit ``model`` to ``data`` by maximum likelihood (forward KL).

    .. math::

        \min_\phi \; -\frac1N \sum_{n=1}^N \log q_\phi(x_n)
        = \mathrm{KL}(p_{\mathrm{data}} \,\|\, q_\phi) + \text{const},

    by mini-batch AdamW steps, with early stopping on held-out rows.

    :param model: a :class:`~pyro_flows.Flow`, or any ``nn.Module`` with
        ``log_prob(x, context=None)`` (e.g. a dequantized model).
    :param data: training rows, shape ``(N, D)``; for models with image events
        (``model.event_shape == (C, H, W)``, e.g. ``flows.glow``), images ``(N, C, H, W)``.
    :param context: for conditional models, one context row per data row, ``(N, C)``.
    :param epochs: passes over the training rows.
    :param batch_size: rows per optimiser step (the global batch when distributed).
    :param lr: Adam learning rate.
    :param weight_decay: Adam (decoupled, AdamW) weight decay.
    :param validation: a fraction of ``data`` held out (fixed by ``seed``), validation rows (or a
        ``(rows, context)`` pair), or ``None`` for no validation (no early stopping).
    :param patience: stop after this many epochs without a better validation NLL (``None``:
        never); the best parameters are restored at the end either way.
    :param lr_schedule: ``"cosine"`` (per step, to zero at the last epoch), ``"plateau"``
        (halve after 3 epochs without improvement) or ``None``.
    :param clip_grad_norm: clip the gradients' global norm (``None``: no clipping).
    :param checkpoint: a file to save the full training state to, atomically, every
        ``checkpoint_every`` epochs and on ``KeyboardInterrupt``.
    :param resume: continue from ``checkpoint`` if it exists: the result is the same as an
        uninterrupted run.
    :param progress: show a progress bar (off: ``False``).
    :param device: move the model and the data there (default: where the model is).
    :param seed: seeds the validation split and the batch order.
    :param max_time: stop after this many seconds of training (a wall-time budget).
    :param callback: called as ``callback(epoch, history)`` after every epoch.
    :returns: the :class:`FitHistory`.
    :raises ValueError: on bad data (wrong shape, empty, NaN/inf rows, context mismatch) or
        arguments.
    :raises NonFiniteLossError: when a loss is NaN/inf; the model holds the last good state.

    Under ``torchrun --nproc_per_node N``, every process runs ``fit`` on the same data: the
    model is wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on GPU), each global
    batch is split between the ranks, and only rank 0 writes checkpoints and shows progress.

    Example::

        >>> from pyro_flows import flows
        >>> from pyro_flows.data import two_moons
        >>> flow = flows.maf(2, num_transforms=2, hidden_dims=(16,))
        >>> history = fit(flow, two_moons(512), epochs=3, progress=False)
        >>> history.epochs, history.stopped
        (3, 'completed')

    References: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and
    Inference", JMLR 2021 (forward KL); Prechelt, "Early Stopping - But When?", 1998.
    """
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    if device is not None:
        model.to(device)
    ref = params[0]
    where = setup(ref.device)
    input_dim = getattr(model, "input_dim", None)
    context_dim = getattr(model, "context_dim", None)
    event_shape = getattr(model, "event_shape", None)
    image_shape = tuple(event_shape) if event_shape is not None and len(event_shape) > 1 else None
    x, c = check_pair(data, context, input_dim, context_dim, ref, event_shape=image_shape)
    x = x.to(ref.device)
    c = None if c is None else c.to(ref.device)
    parts = split(x, c, validation, input_dim, context_dim, seed, image_shape)
    n_train = parts.train_x.shape[0]
    n_batches = max(1, math.ceil(n_train / batch_size))
    if n_train - (n_batches - 1) * batch_size < where.world_size and n_batches > 1:
        n_batches -= 1  # a last batch smaller than the number of ranks would leave one empty

    model.train()
    loss_module: nn.Module = _NegativeLogLikelihood(model)
    if where.enabled:
        # data-dependent initialisations (ActNorm) must see the same rows on every rank
        with torch.no_grad():
            first = parts.train_x[:batch_size]
            loss_module(first, None if parts.train_c is None else parts.train_c[:batch_size])
        loss_module = torch.nn.parallel.DistributedDataParallel(loss_module)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler: Any = None
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * n_batches)
    elif lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)

    generator = torch.Generator().manual_seed(seed)
    history = FitHistory()
    fingerprint = {
        "n_train": n_train,
        "batch_size": batch_size,
        "epochs": epochs,
        "input_dim": input_dim,
        "world_size": where.world_size,
    }
    state: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "perm": None,
        "loss_sum": 0.0,
        "count": 0,
        "best_state": None,
        "bad_epochs": 0,
        "elapsed": 0.0,
    }
    if resume and checkpoint is not None and Path(checkpoint).exists():
        saved = _checkpoint.load(checkpoint)
        if saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint {checkpoint} was written for {saved.get('fingerprint')}, but this "
                f"fit has {fingerprint}: delete it or pass resume=False"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        _checkpoint.set_rng_state(saved["rng"])
        history = FitHistory(**saved["history"])
        state = saved["loop"]
    last_good = _state_copy(model)

    def save() -> None:
        if checkpoint is None or not where.is_main:
            return
        _checkpoint.save_atomic(
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "generator": generator.get_state(),
                "rng": _checkpoint.rng_state(),
                "history": history.as_dict(),
                "loop": state,
            },
            checkpoint,
        )

    def reduce_sum(value: Tensor) -> Tensor:
        if where.enabled:
            torch.distributed.all_reduce(value)
        return value

    start = time.perf_counter() - state["elapsed"]
    bar = tqdm(
        total=epochs,
        initial=state["epoch"],
        desc="fit",
        unit="epoch",
        disable=not progress or not where.is_main,
    )
    model.train()
    try:
        for epoch in range(state["epoch"], epochs):
            if state["perm"] is None:
                state.update(
                    perm=torch.randperm(n_train, generator=generator),
                    batch=0,
                    loss_sum=0.0,
                    count=0,
                )
            perm = state["perm"].to(ref.device)
            for b in range(state["batch"], n_batches):
                idx = shard(perm[b * batch_size : (b + 1) * batch_size], where)
                batch_c = None if parts.train_c is None else parts.train_c[idx]
                loss = loss_module(parts.train_x[idx], batch_c)
                total = reduce_sum(loss.detach() * idx.numel())
                rows = idx.numel()
                if where.enabled:
                    rows = int(reduce_sum(torch.tensor(float(rows), device=ref.device)))
                if not torch.isfinite(total):
                    model.load_state_dict(last_good)
                    history.stopped = "non-finite loss"
                    good = (
                        f"the end of epoch {history.epochs - 1}"
                        if history.epochs
                        else "the start of this run"
                    )
                    raise NonFiniteLossError(
                        f"non-finite training loss ({float(total) / rows}) at epoch {epoch}, "
                        f"batch {b}: training stopped and the last good parameters (from {good}) "
                        f"were restored. Try a smaller lr (now {lr}), standardised data, or "
                        "clip_grad_norm.",
                        history,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                optimizer.step()
                if lr_schedule == "cosine":
                    scheduler.step()
                state["loss_sum"] += float(total)
                state["count"] += rows
                state["batch"] = b + 1
            train_nll = state["loss_sum"] / max(state["count"], 1)
            val_nll = (
                evaluate_nll(model, parts.val_x, parts.val_c)
                if parts.val_x is not None
                else float("nan")
            )
            history.train_nll.append(train_nll)
            history.val_nll.append(val_nll)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.wall_time.append(time.perf_counter() - start)
            if lr_schedule == "plateau":
                scheduler.step(val_nll if parts.val_x is not None else train_nll)
            score = val_nll if parts.val_x is not None else train_nll
            if history.best_val_nll is None or score < history.best_val_nll:
                history.best_val_nll, history.best_epoch = score, epoch
                state["best_state"] = _state_copy(model)
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            last_good = _state_copy(model)
            state.update(epoch=epoch + 1, perm=None, batch=0, elapsed=time.perf_counter() - start)
            bar.update(1)
            bar.set_postfix(train=f"{train_nll:.4f}", val=f"{val_nll:.4f}")
            stop = None
            if parts.val_x is not None and patience is not None and state["bad_epochs"] >= patience:
                stop = "early stopping"
            elif max_time is not None and history.wall_time[-1] >= max_time:
                stop = "time budget"
            elif epoch + 1 == epochs:
                stop = "completed"
            if stop is not None:
                history.stopped = stop
            if (epoch + 1) % checkpoint_every == 0 or stop is not None:
                save()
            if callback is not None:
                callback(epoch, history)
            if stop is not None:
                break
    except KeyboardInterrupt:
        state["elapsed"] = time.perf_counter() - start
        save()  # the exact position inside the epoch: resume=True loses nothing
        raise
    finally:
        bar.close()
    if state["best_state"] is not None and parts.val_x is not None:
        model.load_state_dict(state["best_state"])
    where.barrier()
    return history
