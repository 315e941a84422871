r"""One training loop for every EBM objective of :mod:`pyro_flows.ebm`.

Each step draws a mini-batch :math:`x_{1..N}` and takes an Adam step on the energy side
(the energy's parameters :math:`\theta` and the objective's own, e.g. :math:`c = \log Z`):

.. math::

    (\theta, c) \leftarrow (\theta, c) - \eta\,\mathrm{Adam}\bigl(\nabla L_E(x_{1..N})\bigr);

min-max objectives (flow contrastive, adversarial) then take ``sampler_steps`` Adam steps on
the sampler's parameters :math:`\phi` against the updated energy,
:math:`\phi \leftarrow \phi - \eta_q\,\mathrm{Adam}(\nabla L_q)`.

References: Song & Kingma, "How to Train Your Energy-Based Models", arXiv:2101.03288, 2021;
Kingma & Ba, "Adam", ICLR 2015.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from .._validation import as_tensor
from ..infer._adam import adam
from ..infer._device_and_rng import _forked_rng
from ..infer._loop import NonFiniteLossError, interruptible, stop_non_finite
from ..infer._steps import check_int, check_number, check_training_options, gradients_are_finite
from ._objective import EBMObjective, Energy, NonFiniteSamples
from .adversarial import Adversarial
from .contrastive_divergence import ContrastiveDivergence
from .flow_contrastive import FlowContrastive
from .nce import NCE
from .score_matching import ScoreMatching, SlicedScoreMatching

__all__ = ["METHODS", "EBMHistory", "make_objective", "train_ebm"]

#: method name -> objective class
METHODS: dict[str, type[EBMObjective]] = {
    "cd": ContrastiveDivergence,
    "sm": ScoreMatching,
    "ssm": SlicedScoreMatching,
    "nce": NCE,
    "fce": FlowContrastive,
    "adversarial": Adversarial,
}


@dataclass
class EBMHistory:
    """What :func:`train_ebm` did: one entry per step (``sampler_loss`` only for min-max
    methods), the wall time, how it stopped, and the objective (holding e.g. the trained flow
    or the learned ``log_Z``)."""

    method: str
    loss: list[float] = field(default_factory=list)
    sampler_loss: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    stopped: str = "running"  # "completed", "non-finite loss" or "non-finite gradient"
    objective: EBMObjective | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("objective")
        return d


def make_objective(method: str | EBMObjective, **options: Any) -> EBMObjective:
    r"""The objective called ``method`` (one of :data:`METHODS`), built with ``options``; an
    :class:`EBMObjective` instance is returned as is (then ``options`` must be empty).

    Objectives: ``"cd"`` (:math:`\mathbb{E}_\mathrm{data}E - \mathbb{E}_{p_\theta}E`),
    ``"sm"``/``"ssm"`` (:math:`\mathbb{E}[\operatorname{tr}\nabla s + \frac12\|s\|^2]`),
    ``"nce"``, ``"fce"``, ``"adversarial"``.

    Example:

    >>> make_objective("ssm", n_projections=2).n_projections
    2

    References: Song & Kingma, arXiv:2101.03288, 2021 (a survey of these objectives).
    """
    if isinstance(method, EBMObjective):
        if options:
            raise TypeError(
                f"options {sorted(options)} are only for a method given by name, got an object"
            )
        return method
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {sorted(METHODS)} or an EBMObjective, got {method!r}"
        )
    return METHODS[method](**options)


def _snapshot(modules: list[nn.Module]) -> list[dict[str, Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _check_data(energy: object, data: object) -> Tensor:
    """``data`` as a finite tensor of rows ``(N >= 2, D)`` with the energy's ``input_dim``
    columns (on the energy's device and dtype); ``energy`` must be an ``nn.Module``."""
    if not isinstance(energy, nn.Module):
        raise TypeError(f"energy must be an nn.Module computing E(x), got {type(energy).__name__}")
    data = as_tensor(data, "data", next(iter(energy.parameters()), None))
    if data.dim() != 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (N >= 2, D), got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or inf rows")
    input_dim = getattr(energy, "input_dim", None)
    if input_dim is not None and data.shape[1] != input_dim:
        raise ValueError(
            f"data must have {input_dim} columns (the energy's input_dim), got {data.shape[1]}"
        )
    return data


def _batches(data: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless mini-batches of ``min(batch_size, N)`` rows: consecutive slices of a seeded
    permutation, a new one when the rest of the current one is too short for a batch."""
    n = data.shape[0]
    bs = min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=generator), 0
    while True:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        yield data[perm[pos : pos + bs].to(data.device)]
        pos += bs


class _EBMSteps:
    """``train_ebm``'s steps: Adam on the energy side, ``sampler_steps`` Adam steps on the
    sampler side (min-max objectives), each guarded (a NaN/inf loss, global gradient norm or
    drawn sample puts energy and objective, the objective's chains and generator included, back
    to their state from before the step, trims the history to the good steps, and raises
    :class:`~pyro_flows.infer.fit.NonFiniteLossError`)."""

    def __init__(
        self,
        energy: nn.Module,
        objective: EBMObjective,
        history: EBMHistory,
        *,
        lr: float,
        sampler_lr: float | None,
        sampler_steps: int,
        clip_grad_norm: float | None,
    ) -> None:
        energy_params = [p for p in energy.parameters() if p.requires_grad]
        energy_params += [p for p in objective.energy_side_parameters() if p.requires_grad]
        sampler_params = [p for p in objective.sampler_parameters() if p.requires_grad]
        if not energy_params:
            raise ValueError("neither the energy nor the objective has trainable parameters")
        self.opt_e = adam(energy_params, lr=lr)
        self.opt_s = (
            adam(sampler_params, lr=lr if sampler_lr is None else sampler_lr)
            if sampler_params
            else None
        )
        self.energy_params, self.sampler_params = energy_params, sampler_params
        self.all_params = energy_params + sampler_params
        self.energy, self.objective, self.history = energy, objective, history
        self.lr, self.sampler_steps, self.clip_grad_norm = lr, sampler_steps, clip_grad_norm
        self.modules: list[nn.Module] = [energy, objective]
        self.last_good = _snapshot(self.modules)
        self.last_good_extra = objective.snapshot_extra()
        self.start = time.perf_counter()

    def clear_gradients(self) -> None:
        for p in self.all_params:
            p.grad = None

    def _stop(
        self, step: int, stopped: str, what: str, advice: str | None = None
    ) -> NonFiniteLossError:
        """Back to the state from before ``step``; the error saying what happened (and
        ``advice``, by default the usual remedies of a diverging optimisation)."""
        history = self.history
        if advice is None:
            advice = (
                f" Try a smaller lr (now {self.lr}), standardised data, clip_grad_norm (now "
                f"{self.clip_grad_norm}) or an energy penalty (alpha=)."
            )

        def restore() -> None:
            for module, state in zip(self.modules, self.last_good, strict=True):
                module.load_state_dict(state)
            self.objective.restore_extra(self.last_good_extra)
            self.clear_gradients()
            del history.loss[step:], history.sampler_loss[step:]
            history.wall_time = time.perf_counter() - self.start

        return stop_non_finite(
            restore,
            history,
            stopped,
            f"{what} at step {step} of method {history.method!r}: training stopped and the "
            f"parameters from before step {step} were restored.{advice}",
        )

    def _loss(
        self, compute: Callable[[Energy, Tensor], Tensor | None], x: Tensor, step: int,
        which: str,
    ) -> Tensor:
        """``compute(energy, x)``; non-finite samples drawn on the way stop the training."""
        try:
            loss = compute(self.energy, x)
        except NonFiniteSamples as error:
            raise self._stop(
                step, "non-finite loss", f"non-finite samples in the {which} loss: {error}", ""
            ) from error
        assert loss is not None
        return loss

    def _update(
        self, loss: Tensor, params: list[Tensor], opt: torch.optim.Optimizer, step: int,
        which: str,
    ) -> None:
        """The guarded step of one side on ``loss``."""
        if not torch.isfinite(loss.detach()):
            raise self._stop(
                step, "non-finite loss", f"non-finite {which} loss ({float(loss.detach())})"
            )
        self.clear_gradients()
        loss.backward()
        if not gradients_are_finite(params, self.clip_grad_norm):
            raise self._stop(
                step,
                "non-finite gradient",
                f"non-finite {which} gradient (NaN/inf global norm) with a finite loss "
                f"({float(loss.detach())})",
            )
        opt.step()

    def __call__(self, step: int, x: Tensor) -> None:
        """Step ``step`` on the batch ``x``: the energy side, then the sampler side; the
        losses into the history and the new state as the last good one."""
        objective, history = self.objective, self.history
        loss = self._loss(objective.energy_loss, x, step, "energy")
        self._update(loss, self.energy_params, self.opt_e, step, "energy")
        history.loss.append(float(loss.detach()))
        if self.opt_s is not None:
            for _ in range(self.sampler_steps):
                s_loss = self._loss(objective.sampler_loss, x, step, "sampler")
                self._update(s_loss, self.sampler_params, self.opt_s, step, "sampler")
            history.sampler_loss.append(float(s_loss.detach()))
        self.last_good = _snapshot(self.modules)
        self.last_good_extra = objective.snapshot_extra()

    def finish(self) -> EBMHistory:
        """The completed run: no gradients left, the history's stop reason and wall time."""
        self.clear_gradients()
        self.history.stopped = "completed"
        self.history.wall_time = time.perf_counter() - self.start
        return self.history


def train_ebm(
    energy: nn.Module,
    data: Tensor,
    method: str | EBMObjective = "cd",
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    progress: bool = True,
    seed: int = 0,
    *,
    sampler_lr: float | None = None,
    sampler_steps: int = 1,
    clip_grad_norm: float | None = 10.0,
    **method_options: Any,
) -> EBMHistory:
    r"""Train ``energy`` on ``data`` with one of the EBM objectives.

    .. math::

        \min_\theta L_E(\theta) \quad\text{or}\quad
        \min_\theta L_E(\theta, \phi),\ \min_\phi L_q(\theta, \phi) \text{ alternately}.

    :param energy: an ``nn.Module`` whose ``forward(x)`` is :math:`E_\theta(x)` (e.g.
        :class:`~pyro_flows.ebm.energy.EnergyModel`), one value per row, shape ``(N,)``; an
        ``(N, 1)`` output (what ``nn.Linear(D, 1)`` gives) is squeezed, by every method alike.
    :param data: training rows ``(N, D)``, finite (a tensor or an array).
    :param method: ``"cd"``, ``"sm"``, ``"ssm"``, ``"nce"``, ``"fce"``, ``"adversarial"``, or
        an :class:`~pyro_flows.ebm._objective.EBMObjective`.
    :param steps: optimiser steps (one batch each).
    :param batch_size: rows per step (sampled with replacement across epochs by a seeded
        permutation).
    :param lr: Adam learning rate of the energy side.
    :param progress: show a progress bar (``False`` to silence).
    :param seed: seeds the batch order and every random draw of the training; draws from
        torch's global RNG (a flow's initialisation and samples, NCE's noise) happen in a fork
        of it seeded with ``seed``, so the caller's global RNG is left as it was (also when
        the call raises).
    :param sampler_lr: Adam learning rate of the sampler side (default ``lr``).
    :param sampler_steps: sampler steps per energy step (min-max methods).
    :param clip_grad_norm: clip each side's global gradient norm to this positive number
        (``None``: no clipping); a NaN/inf norm stops the training either way.
    :param method_options: keyword arguments of the method's objective (e.g. ``k=``,
        ``step_size=``, ``persistent=`` for CD; ``noise=``, ``nu=`` for NCE).
    :returns: an :class:`EBMHistory`; ``history.objective`` holds the trained objective.
    :raises TypeError: an energy that is not an ``nn.Module``, data that is neither a tensor
        nor an array, or an argument of the wrong type (e.g. ``lr="0.01"``, ``seed="x"``).
    :raises ValueError: on bad data, arguments out of range, or an energy output of the wrong
        shape; every argument (the method's options too) is checked before anything is drawn.
    :raises NonFiniteLossError: when a loss, a gradient or a drawn sample (diverging Langevin
        chains, a diverging sampler) is NaN/inf; energy and objective (CD's replay buffer and
        generator included) then hold the state from before that step, and
        ``history.stopped`` says which it was (``"non-finite loss"`` for samples).

    Example:

    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> data = 2.0 + 0.5 * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    >>> e = GaussianEnergy(1)
    >>> h = train_ebm(e, data, method="ssm", steps=200, lr=0.05, progress=False)
    >>> round(e.loc.item(), 1), round(e.scale.item(), 1), h.stopped
    (2.0, 0.5, 'completed')

    References: Song & Kingma, arXiv:2101.03288, 2021.
    """
    data = _check_data(energy, data)
    check_training_options(
        lr=lr, seed=seed, clip_grad_norm=clip_grad_norm, steps=steps, batch_size=batch_size
    )
    check_int(sampler_steps, "sampler_steps")
    check_number(sampler_lr, "sampler_lr", optional="the energy's lr")
    if isinstance(method, str) and method == "cd" and "seed" not in method_options:
        method_options["seed"] = seed
    objective = make_objective(method, **method_options)  # its options checked, nothing drawn
    ref = next(iter(energy.parameters()), None)
    data = data.to(dtype=ref.dtype, device=ref.device) if ref is not None else data
    name = method if isinstance(method, str) else objective.name
    with _forked_rng(seed, [data.device]):  # seeded draws; the caller's stream left as it was
        objective.setup(data)
        objective.to(data.device)
        run = _EBMSteps(
            energy, objective, EBMHistory(method=name, objective=objective), lr=lr,
            sampler_lr=sampler_lr, sampler_steps=sampler_steps, clip_grad_norm=clip_grad_norm,
        )
        _loop(run, data, steps=steps, batch_size=batch_size, seed=seed, progress=progress)
    return run.finish()


def _loop(
    run: _EBMSteps, data: Tensor, *, steps: int, batch_size: int, seed: int, progress: bool
) -> None:
    """``steps`` steps of ``run`` on seeded mini-batches of ``data``, with a progress bar."""
    name = run.history.method
    bar = progress_bar(range(steps), desc=f"train_ebm[{name}]", enabled=progress, leave=True)
    with interruptible(bar, save=lambda: None):  # no checkpoint to write
        for step, x in zip(bar, _batches(data, batch_size, seed), strict=False):
            run(step, x)
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{run.history.loss[-1]:.4f}")
