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
parallelism under ``torchrun``.
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

from .._progress import progress_bar
from .._validation import as_tensor
from ..threads import accepts_threads
from . import _checkpoint
from ._data import Split, check_pair, split
from ._distributed import setup, shard
from ._steps import check_int, check_number, check_training_options, gradients_are_finite

SCHEDULES = ("cosine", "plateau", None)


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN/inf loss, gradient or validation score; the model holds the last good
    parameters (``history.stopped`` says which it was).

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
    #: "running", then "completed", "early stopping", "time budget", or (with a
    #: NonFiniteLossError) "non-finite loss", "non-finite gradient", "non-finite validation NLL"
    stopped: str = "running"

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
        return torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be a torch.device or a device name such as 'cpu' or 'cuda:0', got "
            f"{device!r} ({type(device).__name__})"
        ) from None


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


_LOOP_KEYS = ("epoch", "batch", "perm", "loss_sum", "count", "best_state", "bad_epochs", "elapsed")


def _fingerprint(parts: Split, checkpoint: object, **setup: Any) -> dict[str, Any]:
    """What a checkpoint must have been written for to be resumed: the options that change
    the result and (only with a checkpoint: one pass over the bytes) a digest of the training
    and validation rows."""
    data = None
    if checkpoint is not None:
        data = _checkpoint.tensor_digest(parts.train_x, parts.train_c, parts.val_x, parts.val_c)
    return {**setup, "data": data}


