r"""Contrastive divergence: maximum likelihood with Langevin samples from the model.

The log-likelihood gradient of :math:`p_\theta = e^{-E_\theta}/Z_\theta` is a difference of two
expectations, the second under the model itself:

.. math::

    -\nabla_\theta \mathbb{E}_{p_\mathrm{data}}[\log p_\theta(x)]
    = \mathbb{E}_{p_\mathrm{data}}[\nabla_\theta E_\theta(x)]
    - \mathbb{E}_{p_\theta}[\nabla_\theta E_\theta(x^-)].

CD-:math:`k` estimates the second term with :math:`k` steps of the unadjusted Langevin algorithm
(ULA) started at the data; persistent CD (PCD) keeps the chains in a replay buffer between
updates, re-initialising a fraction :math:`\rho` from noise (Du & Mordatch 2019):

.. math::

    x_{t+1} = x_t - \epsilon \nabla_x E_\theta(x_t) + \sqrt{2\epsilon}\,\sigma\,\xi_t,
    \qquad \xi_t \sim \mathcal{N}(0, I)

(:math:`\sigma = 1` is exact ULA, whose stationary law is :math:`p_\theta` up to
:math:`O(\epsilon)`). The surrogate loss, with an energy-magnitude penalty :math:`\alpha`, is

.. math::

    L(\theta) = \frac1N\sum_n E_\theta(x_n) - \frac1N\sum_n E_\theta(x^-_n)
    + \alpha\,\frac1N\sum_n \bigl(E_\theta(x_n)^2 + E_\theta(x_n^-)^2\bigr).

References:

- Hinton, "Training Products of Experts by Minimizing Contrastive Divergence", Neural
  Computation 14, 2002.
- Tieleman, "Training Restricted Boltzmann Machines using Approximations to the Likelihood
  Gradient", ICML 2008 (persistent CD).
- Du & Mordatch, "Implicit Generation and Modeling with Energy-Based Models", NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from ..infer._langevin_step import langevin_step
from ..infer._steps import check_int, check_number, check_seed
from ._objective import EBMObjective, Energy, NonFiniteSamples, check_finite_samples, energy_values

__all__ = ["ContrastiveDivergence", "ReplayBuffer", "cd_loss", "langevin_samples"]


def langevin_samples(
    energy: Energy,
    x0: Tensor,
    steps: int = 20,
    step_size: float = 0.01,
    noise_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Run ``steps`` vectorised ULA steps on every row of ``x0`` (all chains at once):

    .. math::

        x_{t+1} = x_t - \epsilon\nabla_x E(x_t) + \sigma\sqrt{2\epsilon}\,\xi_t.

    This is :func:`~pyro_flows.infer._langevin_step.langevin_step` (the step of
    :func:`pyro_flows.infer.ula`) with :math:`\log p = -E`, time step :math:`h = 2\epsilon`
    and noise scale :math:`\sigma`. The result is detached (CD does not differentiate through
    the sampler).

    Cost: ``steps`` energy and backward passes on the batch.

    :param energy: ``E(x)``, batch shape ``x.shape[:-1]``.
    :param x0: starting points ``(N, D)``.
    :param steps: Langevin steps :math:`k \ge 0`.
    :param step_size: :math:`\epsilon > 0`.
    :param noise_scale: :math:`\sigma \ge 0` (1: ULA; smaller values trade exactness for
        sharper short-run samples, as in Du & Mordatch 2019).
    :param generator: draws the noise.
    :raises FloatingPointError: (a ``NonFiniteSamples``) when the chains diverge to NaN/inf,
        naming the step and ``step_size`` (too large a step for the energy's curvature).

    Example: 200 steps on :math:`E = \|x\|^2/2` from far away reach :math:`\mathcal{N}(0, I)`
    (up to the :math:`O(\epsilon)` bias of ULA):

    >>> x = langevin_samples(lambda z: 0.5 * (z**2).sum(-1), torch.full((2000, 2), 5.0),
    ...                      steps=200, step_size=0.05, generator=torch.Generator().manual_seed(0))
    >>> round(float(x.mean()), 1) == 0.0, round(float(x.std()), 1)
    (True, 1.0)

    References: Roberts & Tweedie, Bernoulli 2(4), 1996; Durmus & Moulines, AAP 27(3), 2017.
    """
    if not isinstance(x0, Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    check_positive_int(steps, "steps", minimum=0)
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if not (noise_scale >= 0 and math.isfinite(noise_scale)):
        raise ValueError(f"noise_scale must be a non-negative number, got {noise_scale!r}")
    x = x0.detach().clone()
    h = 2.0 * float(step_size)  # the Langevin time step: h / 2 = step_size exactly
    with torch.enable_grad():
        for t in range(steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy_values(energy, x).sum(), x)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = langevin_step(x.detach(), -grad, h, noise, noise_scale)
            check_finite_samples(
                x, f"the Langevin chains after step {t + 1} of {steps}",
                f"the chains diverged: step_size={step_size} is likely too large for this "
                "energy (try a smaller step_size or fewer steps)",
            )
    return x


class ReplayBuffer:
    r"""Persistent Langevin chains for PCD: a fixed-size store of past negative samples.

    :meth:`draw` returns ``n`` stored chains, a fraction :math:`\rho` (``reinit``) of them
    replaced by fresh uniform noise on the box :math:`[\ell, u]` (so new modes keep being
    found); :meth:`push` writes the advanced chains back in their slots.

    :param size: number of stored chains.
    :param low: lower corner :math:`\ell`, shape ``(D,)``.
    :param high: upper corner :math:`u`, shape ``(D,)``.
    :param reinit: :math:`\rho \in [0, 1]`.

    Example:

    >>> buf = ReplayBuffer(100, torch.zeros(2), torch.ones(2), reinit=0.05)
    >>> g = torch.Generator().manual_seed(0)
    >>> x, idx = buf.draw(10, generator=g)
    >>> buf.push(x + 1.0, idx)
    >>> bool((buf.samples[idx] >= 1).all()), x.shape
    (True, torch.Size([10, 2]))

    References: Tieleman, ICML 2008; Du & Mordatch, NeurIPS 2019, Sec. 3.1.
    """

    def __init__(
        self,
        size: int,
        low: Tensor,
        high: Tensor,
        reinit: float = 0.05,
        generator: torch.Generator | None = None,
    ) -> None:
        check_positive_int(size, "size")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {reinit!r}")
        self.low, self.high = low.detach(), high.detach()
        if self.low.shape != self.high.shape or self.low.dim() != 1:
            raise ValueError(
                f"low and high must have the same shape (D,), got {tuple(low.shape)} and "
                f"{tuple(high.shape)}"
            )
        self.reinit = reinit
        self.samples = self._uniform(size, generator)

    def _uniform(self, n: int, generator: torch.Generator | None) -> Tensor:
        u = torch.rand((n, self.low.shape[0]), generator=generator, dtype=self.low.dtype)
        return self.low + (self.high - self.low) * u.to(self.low.device)

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(chains, slots)``: ``n`` stored chains (some re-initialised) and their indices."""
        check_positive_int(n, "n")
        idx = torch.randint(self.samples.shape[0], (n,), generator=generator)
        x = self.samples[idx.to(self.samples.device)].clone()
        fresh = torch.rand(n, generator=generator) < self.reinit
        if fresh.any():
            x[fresh.to(x.device)] = self._uniform(int(fresh.sum()), generator)
        return x, idx

    def push(self, x: Tensor, idx: Tensor) -> None:
        """Store the advanced chains ``x`` in the slots ``idx`` returned by :meth:`draw`."""
        self.samples[idx.to(self.samples.device)] = x.detach().to(self.samples.dtype)


def cd_loss(energy: Energy, data: Tensor, negatives: Tensor, alpha: float = 0.0) -> Tensor:
    r"""Contrastive-divergence surrogate loss (its gradient is the CD gradient):

    .. math::

        L = \overline{E_\theta(x)} - \overline{E_\theta(x^-)}
        + \alpha\,\bigl(\overline{E_\theta(x)^2} + \overline{E_\theta(x^-)^2}\bigr),

    bars denoting batch means (over the data and over the negatives, which may number
    differently); ``negatives`` are treated as constants.

    Cost: two energy passes.

    :param energy: ``E(x)``, shape ``(N,)`` (or ``(N, 1)``, squeezed).

    Example:

    >>> e = lambda z: z.sum(-1)
    >>> cd_loss(e, torch.ones(3, 2), torch.zeros(3, 2), alpha=0.5)  # 2 - 0 + 0.5 * 4
    tensor(4.)

    References: Hinton, Neural Computation 14, 2002; Du & Mordatch, NeurIPS 2019, Eq. (5)
    (the :math:`\alpha` regulariser).
    """
    e_pos = energy_values(energy, data)
    e_neg = energy_values(energy, negatives.detach())
    loss = e_pos.mean() - e_neg.mean()
    if alpha:
        loss = loss + alpha * ((e_pos**2).mean() + (e_neg**2).mean())
    return loss


class ContrastiveDivergence(EBMObjective):
    r"""CD-:math:`k` / persistent CD as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="cd"``): negatives from :func:`langevin_samples`, loss :func:`cd_loss`,

    .. math::

        \nabla_\theta L \approx \mathbb{E}_{p_\mathrm{data}}[\nabla_\theta E_\theta]
        - \mathbb{E}_{p_\theta}[\nabla_\theta E_\theta].

    Cost: ``k`` energy + backward passes (the chains) and two energy passes per batch.

    :param k: Langevin steps per update (a positive int).
    :param step_size: :math:`\epsilon > 0`.
    :param noise_scale: :math:`\sigma \ge 0` (1: exact ULA).
    :param persistent: keep chains in a :class:`ReplayBuffer` (PCD) instead of starting at the
        batch (CD-:math:`k`).
    :param buffer_size: chains in the buffer (a positive int).
    :param reinit: fraction :math:`\rho \in [0, 1]` of chains re-initialised from uniform noise
        per draw.
    :param margin: the noise box is the data's bounding box widened by this fraction
        (:math:`\ge 0`).
    :param alpha: the energy-magnitude penalty :math:`\alpha \ge 0`.
    :param seed: seeds the chains' noise.
    :raises TypeError, ValueError: on a hyperparameter of the wrong type or out of its range.

    Diverging chains (NaN/inf negatives) stop :func:`~pyro_flows.ebm.train.train_ebm` with a
    :class:`~pyro_flows.infer.fit.NonFiniteLossError` naming ``k`` and ``step_size``; a failed
    step also puts the replay buffer and the chains' generator back.

    Example:

    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> obj = ContrastiveDivergence(k=5, step_size=0.1)
    >>> obj.energy_loss(GaussianEnergy(1), torch.randn(8, 1)).shape
    torch.Size([])

    References: Hinton 2002; Tieleman 2008; Du & Mordatch 2019; Nijkamp, Hill, Zhu & Wu,
    "Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model",
    NeurIPS 2019.
    """

    name = "cd"

    def __init__(
        self,
        k: int = 20,
        step_size: float = 0.01,
        noise_scale: float = 1.0,
        persistent: bool = False,
        buffer_size: int = 10000,
        reinit: float = 0.05,
        margin: float = 0.1,
        alpha: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_cd_options(
            k=k, step_size=step_size, noise_scale=noise_scale, persistent=persistent,
            buffer_size=buffer_size, reinit=reinit, margin=margin, alpha=alpha, seed=seed,
        )
        self.k, self.step_size, self.noise_scale = k, step_size, noise_scale
        self.persistent, self.buffer_size = persistent, buffer_size
        self.reinit, self.margin, self.alpha = reinit, margin, alpha
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: ReplayBuffer | None = None

    def setup(self, data: Tensor) -> None:
        if self.persistent:
            low, high = data.min(0).values, data.max(0).values
            pad = self.margin * (high - low)
            self.buffer = ReplayBuffer(
                self.buffer_size, low - pad, high + pad, self.reinit, self.generator
            )

    def negatives(self, energy: Energy, x: Tensor) -> Tensor:
        """Model samples for the batch ``x``: chains from ``x`` (CD) or from the buffer (PCD)."""
        if self.persistent:
            if self.buffer is None:
                self.setup(x)
            assert self.buffer is not None
            x0, idx = self.buffer.draw(x.shape[0], self.generator)
        else:
            x0, idx = x, None
        try:
            neg = langevin_samples(
                energy, x0, self.k, self.step_size, self.noise_scale, self.generator
            )
        except NonFiniteSamples as error:
            raise NonFiniteSamples(
                f"{error}; here k={self.k} Langevin steps of step_size={self.step_size}"
            ) from None
        if idx is not None:
            assert self.buffer is not None
            self.buffer.push(neg, idx)
        return neg

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        return cd_loss(energy, x, self.negatives(energy, x), self.alpha)

    def snapshot_extra(self) -> object:
        """The chains' generator state, the replay buffer and a copy of its chains."""
        buffer = self.buffer
        samples = None if buffer is None else buffer.samples.clone()
        return self.generator.get_state(), buffer, samples

    def restore_extra(self, snapshot: object) -> None:
        """Back to :meth:`snapshot_extra`'s generator state, buffer and chains."""
        state, buffer, samples = snapshot  # type: ignore[misc]
        self.generator.set_state(state)
        self.buffer = buffer
        if buffer is not None:
            buffer.samples = samples.clone()


def _check_cd_options(
    *, k: object, step_size: object, noise_scale: object, persistent: object,
    buffer_size: object, reinit: object, margin: object, alpha: object, seed: object,
) -> None:
    """``TypeError``/``ValueError`` naming the first of :class:`ContrastiveDivergence`'s
    hyperparameters that is of the wrong type or out of its range."""
    check_int(k, "k")
    check_number(step_size, "step_size")
    check_number(noise_scale, "noise_scale", positive=False)
    if not isinstance(persistent, bool):
        raise TypeError(f"persistent must be True or False, got {persistent!r}")
    check_int(buffer_size, "buffer_size")
    check_number(reinit, "reinit", positive=False)
    if reinit > 1:  # type: ignore[operator]
        raise ValueError(f"reinit must be a fraction in [0, 1], got {reinit!r}")
    check_number(margin, "margin", positive=False)
    check_number(alpha, "alpha", positive=False)
    check_seed(seed)
