r"""Maximum-likelihood (forward KL) training of a flow, with the care any model deserves.

Minimising the average negative log-likelihood of data :math:`x_{1..N} \sim p` is minimising
:math:`\mathrm{KL}(p \,\|\, q_\theta)` up to the (constant) entropy of :math:`p`:

.. math::

    \hat\theta = \arg\min_\theta -\frac1N \sum_{n} \log q_\theta(x_n \mid c_n)
    \approx \arg\min_\theta \mathrm{KL}(p \,\|\, q_\theta) + H(p).

:func:`fit` does this with mini-batches and Adam, a held-out validation split with early stopping
that restores the best parameters, a learning-rate schedule, gradient clipping, a progress bar,
atomic checkpoints that resume exactly (parameters, optimiser, schedule, RNG, position in the
epoch; refused before anything changes when they belong to another set-up or other data), a
stop with the last good state restored on a non-finite loss, gradient or validation NLL, and data
parallelism under ``torchrun``. The batch loss and its backward pass can run compiled
(``torch.compile``, CUDA graphs on CUDA), chosen when the run is long enough to pay for the
compilation (``pyro_flows.infer._compiled_step``).

:func:`fit` checks its options and sets up the rows, the model and the optimiser; the epoch loop
is ``pyro_flows.infer._fit_epochs``, the checkpoints ``pyro_flows.infer._fit_checkpoint``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# ``X as X``: names this module has always offered that the epoch loop (``_fit_epochs``) uses now
from .._progress import progress_bar as progress_bar
from .._validation import as_tensor
from ..threads import accepts_threads
from ..transforms.normalization import BatchNorm
from . import _fit_checkpoint
from ._adam import adam
from ._compiled_step import BatchLoss, check_compile
from ._data import Split, check_pair, split
from ._distributed import setup
from ._distributed import shard as shard
from ._fit_epochs import EpochTraining
from ._loop import NonFiniteLossError as NonFiniteLossError
from ._loop import trainable_parameters
from ._steps import check_int, check_number, check_training_options
from ._steps import gradients_are_finite as gradients_are_finite

SCHEDULES = ("cosine", "plateau", None)


@dataclass
class FitHistory:
    """What :func:`fit` did, one entry per completed epoch (NLL in nats per example)."""

    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)  # seconds since the start, cumulative
    best_epoch: int | None = None
    best_val_nll: float | None = None
    #: "running", then "completed", "early stopping", "time budget", or (with a
    #: NonFiniteLossError) "non-finite loss", "non-finite gradient", "non-finite validation NLL"
    stopped: str = "running"
    #: whether the training steps ran compiled at the end (see ``fit``'s ``compile``)
    compiled: bool = False
    #: seconds of the first compiled step (compiling its forward and backward passes)
    compile_seconds: float | None = None

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


def _check_model(model: object) -> None:
    """``TypeError`` unless ``model`` is an ``nn.Module`` with a ``log_prob``."""
    if not isinstance(model, nn.Module) or not callable(getattr(model, "log_prob", None)):
        raise TypeError(
            "model must be an nn.Module with log_prob(x, context=None) (a pyro_flows.Flow), "
            f"got {type(model).__name__}"
        )


def _check_device(device: object) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``); a ``ValueError`` naming it
    when torch does not know it."""
    if device is None:
        return None
    try:
        found = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be a torch.device or a device name such as 'cpu' or 'cuda:0', got "
            f"{device!r} ({type(device).__name__})"
        ) from None
    if found.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (found.index is not None and found.index >= count):
            raise ValueError(
                f"device {device!r} is not available: this machine has {count} CUDA "
                f"device(s){'' if torch.cuda.is_available() else ' (CUDA is not available)'}"
            )
    return found


