r"""An ill-conditioned Gaussian: the linear-algebra stress test (a flow or a sampler that does not
learn the right scales in every direction is slow or wrong here).

.. math::

    p(z) = \mathcal{N}(z; 0, \Sigma), \qquad \Sigma = Q \Lambda Q^\top, \qquad
    \Lambda = \mathrm{diag}(\lambda_1, \dots, \lambda_D), \qquad
    \lambda_i = \kappa^{\frac{i - 1}{D - 1} - \frac12},

so the variances are log-spaced over :math:`[\kappa^{-1/2}, \kappa^{1/2}]` and
:math:`\mathrm{cond}(\Sigma) = \kappa` (default :math:`D = 100`, :math:`\kappa = 10^4`:
variances from :math:`10^{-2}` to :math:`10^2`). :math:`Q` is a random rotation drawn from a
seeded generator (Haar measure: QR of a Gaussian matrix with the signs of :math:`R`'s diagonal
fixed), or the identity with ``rotate=False``. Normalised, :math:`\log Z = 0`; marginal
:math:`\mathrm{sd}(z_d) = \sqrt{\Sigma_{dd}}`; exact samples
:math:`z = Q \Lambda^{1/2} \varepsilon`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import Target

__all__ = ["IllConditionedGaussian", "random_rotation"]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


def random_rotation(dim: int, seed: int = 0) -> Tensor:
    r"""A Haar-random orthogonal matrix (float64) from ``torch.Generator().manual_seed(seed)``.

    :math:`G = QR` with :math:`G_{ij} \sim \mathcal{N}(0, 1)`; multiplying the columns of
    :math:`Q` by :math:`\mathrm{sign}(R_{ii})` makes the distribution of :math:`Q` Haar
    (Mezzadri, 2007).

    >>> q = random_rotation(4)
    >>> torch.allclose(q @ q.T, torch.eye(4, dtype=torch.float64))
    True

    References:

    - F. Mezzadri. *How to generate random matrices from the classical compact groups.* Notices
      of the AMS 54(5), 592-604, 2007. https://arxiv.org/abs/math-ph/0609050
    """
    dim = check_positive_int(dim, "dim")
    g = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=_F64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r))


class IllConditionedGaussian(Target):
    r"""A zero-mean Gaussian in :math:`D` dimensions with covariance condition number
    :math:`\kappa`, log-spaced eigenvalues and a seeded random rotation.

    .. math::

        \log p(z) = -\tfrac12 \|\Lambda^{-1/2} Q^\top z\|^2 - \tfrac12 \sum_i \log\lambda_i
        - \tfrac{D}{2}\log 2\pi, \qquad \log Z = 0.

    ``eigenvalues`` (:math:`\lambda`, ascending), ``rotation`` (:math:`Q`, columns are the
    eigenvectors) and ``covariance`` (:math:`\Sigma`) are buffers; ``std`` is
    :math:`\sqrt{\mathrm{diag}\,\Sigma}`; exact samples.

    Cost: ``log_prob`` and ``sample`` are :math:`O(D^2)` per point (one product with :math:`Q`).

    :param dim: :math:`D` (default 100).
    :param condition_number: :math:`\kappa \ge 1` (default :math:`10^4`).
    :param rotate: rotate by a random :math:`Q` (default) or keep :math:`\Sigma` diagonal.
    :param seed: seed of the rotation (default 0).

    Example:

    >>> target = IllConditionedGaussian()
    >>> target.eigenvalues[[0, -1]], target.log_Z
    (tensor([1.0000e-02, 1.0000e+02]), 0.0)
    >>> target.log_prob(target.sample((3,))).shape
    torch.Size([3])

    References:

    - R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of Markov Chain Monte Carlo, 2011
      (the cost of HMC grows with the condition number of the covariance).
    - F. Mezzadri. *How to generate random matrices from the classical compact groups.* Notices
      of the AMS 54(5), 2007.
    """

    name = "gaussian100"
    has_exact_samples = True

    def __init__(
        self,
        dim: int = 100,
        condition_number: float = 1e4,
        rotate: bool = True,
        seed: int = 0,
    ) -> None:
        dim = check_positive_int(dim, "dim")
        if isinstance(condition_number, bool) or not isinstance(condition_number, int | float):
            raise TypeError(
                f"condition_number must be a float >= 1, got {type(condition_number).__name__}"
            )
        if not (math.isfinite(condition_number) and condition_number >= 1):
            raise ValueError(
                f"condition_number must be a finite float >= 1, got {condition_number}"
            )
        if not isinstance(rotate, bool):
            raise TypeError(f"rotate must be a bool, got {type(rotate).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        super().__init__(dim)
        self.condition_number, self.rotate, self.seed = float(condition_number), rotate, seed
        self.log_Z = 0.0
        if dim == 1:
            lam = torch.ones(1, dtype=_F64)
        else:
            t = torch.linspace(0.0, 1.0, dim, dtype=_F64)
            lam = self.condition_number ** (t - 0.5)
        q = random_rotation(dim, seed) if rotate else torch.eye(dim, dtype=_F64)
        cov = (q * lam) @ q.T
        default = torch.get_default_dtype()
        self.register_buffer("eigenvalues", lam.to(default))
        self.register_buffer("rotation", q.to(default))
        self.register_buffer("covariance", cov.to(default))
        self.mean = torch.zeros(dim)
        self.std = torch.diagonal(cov).sqrt().to(default)
        edge = math.ceil(4.0 * self.std[:2].max().item())
        self.bounds = tuple((-float(edge), float(edge)) for _ in range(min(dim, 2)))

    def _log_prob(self, z: Tensor) -> Tensor:
        y = z @ self.rotation.to(z)
        lam = self.eigenvalues.to(z)
        quad = (y**2 / lam).sum(-1)
        return -0.5 * quad - 0.5 * torch.log(lam).sum() - 0.5 * self.dim * _LOG_2PI

    def _sample(self, n: int) -> Tensor:
        eps = torch.randn(n, self.dim, dtype=_F64)
        lam = self.eigenvalues.to(_F64)
        return (eps * lam.sqrt()) @ self.rotation.to(_F64).T

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, condition_number={self.condition_number:g}, "
            f"rotate={self.rotate}, seed={self.seed}"
        )
