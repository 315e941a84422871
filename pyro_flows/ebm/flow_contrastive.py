r"""Flow contrastive estimation: NCE whose noise is a flow, trained jointly against the EBM.

Gao et al. (2020) replace NCE's fixed noise by a flow :math:`q_\alpha` and play a min-max game
on the classification value (equal numbers of data and flow samples). With
:math:`\log p_{\theta,c} = -E_\theta - c` and the classifier
:math:`D(x) = p_{\theta,c}(x) / (p_{\theta,c}(x) + q_\alpha(x)) = \sigma(G(x))`,
:math:`G = -E_\theta - c - \log q_\alpha`,

.. math::

    V(\theta, c, \alpha) = \mathbb{E}_{p_\mathrm{data}}\bigl[\log\sigma(G(x))\bigr]
    + \mathbb{E}_{q_\alpha}\bigl[\log\sigma(-G(y))\bigr],
    \qquad \max_{\theta, c}\ \min_\alpha\ V.

The EBM step is NCE with noise :math:`q_\alpha` (so :math:`c \to \log Z_\theta`); the flow step
makes its samples hard to tell from data. For a fixed :math:`p_{\theta,c} = p_\mathrm{data}`,
:math:`V = 2\,\mathrm{JS}(p_\mathrm{data}\,\|\,q_\alpha) - \log 4`, minimised by
:math:`q_\alpha = p_\mathrm{data}`: the flow is a density estimator in its own right.

The flow step needs :math:`\log q_\alpha` of data *and* of its own reparametrised samples:
:meth:`~pyro_flows.Flow.rsample_and_log_prob` gives the latter in one pass, the former needs the
inverse, so a flow with a fast density direction (MAF, RealNVP, NSF; the default is a MAF) suits
this objective.

References:

- Gao, Nijkamp, Kingma, Xu, Dai & Wu, "Flow Contrastive Estimation of Energy-Based Models",
  CVPR 2020.
- Gutmann & Hyvärinen, AISTATS 2010 (NCE).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._numbers import check_finite_number
from ..infer._steps import check_number
from ._objective import (
    EBMObjective,
    Energy,
    check_finite_samples,
    energy_values,
    per_row,
)

__all__ = ["FlowContrastive", "fce_value"]


def fce_value(
    energy: Energy, log_Z: Tensor, data: Tensor, flow_log_prob_data: Tensor, samples: Tensor,
    flow_log_prob_samples: Tensor,
) -> Tensor:
    r"""The flow contrastive value :math:`V` on a batch (data and flow samples):

    .. math::

        \hat V = \frac1N\sum_n \log\sigma(G(x_n)) + \frac1M\sum_m \log\sigma(-G(y_m)),
        \qquad G = -E_\theta - c - \log q_\alpha.

    Cost: one energy pass on :math:`N + M` points.

    :param energy: ``E(x)``, shape ``(N,)`` (an ``(N, 1)`` output is squeezed).
    :param log_Z: :math:`c`.
    :param data: ``(N, D)``; ``flow_log_prob_data``: :math:`\log q_\alpha(x_n)`, ``(N,)``.
    :param samples: ``(M, D)``; ``flow_log_prob_samples``: :math:`\log q_\alpha(y_m)`, ``(M,)``.
    :raises ValueError: on an energy or a log density without one value per row.

    Example: when the EBM equals the flow, :math:`D = 1/2` and :math:`V = -\log 4`:

    >>> import math
    >>> e = lambda z: 0.5 * (z**2).sum(-1)
    >>> x = torch.randn(5, 1)
    >>> lq = lambda z: -e(z) - 0.5 * math.log(2 * math.pi)
    >>> c = torch.tensor(0.5 * math.log(2 * math.pi))
    >>> round(float(fce_value(e, c, x, lq(x), x, lq(x))), 4), round(-math.log(4), 4)
    (-1.3863, -1.3863)

    References: Gao et al., CVPR 2020, Eq. (4).
    """
    lq_data = per_row(flow_log_prob_data, (data.shape[0],), "flow_log_prob_data", tuple(data.shape))
    lq_samples = per_row(
        flow_log_prob_samples, (samples.shape[0],), "flow_log_prob_samples", tuple(samples.shape)
    )
    g_data = -energy_values(energy, data) - log_Z - lq_data
    g_samples = -energy_values(energy, samples) - log_Z - lq_samples
    return F.logsigmoid(g_data).mean() + F.logsigmoid(-g_samples).mean()


class FlowContrastive(EBMObjective):
    r"""Flow contrastive estimation as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="fce"``): the EBM (and :math:`c`, the parameter :attr:`log_Z`) minimises
    :math:`-V`, the flow minimises :math:`V` (plus, optionally, :math:`\lambda` times its
    negative log-likelihood of the data):

    .. math::

        L_\mathrm{EBM} = -V(\theta, c, \alpha), \qquad
        L_\mathrm{flow} = V(\theta, c, \alpha)
        - \lambda\,\mathbb{E}_{p_\mathrm{data}}\log q_\alpha(x).

    Cost per batch: one flow pass for :math:`N` reparametrised samples with their log
    densities, one density pass of the flow on the data, and energy passes on :math:`2N`
    points, for each of the two steps.

    :param flow: the noise flow, a :class:`~pyro_flows.Flow` (``None``: ``flows.maf(D,
        num_transforms=4, hidden_dims=(64, 64))`` built at setup).
    :param mle_weight: :math:`\lambda \ge 0`, finite.
    :param log_Z_init: initial :math:`c`, a finite number.
    :param flow_options: keyword arguments of the default ``flows.maf``.

    Example:

    >>> from pyro_flows import flows
    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> obj = FlowContrastive(flows.maf(2, num_transforms=1, hidden_dims=(8,)))
    >>> x = torch.randn(16, 2)
    >>> obj.energy_loss(GaussianEnergy(2), x).shape, obj.sampler_loss(GaussianEnergy(2), x).shape
    (torch.Size([]), torch.Size([]))

    References: Gao et al., CVPR 2020.
    """

    name = "fce"

    def __init__(
        self,
        flow: nn.Module | None = None,
        mle_weight: float = 0.0,
        log_Z_init: float = 0.0,
        num_transforms: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        **flow_options: Any,
    ) -> None:
        super().__init__()
        if flow is not None and not hasattr(flow, "rsample_and_log_prob"):
            raise TypeError(
                f"flow must be a pyro_flows.Flow (with rsample_and_log_prob), got "
                f"{type(flow).__name__}"
            )
        check_number(mle_weight, "mle_weight", positive=False)
        log_Z_init = check_finite_number(log_Z_init, "log_Z_init")
        self.flow = flow
        self.mle_weight = mle_weight
        self.log_Z = nn.Parameter(torch.tensor(log_Z_init))
        self._flow_options = dict(
            num_transforms=num_transforms, hidden_dims=tuple(hidden_dims), **flow_options
        )

    def setup(self, data: Tensor) -> None:
        if self.flow is None:
            from ..flows import maf

            self.flow = maf(data.shape[-1], **self._flow_options).to(data.dtype)

    def energy_side_parameters(self) -> Iterator[nn.Parameter]:
        return iter([self.log_Z])

    def sampler_parameters(self) -> Iterator[nn.Parameter]:
        return iter(() if self.flow is None else self.flow.parameters())

    def value(self, energy: Energy, x: Tensor, grad_flow: bool) -> tuple[Tensor, Tensor]:
        """``(V, mean log q(data))`` on the batch; flow gradients only if ``grad_flow``."""
        if self.flow is None:
            self.setup(x)
        assert self.flow is not None
        with torch.set_grad_enabled(grad_flow and torch.is_grad_enabled()):
            y, lq_y = self.flow.rsample_and_log_prob((x.shape[0],))
            lq_x = self.flow.log_prob(x)
        check_finite_samples(
            y, "the flow's samples", "the noise flow diverged (try a smaller sampler_lr)"
        )
        if not grad_flow:
            y, lq_y, lq_x = y.detach(), lq_y.detach(), lq_x.detach()
        return fce_value(energy, self.log_Z, x, lq_x, y, lq_y), lq_x.mean()

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        v, _ = self.value(energy, x, grad_flow=False)
        return -v

    def sampler_loss(self, energy: Energy, x: Tensor) -> Tensor:
        v, mean_lq = self.value(energy, x, grad_flow=True)
        return v - self.mle_weight * mean_lq if self.mle_weight else v