def _check_eval_rows(
    data: object, context: object, like: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``data`` (and ``context``) as tensors with at least one row (and as many context rows)."""
    x = as_tensor(data, "data", like)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"data must have at least one row to evaluate, got shape {tuple(x.shape)}")
    if context is None:
        return x, None
    c = as_tensor(context, "context", like)
    if c.dim() == 0 or c.shape[0] != x.shape[0]:
        raise ValueError(
            f"context must have one row per data row ({x.shape[0]}), got shape {tuple(c.shape)}"
        )
    return x, c


@torch.no_grad()
def evaluate_nll(
    model: nn.Module, data: Tensor, context: Tensor | None = None, batch_size: int = 4096
) -> float:
    r"""Average negative log-likelihood (nats per example) of ``data`` in eval mode:
    :math:`-\frac1N \sum_{n=1}^N \log q(x_n)`, summed in float64 over batches.

    ``data`` needs at least one row and ``batch_size`` must be a positive int (a
    ``ValueError``/``TypeError`` otherwise).

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.maf(2, num_transforms=1)  # at initialisation: close to N(0, I)
    >>> round(evaluate_nll(flow, torch.zeros(10, 2)), 1)  # log(2 pi) = 1.84
    1.8

    References: the test log-likelihoods of Papamakarios et al., *Masked Autoregressive Flow for
    Density Estimation*, NeurIPS 2017 are this quantity (negated) on held-out rows.
    """
    _check_model(model)
    check_int(batch_size, "batch_size")
    data, context = _check_eval_rows(data, context, next(model.parameters(), None))
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


@accepts_threads
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
    threads: int | None = None,
    compile: bool | str = "auto",
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
    :param lr: Adam learning rate (a positive finite number).
    :param weight_decay: Adam (decoupled, AdamW) weight decay (a finite number ``>= 0``).
    :param validation: a fraction of ``data`` held out (fixed by ``seed``), validation rows (or a
        ``(rows, context)`` pair), or ``None`` for no validation (no early stopping).
    :param patience: stop after this many epochs (a positive int) without a better validation
        NLL (``None``: never); the best parameters are restored at the end either way.
    :param lr_schedule: ``"cosine"`` (per step, to zero at the last epoch), ``"plateau"``
        (halve after 3 epochs without improvement) or ``None``.
    :param clip_grad_norm: clip the gradients' global norm to this positive number (``None``:
        no clipping). Either way the global norm is computed once per step, and a NaN/inf
        gradient stops the training.
    :param checkpoint: a file to save the full training state to, atomically, every
        ``checkpoint_every`` epochs (a positive int) and on ``KeyboardInterrupt``.
    :param checkpoint_every: epochs (not optimiser steps, unlike ``fit_target``, ``fit_guide``
        and ``distill``) between checkpoints, a positive int; the epoch the training stops at
        is saved too.
    :param resume: continue from ``checkpoint`` if it exists: the result is the same as an
        uninterrupted run. The checkpoint must have been written by ``fit`` for the same
        model architecture, options (epochs, batch size, lr, weight decay, schedule,
        clipping) and data (a digest of the training and validation rows); otherwise it is
        refused with a ``ValueError`` naming the difference, before anything is changed.
    :param progress: show a progress bar (off: ``False``).
    :param threads: run this call on that many CPU threads and restore torch's setting
        afterwards (:func:`~pyro_flows.threads.torch_threads`); ``None``: torch's setting.
        One thread is often faster for small models (see :mod:`pyro_flows.threads`).
    :param device: move the model and the data there (default: where the model is).
    :param seed: seeds the validation split and the batch order (an int).
    :param max_time: stop after this many seconds of training (a wall-time budget, ``>= 0``).
    :param callback: called as ``callback(epoch, history)`` after every epoch.
    :param compile: run the batch loss and its backward pass compiled by ``torch.compile``
        (on CUDA with CUDA graphs, ``mode="reduce-overhead"``): ``"auto"`` times the first
        eager steps and compiles when the rest of the run would take more than ten minutes
        eagerly (where a cold compilation pays on a CPU, see :doc:`/infer`), ``True`` from
        the first step, ``False`` never. The results agree with
        the eager ones to float rounding, every guard and checkpoint works the same, a failed
        compilation warns and goes on eagerly, and nothing is compiled under ``torchrun``.
        ``history.compiled`` says what ran.
    :returns: the :class:`FitHistory`.
    :raises TypeError: a model without ``log_prob`` or an argument of the wrong type (e.g.
        ``lr="0.01"``).
    :raises ValueError: on bad data (wrong shape, empty, NaN/inf rows, context mismatch),
        arguments out of range, or a checkpoint that cannot be resumed (unreadable, or written
        for another set-up, architecture or data).
    :raises NonFiniteLossError: when a loss, the gradient norm or the validation NLL is
        NaN/inf (also when the flow's log density overflows the dtype on rows that the last
        good parameters scored finitely: a diverged flow); the model holds the last good state
        (the end of the last complete epoch) and ``history.stopped`` says which it was.
        Without validation rows, the parameters after an epoch's last step are scored on the
        first batch's rows before they become the last good ones.
    :raises ~pyro_flows.flow.FlowOverflowError: (a ``ValueError``) rows whose log density
        overflows the dtype at the last good parameters too (data far outside the flow's
        range); the model holds the last good state.
    :raises ValueError: a batch-normalised model with ``batch_size`` 1 or one training row
        (a last batch of one row waits for the next epoch), or a CUDA ``device`` this machine
        does not have.

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
    params = _check_options(
        model, lr=lr, seed=seed, clip_grad_norm=clip_grad_norm, max_time=max_time,
        checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every,
        patience=patience, callback=callback, epochs=epochs, batch_size=batch_size,
        weight_decay=weight_decay, lr_schedule=lr_schedule, compile=compile,
    )
    parts, where, n_batches = _training_rows(
        model, data, context, device=device, validation=validation, seed=seed,
        batch_size=batch_size, ref=params[0],
    )
    loss_module, optimizer, scheduler = _optimisation(
        model, params, parts, where, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        lr_schedule=lr_schedule, steps=epochs * n_batches,
    )
    fingerprint = _fit_checkpoint.fingerprint(
        parts, checkpoint, n_train=parts.train_x.shape[0], batch_size=batch_size, epochs=epochs,
        input_dim=getattr(model, "input_dim", None), world_size=where.world_size, lr=float(lr),
        weight_decay=float(weight_decay), lr_schedule=lr_schedule,
        clip_grad_norm=None if clip_grad_norm is None else float(clip_grad_norm),
    )
    batch_loss = BatchLoss(
        model, loss_module, compile=compile, rows=min(batch_size, parts.train_x.shape[0]),
        distributed=where.enabled, device=params[0].device, max_time=max_time,
    )
    run = EpochTraining(
        model, batch_loss, params, optimizer, scheduler, lr_schedule=lr_schedule, parts=parts,
        where=where, batch_size=batch_size, n_batches=n_batches, seed=seed, history=FitHistory(),
        fingerprint=fingerprint, checkpoint=checkpoint, resume=resume, evaluate=evaluate_nll,
        lr=lr, clip_grad_norm=clip_grad_norm,
    )
    return run.run(
        epochs=epochs, progress=progress, patience=patience, max_time=max_time,
        checkpoint_every=checkpoint_every, callback=callback,
    )


# -- the set-up, before the first step ------------------------------------------------------------
def _check_options(
    model: object,
    *,
    lr: object,
    weight_decay: object,
    lr_schedule: object,
    compile: object,
    **options: Any,
) -> list[Tensor]:
    """Every option checked before anything happens (``TypeError``/``ValueError`` naming the
    argument and the value); returns the model's trainable parameters."""
    _check_model(model)
    check_training_options(lr=lr, **options)
    check_number(weight_decay, "weight_decay", positive=False)
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    check_compile(compile)
    return trainable_parameters(model, "model")  # type: ignore[arg-type]


def _training_rows(
    model: nn.Module,
    data: Tensor,
    context: Tensor | None,
    *,
    device: str | torch.device | None,
    validation: float | Tensor | tuple[Tensor, Tensor] | None,
    seed: int,
    batch_size: int,
    ref: Tensor,
) -> tuple[Split, Any, int]:
    """The rows checked, the model (once they are known to be good) and the rows moved to
    ``device``, the process group joined under ``torchrun``, the validation split; returns the
    split, the distributed set-up and the number of batches per epoch."""
    target_device = _check_device(device)
    min_rows = 2 if _has_batch_norm(model) else 1  # batch statistics need two rows
    if batch_size < min_rows:
        raise ValueError(
            "batch_size must be >= 2 for a model with batch normalisation (in training mode "
            f"it needs batch statistics), got {batch_size}"
        )
    input_dim = getattr(model, "input_dim", None)
    context_dim = getattr(model, "context_dim", None)
    event_shape = getattr(model, "event_shape", None)
    image_shape = tuple(event_shape) if event_shape is not None and len(event_shape) > 1 else None
    x, c = check_pair(data, context, input_dim, context_dim, ref, event_shape=image_shape)
    if target_device is not None:  # only once the arguments and the data are known to be good
        model.to(target_device)
    where = setup(ref.device)
    x = x.to(ref.device)
    c = None if c is None else c.to(ref.device)
    parts = split(x, c, validation, input_dim, context_dim, seed, image_shape)
    n_train = parts.train_x.shape[0]
    if n_train < min_rows * where.world_size:
        raise ValueError(
            f"a model with batch normalisation needs at least {min_rows * where.world_size} "
            f"training rows (2 per process), got {n_train}"
        )
    n_batches = max(1, math.ceil(n_train / batch_size))
    if n_train - (n_batches - 1) * batch_size < min_rows * where.world_size and n_batches > 1:
        # a last batch smaller than the number of ranks would leave one empty, and a last
        # batch of one row per rank has no batch statistics: its rows wait for the next epoch
        n_batches -= 1
    return parts, where, n_batches


def _has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch normalisation layer (ours or torch's)."""
    kinds = (BatchNorm, nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, kinds) for m in model.modules())


def _optimisation(
    model: nn.Module,
    params: list[Tensor],
    parts: Split,
    where: Any,
    *,
    batch_size: int,
    lr: float,
    weight_decay: float,
    lr_schedule: str | None,
    steps: int,
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """The loss module (``DistributedDataParallel`` when distributed, after a first pass on the
    same rows on every rank), AdamW and the schedule (``None`` without one)."""
    model.train()
    loss_module: nn.Module = _NegativeLogLikelihood(model)
    if where.enabled:
        # data-dependent initialisations (ActNorm) must see the same rows on every rank
        with torch.no_grad():
            first = parts.train_x[:batch_size]
            loss_module(first, None if parts.train_c is None else parts.train_c[:batch_size])
        loss_module = torch.nn.parallel.DistributedDataParallel(loss_module)
    optimizer = adam(params, lr=lr, weight_decay=weight_decay, decoupled=True)
    scheduler: Any = None
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    elif lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    return loss_module, optimizer, scheduler
