r"""The result of an annealed importance sampling run: :class:`AISResult`.

With log weights :math:`\log w_i` of :math:`n` particles (see :mod:`pyro_flows.infer.ais`),

.. math::

    \log\hat Z = \log\frac1n\sum_{i=1}^{n} w_i, \qquad
    \operatorname{se} = \frac{\operatorname{sd}(w)}{\sqrt n\,\bar w}, \qquad
    \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}.

References:

- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["AISResult"]


@dataclass
class AISResult:
    r"""What one run of :func:`annealed_importance_sampling` returns.

    .. math::

        \log\hat Z = \log\frac1n\sum_{i=1}^{n} w_i, \qquad
        \operatorname{se} = \frac{\operatorname{sd}(w)}{\sqrt n\,\bar w}, \qquad
        \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}.

    :ivar log_Z: :math:`\log\hat Z`, the log-mean-exp of ``log_weights``.
    :ivar log_Z_stderr: its delta-method standard error.
    :ivar log_weights: the AIS log weights, shape ``(n,)``, float64 (``-inf``: a particle whose
        first draw had zero target density).
    :ivar ess: Kish's effective sample size of the weights.
    :ivar ess_fraction: ``ess / n``.
    :ivar khat: the PSIS :math:`\hat k` of the weights (< 0.7: the variance estimate is
        trustworthy; above, :func:`annealed_importance_sampling` warns).
    :ivar samples: the particles after the last temperature, shape ``(n, dim)``: draws from the
        target *when weighted by* ``log_weights`` (resample them with
        :func:`~pyro_flows.infer.importance.systematic_resample` for equal weights).
    :ivar betas: the inverse temperatures :math:`\beta_0 = 0, \dots, \beta_T = 1`, shape
        ``(T + 1,)``.
    :ivar step_sizes: the leapfrog step size used at each temperature, shape ``(T,)``; pass it
        back as ``step_size=`` to rerun with these kernels fixed in advance.
    :ivar accept_rates: the mean Metropolis acceptance probability at each temperature, shape
        ``(T,)`` (NaN where no HMC move was made).
    :ivar wall_time: seconds, ``time.perf_counter``.
    :ivar num_log_prob_evals: points at which the target's log density was evaluated.
    :ivar num_grad_evals: points at which its gradient was evaluated.
    :ivar num_zero_weights: particles with weight 0 (``-inf`` log weight).
    :ivar seed: the seed used.
    :ivar target_log_Z: the target's known :math:`\log Z`, else ``None``.

    Example:

    >>> import math, torch
    >>> r = AISResult(log_Z=0.1, log_Z_stderr=0.02, log_weights=torch.zeros(3), ess=3.0,
    ...               ess_fraction=1.0, khat=-math.inf, samples=torch.zeros(3, 2),
    ...               betas=torch.tensor([0.0, 1.0]), step_sizes=torch.ones(1),
    ...               accept_rates=torch.ones(1), wall_time=0.0, num_log_prob_evals=3,
    ...               num_grad_evals=0, num_zero_weights=0, seed=0, target_log_Z=0.0)
    >>> r.log_Z_error, r.num_samples, r.num_temperatures
    (0.1, 3, 1)

    References: see :func:`annealed_importance_sampling`.
    """

    log_Z: float
    log_Z_stderr: float
    log_weights: Tensor
    ess: float
    ess_fraction: float
    khat: float
    samples: Tensor
    betas: Tensor
    step_sizes: Tensor
    accept_rates: Tensor
    wall_time: float
    num_log_prob_evals: int
    num_grad_evals: int
    num_zero_weights: int
    seed: int
    target_log_Z: float | None = None

    @property
    def log_Z_error(self) -> float | None:
        r""":math:`\log\hat Z - \log Z` where the target knows :math:`\log Z`, else ``None``."""
        if self.target_log_Z is None:
            return None
        return self.log_Z - self.target_log_Z

    @property
    def num_samples(self) -> int:
        """The number of particles :math:`n`."""
        return int(self.log_weights.numel())

    @property
    def num_temperatures(self) -> int:
        r"""The number of annealing steps :math:`T`."""
        return int(self.betas.numel() - 1)