def _check_fingerprint(saved: object, now: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint written for another set-up or other data, naming the difference."""
    if not isinstance(saved, dict):
        raise _checkpoint.refuse(path, "has no set-up fingerprint")
    differences = _checkpoint.describe_differences(
        {k: v for k, v in saved.items() if k != "data"},
        {k: v for k, v in now.items() if k != "data"},
    )
    if saved.get("data") != now["data"]:
        differences.append(
            "the training/validation rows differ from those it was trained on (same shapes "
            "perhaps, other values, another validation split or seed)"
        )
    if differences:
        raise _checkpoint.refuse(
            path, "was written for a different set-up (" + "; ".join(differences) + ")"
        )


def _check_loop(loop: object, path: str | Path, n_train: int, n_batches: int, epochs: int,
                model_state: dict[str, Tensor]) -> None:
    """The saved position in the training (epoch, batch, permutation, best state) fits."""
    if not isinstance(loop, dict) or not set(_LOOP_KEYS) <= set(loop):
        raise _checkpoint.refuse(path, f"has no training position (entries {list(_LOOP_KEYS)})")
    epoch, batch = loop["epoch"], loop["batch"]
    if not (isinstance(epoch, int) and isinstance(batch, int)) or not (
        0 <= epoch <= epochs and 0 <= batch <= n_batches
    ):
        raise _checkpoint.refuse(
            path, f"is at epoch {epoch!r}, batch {batch!r}: outside this training"
        )
    perm = loop["perm"]
    if perm is not None and (not isinstance(perm, Tensor) or perm.shape != (n_train,)):
        raise _checkpoint.refuse(path, "has a batch order for another number of rows")
    if loop["best_state"] is not None:
        _checkpoint.check_module_state(model_state, loop["best_state"], path, "best state")


def _resume(
    path: str | Path,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    n_batches: int,
) -> tuple[FitHistory, dict[str, Any]]:
    """Check the whole checkpoint at ``path`` against this training, then load it all or
    nothing; returns the history and the loop state. A refusal changes nothing."""
    saved = _checkpoint.load(path)
    _checkpoint.check_entries(
        saved,
        ("fingerprint", "model", "optimizer", "scheduler", "generator", "rng", "history", "loop"),
        path,
        "fit",
    )
    _check_fingerprint(saved["fingerprint"], fingerprint, path)
    model_state = model.state_dict()
    _checkpoint.check_module_state(model_state, saved["model"], path, type(model).__name__)
    _checkpoint.check_optimizer_state(optimizer, saved["optimizer"], path)
    _checkpoint.check_schedule_state(scheduler, saved["scheduler"], path)
    _checkpoint.check_generator_state(generator, saved["generator"], path)
    _checkpoint.check_rng_state(saved["rng"], path)
    _check_loop(
        saved["loop"], path, fingerprint["n_train"], n_batches, fingerprint["epochs"], model_state
    )
    try:
        history = FitHistory(**saved["history"])
    except (TypeError, ValueError) as err:
        raise _checkpoint.refuse(path, f"has a history this version cannot read ({err})") from err
    parts: list[_checkpoint.Restorable] = [
        (model.state_dict, model.load_state_dict, saved["model"]),
        (optimizer.state_dict, optimizer.load_state_dict, saved["optimizer"]),
        (generator.get_state, generator.set_state, saved["generator"]),
        (_checkpoint.rng_state, _checkpoint.set_rng_state, saved["rng"]),
    ]
    if scheduler is not None:
        parts.insert(2, (scheduler.state_dict, scheduler.load_state_dict, saved["scheduler"]))
    _checkpoint.load_all_or_nothing(path, parts)
    return history, saved["loop"]


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
    :returns: the :class:`FitHistory`.
    :raises TypeError: a model without ``log_prob`` or an argument of the wrong type (e.g.
        ``lr="0.01"``).
    :raises ValueError: on bad data (wrong shape, empty, NaN/inf rows, context mismatch),
        arguments out of range, or a checkpoint that cannot be resumed (unreadable, or written
        for another set-up, architecture or data).
    :raises NonFiniteLossError: when a loss, the gradient norm or the validation NLL is
        NaN/inf; the model holds the last good state (the end of the last complete epoch) and
        ``history.stopped`` says which it was.

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
    _check_model(model)
    check_training_options(
        lr=lr, seed=seed, clip_grad_norm=clip_grad_norm, max_time=max_time,
        checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every,
        patience=patience, callback=callback, epochs=epochs, batch_size=batch_size,
    )
    check_number(weight_decay, "weight_decay", positive=False)
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    target_device = _check_device(device)
    ref = params[0]
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
    fingerprint = _fingerprint(
        parts, checkpoint, n_train=n_train, batch_size=batch_size, epochs=epochs,
        input_dim=input_dim, world_size=where.world_size, lr=float(lr),
        weight_decay=float(weight_decay), lr_schedule=lr_schedule,
        clip_grad_norm=None if clip_grad_norm is None else float(clip_grad_norm),
    )
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
        history, state = _resume(
            checkpoint, fingerprint, model, optimizer, scheduler, generator, n_batches
        )
    last_good = _state_copy(model)

    def save() -> None:
        if checkpoint is None or not where.is_main:
            return
        _checkpoint.save_atomic(
            {
                "kind": "fit",
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

    def stop_on(stopped: str, what: str) -> NonFiniteLossError:
        """Back to the last good parameters; the error saying what happened."""
        model.load_state_dict(last_good)
        optimizer.zero_grad(set_to_none=True)
        history.stopped = stopped
        good = (
            f"the end of epoch {history.epochs - 1}" if history.epochs else "the start of this run"
        )
        return NonFiniteLossError(
            f"{what}: training stopped and the last good parameters (from {good}) were "
            f"restored. Try a smaller lr (now {lr}), standardised data, or clip_grad_norm "
            f"(now {clip_grad_norm}).",
            history,
        )

    start = time.perf_counter() - state["elapsed"]
    bar = progress_bar(
        total=epochs,
        initial=state["epoch"],
        desc="fit",
        unit="epoch",
        enabled=progress and where.is_main,
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
                    raise stop_on(
                        "non-finite loss",
                        f"non-finite training loss ({float(total) / rows}) at epoch {epoch}, "
                        f"batch {b}",
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not gradients_are_finite(params, clip_grad_norm):
                    raise stop_on(
                        "non-finite gradient",
                        f"non-finite gradient (NaN/inf global norm) at epoch {epoch}, batch {b}, "
                        f"with a finite loss ({float(total) / rows})",
                    )
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
            score = val_nll if parts.val_x is not None else train_nll
            if not math.isfinite(score):
                raise stop_on(
                    "non-finite validation NLL",
                    f"non-finite {'validation' if parts.val_x is not None else 'training'} NLL "
                    f"({score}) after epoch {epoch}",
                )
            history.train_nll.append(train_nll)
            history.val_nll.append(val_nll)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.wall_time.append(time.perf_counter() - start)
            if lr_schedule == "plateau":
                scheduler.step(score)
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
