r"""FAB's mixture of 40 Gaussians in 2-D: many equal modes scattered over a wide box, the
mode-coverage benchmark of Midgley et al. (2023).

.. math::

    p(z) = \frac{1}{K} \sum_{k=1}^{K} \mathcal{N}(z; \mu_k, s^2 I_2), \qquad
    \mu_k = 2a\,(u_k - \tfrac12), \quad u_k \sim \mathcal{U}[0, 1)^2, \qquad \log Z = 0,

with :math:`K = 40`, :math:`a = 40` (centres in :math:`[-40, 40]^2`) and :math:`s = 1`. The
:math:`u_k` are the first :math:`2K` float32 draws of ``torch.rand((K, 2))`` from
``torch.Generator().manual_seed(0)``, computed in float32 as fab-torch computes them after
``torch.manual_seed(0)`` (``experiments/gmm/run.py``), so the centres are fab-torch's, bit for
bit, and never depend on torch's global RNG. Note that fab-torch's code builds each component
with ``scale_tril = diag(softplus(1.0))``, a standard deviation of :math:`\log(1 + e) = 1.3133`;
pass ``scale=math.log1p(math.e)`` for that exact density (the default here is the identity
covariance of the paper's description).

It is a :class:`~pyro_flows.targets.mixture.GaussianMixture` with these centres and equal
weights, so the exact facts come from the mixture: mean :math:`\bar\mu = \frac1K\sum_k\mu_k`,
marginal variances :math:`s^2 + \frac1K\sum_k \mu_{kd}^2 - \bar\mu_d^2`, exact samples, and
:meth:`~pyro_flows.targets.mixture.GaussianMixture.mode_masses` (the fraction of draws nearest
each centre), to compare with ``true_mode_weights`` :math:`= 1/K`. The centres are random, not
laid out: four pairs are closer than :math:`2s` (1.18, 1.19, 1.55 and 1.56 apart; each pair
merges into one bump at :math:`s = 1`). The nearest-centre masses of exact draws still have
expected values close to :math:`1/K`, since by the mirror symmetry of two equal components about
their bisector each gives the other's cell what it takes from its own (measured within
:math:`4 \times 10^{-4}` of :math:`1/K` with :math:`2 \times 10^6` exact draws).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from .mixture import GaussianMixture

__all__ = ["GMM40", "gmm40_centres"]

#: The seed of fab-torch's GMM problem (``torch.manual_seed(0)`` before building the target).
FAB_SEED = 0


def gmm40_centres(num_modes: int = 40, half_width: float = 40.0, seed: int = FAB_SEED) -> Tensor:
    r"""The centres of FAB's mixture, shape ``(num_modes, 2)`` (float64):
    :math:`\mu_k = 2a(u_k - \frac12)` with :math:`u \sim \mathcal{U}[0, 1)^{K \times 2}` drawn in
    float32 from ``torch.Generator().manual_seed(seed)`` (torch's global RNG is untouched).

    >>> c = gmm40_centres()
    >>> c.shape, bool(c.abs().max() <= 40.0)
    (torch.Size([40, 2]), True)
    >>> _ = torch.manual_seed(0)
    >>> torch.equal(c, ((torch.rand((40, 2)) - 0.5) * 2 * 40).double())  # fab-torch's draw
    True

    References:

    - L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
      Annealed Importance Sampling Bootstrap.* ICLR 2023. https://arxiv.org/abs/2208.01893
      (code: https://github.com/lollcat/fab-torch, ``fab/target_distributions/gmm.py``).
    """
    k = check_positive_int(num_modes, "num_modes")
    seed = check_positive_int(seed, "seed", minimum=0)
    if isinstance(half_width, bool) or not isinstance(half_width, int | float):
        raise TypeError(f"half_width must be a positive float, got {type(half_width).__name__}")
    if not (math.isfinite(half_width) and half_width > 0):
        raise ValueError(f"half_width must be a positive finite float, got {half_width}")
    u = torch.rand((k, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return ((u - 0.5) * 2 * float(half_width)).to(torch.float64)


class GMM40(GaussianMixture):
    r"""FAB's 2-D mixture of :math:`K = 40` equally weighted Gaussians with centres drawn
    uniformly in :math:`[-a, a]^2`, :math:`a = 40` (seed 0), normalised, with exact samples.

    .. math::

        \log p(z) = \log \frac1K \sum_{k=1}^{K} \mathcal{N}(z; \mu_k, s^2 I_2), \qquad
        \log Z = 0.

    ``modes`` holds the centres (:func:`gmm40_centres`, shape ``(K, 2)``),
    ``true_mode_weights`` :math:`1/K` each, ``mean``/``std`` the closed-form mixture moments
    (:math:`\mathrm{sd} = (21.00, 24.95)` at the defaults), ``bounds`` the plotting box
    :math:`[-(a + 5s), a + 5s]^2`; :meth:`mode_masses` gives the fraction of a sample nearest
    each centre. MCMC starts at the first centre.

    Cost: ``log_prob`` :math:`O(K)` per point; ``sample`` :math:`O(1)` per draw.

    :param num_modes: :math:`K` (default 40).
    :param half_width: :math:`a`: the centres lie in :math:`[-a, a]^2` (default 40).
    :param scale: :math:`s`, the standard deviation of every component (default 1; fab-torch's
        code uses :math:`\log(1 + e) = 1.3133`).
    :param seed: the seed of the centres' generator (default 0, fab-torch's).

    Example:

    >>> target = GMM40()
    >>> target.modes.shape, target.log_Z, round(target.true_mode_weights[0].item(), 3)
    (torch.Size([40, 2]), 0.0, 0.025)
    >>> _ = torch.manual_seed(0)
    >>> masses = target.mode_masses(target.sample(20000))
    >>> bool((masses - 1 / 40).abs().max() < 0.01), int((masses > 0).sum())
    (True, 40)

    References:

    - L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
      Annealed Importance Sampling Bootstrap.* ICLR 2023 (the 40-mode problem, Section 4.1).
      https://arxiv.org/abs/2208.01893
    """

    name = "gmm40"
    has_exact_samples = True

    def __init__(
        self,
        num_modes: int = 40,
        half_width: float = 40.0,
        scale: float = 1.0,
        seed: int = FAB_SEED,
    ) -> None:
        centres = gmm40_centres(num_modes, half_width, seed)
        k = centres.shape[0]
        super().__init__(
            dim=2, num_modes=k, scale=scale, weights=torch.ones(k, dtype=torch.float64),
            centres=centres,
        )  # fmt: skip
        self.half_width, self.seed = float(half_width), seed
        edge = float(math.ceil(self.half_width + 5.0 * self.scale))
        self.bounds = ((-edge, edge), (-edge, edge))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, half_width={self.half_width:g}, seed={self.seed}"
