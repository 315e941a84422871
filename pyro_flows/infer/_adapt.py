r"""Step-size adaptation by dual averaging, one step size per chain, for warm-up only.

Nesterov's dual averaging as Hoffman & Gelman (2014, Algorithm 5) use it for NUTS drives the
average acceptance probability :math:`\alpha_t` of each chain to a target :math:`\delta` by
updating the log step size :math:`x_t = \log h_t`:

.. math::

    \bar H_t = \Bigl(1 - \frac{1}{t + t_0}\Bigr) \bar H_{t-1} + \frac{\delta - \alpha_t}{t + t_0},
    \qquad x_t = \mu - \frac{\sqrt t}{\gamma} \bar H_t,

    \bar x_t = t^{-\kappa} x_t + (1 - t^{-\kappa}) \bar x_{t-1},

with :math:`\mu = \log(10 h_0)`, :math:`\gamma = 0.05`, :math:`t_0 = 10`, :math:`\kappa = 0.75`.
The iterate :math:`x_t` explores; the averaged :math:`\exp(\bar x_t)` is the step size kept after
warm-up. Adaptation must stop when warm-up ends: a step size that keeps changing with the chain's
history breaks the Markov property and the chain would no longer leave the target invariant.

References:

- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler: Adaptively Setting Path Lengths in
  Hamiltonian Monte Carlo.* JMLR 15, 2014. https://jmlr.org/papers/v15/hoffman14a.html
- Y. Nesterov. *Primal-dual subgradient methods for convex problems.* Mathematical
  Programming 120, 2009.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DualAveraging"]


def _as_step(step_size: float | Tensor) -> Tensor:
    """A step size as a tensor: a tensor stays on its device (the chains'), a float goes on the
    CPU."""
    if isinstance(step_size, Tensor):
        return step_size.detach()
    return torch.as_tensor(step_size, device="cpu")


class DualAveraging:
    r"""Vectorised dual averaging of the log step size (one step size per chain).

    .. math::

        \log h_t = \mu - \frac{\sqrt t}{\gamma}\,\overline{(\delta - \alpha)}_t, \qquad
        h_{\text{final}} = \exp(\bar x_t)

    (see the module docstring for the full recursion). Call :meth:`update` once per warm-up
    iteration with each chain's acceptance probability; :attr:`step_size` is the step to use
    next, :attr:`final_step_size` the averaged step to freeze after warm-up. :meth:`restart`
    forgets the history (useful once the chains have left their initial transient).

    :param initial_step_size: starting step size(s), a float or a tensor of shape
        ``(num_chains,)``.
    :param target_accept: the target mean acceptance probability :math:`\delta \in (0, 1)`.
    :param gamma: :math:`\gamma`, how strongly the log step is pulled away from :math:`\mu`.
    :param t0: :math:`t_0`, damps the first iterations.
    :param kappa: :math:`\kappa \in (0.5, 1]`, the decay of the averaging weights.

    Example:

    >>> import torch
    >>> da = DualAveraging(torch.ones(3), target_accept=0.5)
    >>> for _ in range(200):  # acceptance exp(-h): the answer is h = log 2
    ...     h = da.update(torch.exp(-da.step_size))
    >>> torch.allclose(da.final_step_size, torch.full((3,), 0.6931), atol=0.05)
    True

    References:

    - M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014 (Algorithm 5).
    """

    def __init__(
        self,
        initial_step_size: float | Tensor,
        target_accept: float,
        *,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ) -> None:
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        step = _as_step(initial_step_size)
        if not step.is_floating_point():
            step = step.to(torch.get_default_dtype())
        if step.dim() > 1 or not bool((step > 0).all()) or not bool(torch.isfinite(step).all()):
            raise ValueError(
                "initial_step_size must be a positive finite float or a 1-D tensor of them, "
                f"got {initial_step_size!r}"
            )
        self.target_accept = float(target_accept)
        self.gamma, self.t0, self.kappa = float(gamma), float(t0), float(kappa)
        self.restart(step)

    def restart(self, step_size: float | Tensor | None = None) -> None:
        """Forget the history and start again from ``step_size`` (default: the current one)."""
        step = self.step_size if step_size is None else _as_step(step_size)
        self._log_step = step.log()
        self._mu = self._log_step + math.log(10.0)
        self._log_step_avg = torch.zeros_like(self._log_step)
        self._h_bar = torch.zeros_like(self._log_step)
        self.t = 0

    @property
    def step_size(self) -> Tensor:
        """The step size to use for the next iteration (the exploring iterate)."""
        return self._log_step.exp()

    @property
    def final_step_size(self) -> Tensor:
        """The averaged step size :math:`\\exp(\\bar x_t)`, to be frozen after warm-up."""
        if self.t == 0:
            return self.step_size
        return self._log_step_avg.exp()

    def update(self, accept_prob: Tensor) -> Tensor:
        """One dual-averaging step with this iteration's acceptance probabilities (NaN counts
        as 0); returns the new :attr:`step_size`."""
        a = torch.nan_to_num(accept_prob.to(self._log_step), nan=0.0).clamp(0.0, 1.0)
        self.t += 1
        t = float(self.t)
        eta = 1.0 / (t + self.t0)
        self._h_bar = (1.0 - eta) * self._h_bar + eta * (self.target_accept - a)
        self._log_step = self._mu - math.sqrt(t) / self.gamma * self._h_bar
        w = t ** (-self.kappa)
        self._log_step_avg = w * self._log_step + (1.0 - w) * self._log_step_avg
        return self.step_size
