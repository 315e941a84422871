r"""``bball_drive_event_0-hmm_drive_0``: a two-state hidden Markov model of a basketball
player's movement (state 1: none, state 2: drive), with exponential emissions of 1/speed
:math:`u_t` and distance to the hoop :math:`v_t`; the states are marginalised by the forward
algorithm, as in the Stan program.

.. math::

    \theta_k \sim \mathrm{Dirichlet}(\alpha_{k,\cdot}), \quad
    \phi_1 \sim \mathcal{N}(0, 1),\ \phi_2 \sim \mathcal{N}(3, 1), \quad
    \lambda_1 \sim \mathcal{N}(0, 1),\ \lambda_2 \sim \mathcal{N}(3, 1),
    \quad 0 < \phi_1 < \phi_2,\ 0 < \lambda_1 < \lambda_2,

    e_{tk} = \log\mathrm{Exp}(u_t \mid \phi_k) + \log\mathrm{Exp}(v_t \mid \lambda_k), \qquad
    \gamma_{1k} = e_{1k}, \qquad
    \gamma_{tk} = \operatorname{logsumexp}_j\big(\gamma_{t-1,j} + \log\theta_{jk}\big) + e_{tk},

    \log p(u, v \mid \theta, \phi, \lambda) = \operatorname{logsumexp}_k \gamma_{Nk}.

(The Stan program starts the chain with weight 1 on every state, not :math:`1/K`: a constant.)
The recursion is a product of :math:`N - 1` matrices in the :math:`(\operatorname{logsumexp},
+)` semiring, :math:`\gamma_N = \gamma_1 \otimes M_2 \otimes \cdots \otimes M_N` with
:math:`(M_t)_{jk} = \log\theta_{jk} + e_{tk}`; :func:`hmm_log_likelihood` multiplies them by
pairwise tree reduction (:math:`\lceil\log_2 N\rceil` vectorised steps, the same sums in another
order). ``positive_ordered`` parameters with ``target +=`` priors are ``ImproperUniform`` sites
plus ``pyro.factor`` terms. The posterior is tagged multimodal in posteriordb; the ordering
removes label switching, and the transition probabilities sit near the simplex's corners.

Example:

>>> log_t = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
>>> e = torch.log(torch.tensor([[0.5, 0.1], [0.4, 0.3]]))
>>> ll = hmm_log_likelihood(log_t, e)
>>> brute = sum(e[0, i].exp() * log_t[i, j].exp() * e[1, j].exp()
...             for i in range(2) for j in range(2)).log()
>>> bool(torch.isclose(ll, brute))
True

References:

- L. R. Rabiner. *A tutorial on hidden Markov models and selected applications in speech
  recognition.* Proceedings of the IEEE 77(2), 1989 (the forward algorithm).
- A. Miller, L. Bornn, R. Adams, K. Goldsberry. *Factorized Point Process Intensities: A
  Spatial Analysis of Professional Basketball.* ICML 2014 (the data's origin).
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from .common import flat

__all__ = ["hmm_drive", "hmm_log_likelihood", "log_matmul_exp"]


def log_matmul_exp(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`\log(e^{A} e^{B})` computed stably: :math:`\operatorname{logsumexp}_j (A_{ij} +
    B_{jk})` for ``a`` of shape ``(..., I, J)`` and ``b`` of shape ``(..., J, K)``.

    >>> a = torch.log(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    >>> log_matmul_exp(a, a).exp().round()
    tensor([[ 7., 10.],
            [15., 22.]])
    """
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def hmm_log_likelihood(log_transition: Tensor, log_emission: Tensor) -> Tensor:
    r"""The forward algorithm of the Stan program: :math:`\operatorname{logsumexp}_k
    \gamma_{Nk}` for transition log-probabilities ``log_transition`` (shape ``(*batch, K,
    K)``, row :math:`j` = from state :math:`j`) and emission log-densities ``log_emission``
    (shape ``(*batch, N, K)``); the initial weights are 1 (Stan's ``gamma[1, k] = e[1, k]``).

    Cost: :math:`O(N K^3)` work in :math:`\lceil \log_2 N \rceil` vectorised steps.
    """
    first = log_emission[..., 0, :]
    if log_emission.shape[-2] == 1:
        return torch.logsumexp(first, dim=-1)
    mats = log_transition.unsqueeze(-3) + log_emission[..., 1:, None, :]  # (*batch, N-1, K, K)
    while mats.shape[-3] > 1:
        n = mats.shape[-3]
        even = mats[..., : n - n % 2, :, :]
        paired = log_matmul_exp(even[..., 0::2, :, :], even[..., 1::2, :, :])
        mats = torch.cat([paired, mats[..., n - n % 2 :, :, :]], dim=-3)
    last = log_matmul_exp(first.unsqueeze(-2), mats[..., 0, :, :]).squeeze(-2)
    return torch.logsumexp(last, dim=-1)


def _exponential_lpdf(x: Tensor, rate: Tensor) -> Tensor:
    """Stan's ``exponential_lpdf(x | rate)`` for every state: shape ``(*batch, N, K)``."""
    return torch.log(rate)[..., None, :] - rate[..., None, :] * x[:, None]


def hmm_drive(data: Mapping[str, Any], tensor: Callable[[Any], Tensor]) -> Callable[[], None]:
    """The model of ``bball_drive_event_0-hmm_drive_0`` for the posteriordb data (``K``,
    ``N``, ``u``, ``v``, ``alpha``)."""
    k = int(data["K"])
    if k != 2:
        raise ValueError(f"the hmm_drive program has two states (theta1, theta2), got K={k}")
    u, v, alpha = tensor(data["u"]), tensor(data["v"]), tensor(data["alpha"])
    zero = u.new_zeros(())
    prior_loc = torch.stack([zero, zero + 3.0])

    def model() -> None:
        theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
        theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
        theta = pyro.deterministic("theta", torch.stack([theta1, theta2], dim=-2), event_dim=2)
        phi = pyro.sample("phi", flat(zero, (k,), constraints.positive_ordered_vector))
        lam = pyro.sample("lambda", flat(zero, (k,), constraints.positive_ordered_vector))
        pyro.factor("phi_prior", dist.Normal(prior_loc, 1.0).log_prob(phi).sum(-1))
        pyro.factor("lambda_prior", dist.Normal(prior_loc, 1.0).log_prob(lam).sum(-1))
        log_emission = _exponential_lpdf(u, phi) + _exponential_lpdf(v, lam)
        pyro.factor("forward", hmm_log_likelihood(torch.log(theta), log_emission))

    return model
