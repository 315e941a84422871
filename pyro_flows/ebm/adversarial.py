r"""Adversarial EBM training with a flow sampler whose entropy is exact.

Maximum likelihood needs samples from :math:`p_\theta = e^{-E_\theta}/Z_\theta`. Instead of
MCMC, a sampler :math:`q_\phi` is trained to approximate :math:`p_\theta` by reverse KL, which
for any :math:`q` gives the variational bound

.. math::

    \log Z_\theta \ge \mathbb{E}_{q_\phi}[-E_\theta(x)] + H(q_\phi)
    = \log Z_\theta - \mathrm{KL}(q_\phi\,\|\,p_\theta).

The sampler maximises the bound; the EBM takes the contrastive step with the sampler's draws as
negatives:

.. math::

    L_q(\phi) = \mathbb{E}_{q_\phi}\bigl[E_\theta(x) + \log q_\phi(x)\bigr], \qquad
    L_E(\theta) = \mathbb{E}_{p_\mathrm{data}}[E_\theta] - \mathbb{E}_{q_\phi}[E_\theta]
    + \alpha\,\mathbb{E}[E_\theta^2].

With an IAF sampler :math:`\log q_\phi` of its own reparametrised samples comes out of the
sampling pass itself (:meth:`~pyro_flows.Flow.rsample_and_log_prob`), so the entropy term
is exact and costs nothing extra, unlike GAN-style samplers whose entropy must be estimated.
At the equilibrium :math:`q_\phi = p_\theta = p_\mathrm{data}`.

References:

- Kim & Bengio, "Deep Directed Generative Models with Energy-Based Probability Estimation",
  arXiv:1606.03439, 2016.
- Dai, Almahairi, Bachman, Hovy & Courville, "Calibrating Energy-based Generative Adversarial
  Networks", ICLR 2017.
- Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved Variational Inference with
  Inverse Autoregressive Flow", NeurIPS 2016.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..infer._steps import check_number
from ._objective import EBMObjective, Energy, check_finite_samples, energy_values

__all__ = ["Adversarial", "sampler_bound"]


def sampler_bound(energy: Energy, sampler: Any, n: int) -> tuple[Tensor, Tensor]:
    r"""The sampler's loss :math:`\widehat{L}_q = \frac1n\sum_i [E(y_i) + \log q(y_i)]`
    (the negated lower bound on :math:`\log Z`) and the draws :math:`y_i \sim q`.

    .. math::

        \widehat{L}_q \approx \mathrm{KL}(q\,\|\,p) - \log Z \ge -\log Z.

    Cost: one sampling pass of the flow (which also yields :math:`\log q`), one energy pass.

    :param energy: ``E(x)``, shape ``(n,)`` (an ``(n, 1)`` output is squeezed).
    :param sampler: a :class:`~pyro_flows.Flow` (anything with ``rsample_and_log_prob``).
    :param n: draws.
    :raises FloatingPointError: (a ``NonFiniteSamples``) when the sampler's draws are NaN/inf.

    Example: a flow at initialisation is :math:`\mathcal{N}(0, I)`, so against
    :math:`E = \|x\|^2/2` the loss is close to its minimum :math:`-\log Z = -\log 2\pi`
    (:math:`E + \log q` is then nearly constant, so the Monte Carlo error is tiny):

    >>> import math
    >>> from pyro_flows import flows
    >>> q = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    >>> loss, y = sampler_bound(lambda z: 0.5 * (z**2).sum(-1), q, 100)
    >>> round(loss.item(), 2), round(-math.log(2 * math.pi), 2), y.shape
    (-1.84, -1.84, torch.Size([100, 2]))

    References: Kingma et al., NeurIPS 2016 (IAF); Dai et al., ICLR 2017.
    """
    y, log_q = sampler.rsample_and_log_prob((n,))
    _check_draws(y)
    return (energy_values(energy, y) + log_q).mean(), y


def _check_draws(y: Tensor) -> None:
    check_finite_samples(
        y, "the sampler's draws", "the sampler diverged (try a smaller sampler_lr)"
    )


class Adversarial(EBMObjective):
    r"""Adversarial EBM training as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="adversarial"``): the energy minimises
    :math:`\overline{E(x)} - \overline{E(y)} + \alpha\,\overline{E(x)^2 + E(y)^2}` with
    :math:`y \sim q_\phi` detached, and the sampler :math:`q_\phi` minimises
    :func:`sampler_bound`,

    .. math::

        \min_\phi\ \mathbb{E}_{q_\phi}[E_\theta(y) + \log q_\phi(y)].

    Cost per batch: one IAF sampling pass (log density included) and energy passes on
    :math:`2N` points for the energy step; one sampling pass and one energy pass (with its
    backward through the samples) for the sampler step.

    :param sampler: a :class:`~pyro_flows.Flow` with a fast sampling direction (``None``:
        ``flows.iaf(D, num_transforms=4, hidden_dims=(64, 64))`` built at setup).
    :param alpha: the energy-magnitude penalty :math:`\alpha \ge 0`, finite.
    :param flow_options: keyword arguments of the default ``flows.iaf``.

    Example:

    >>> from pyro_flows import flows
    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> obj = Adversarial(flows.iaf(2, num_transforms=1, hidden_dims=(8,)))
    >>> x = torch.randn(16, 2)
    >>> obj.energy_loss(GaussianEnergy(2), x).shape, obj.sampler_loss(GaussianEnergy(2), x).shape
    (torch.Size([]), torch.Size([]))

    References: Kim & Bengio 2016; Dai et al., ICLR 2017; Kingma et al., NeurIPS 2016.
    """

    name = "adversarial"

    def __init__(
        self,
        sampler: nn.Module | None = None,
        alpha: float = 0.0,
        num_transforms: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        **flow_options: Any,
    ) -> None:
        super().__init__()
        if sampler is not None and not hasattr(sampler, "rsample_and_log_prob"):
            raise TypeError(
                f"sampler must be a pyro_flows.Flow (with rsample_and_log_prob), got "
                f"{type(sampler).__name__}"
            )
        check_number(alpha, "alpha", positive=False)
        self.sampler = sampler
        self.alpha = alpha
        self._flow_options = dict(
            num_transforms=num_transforms, hidden_dims=tuple(hidden_dims), **flow_options
        )

    def setup(self, data: Tensor) -> None:
        if self.sampler is None:
            from ..flows import iaf

            self.sampler = iaf(data.shape[-1], **self._flow_options).to(data.dtype)

    def sampler_parameters(self) -> Iterator[nn.Parameter]:
        return iter(() if self.sampler is None else self.sampler.parameters())

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        if self.sampler is None:
            self.setup(x)
        assert self.sampler is not None
        with torch.no_grad():
            y = self.sampler.sample((x.shape[0],))
        _check_draws(y)
        e_pos, e_neg = energy_values(energy, x), energy_values(energy, y)
        loss = e_pos.mean() - e_neg.mean()
        if self.alpha:
            loss = loss + self.alpha * (e_pos**2 + e_neg**2).mean()
        return loss

    def sampler_loss(self, energy: Energy, x: Tensor) -> Tensor:
        if self.sampler is None:
            self.setup(x)
        loss, _ = sampler_bound(energy, self.sampler, x.shape[0])
        return loss
