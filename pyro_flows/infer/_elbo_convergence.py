r"""The two step-indexed rules of :func:`~pyro_flows.infer.fit_guide`: the learning-rate schedule
and the test that says the ELBO has stopped improving beyond its noise.

Both are pure functions of the step and the ELBO history, so a resumed run recomputes exactly
what an uninterrupted one would (no hidden state to checkpoint besides the history).

**Schedule.** Over ``steps`` optimiser steps the learning rate falls from :math:`\eta_0` (``lr``)
to :math:`\eta_1` (``lr_end``), geometrically or along a cosine,

.. math::

    \eta_t = \eta_0 \Big(\frac{\eta_1}{\eta_0}\Big)^{t/T}
    \quad\text{or}\quad
    \eta_t = \eta_1 + \tfrac12(\eta_0 - \eta_1)\big(1 + \cos(\pi t / T)\big).

Once the plateau test fires at step :math:`s`, the rest of the schedule is compressed into a
cool-down of :math:`c` steps, :math:`\eta_{s+u} = \eta_s (\eta_1/\eta_s)^{u/c}`, so that a run
that stops early still ends at the small learning rate whose iterates jitter least.

**Plateau test.** Cut the ELBO history into consecutive windows of :math:`W` steps with means
:math:`m_j` and sample variances :math:`v_j`. At the end of window :math:`j` compare it with the
window :math:`P_j = \max(P, \lfloor j/4 \rfloor)` windows earlier (a quarter of the history, at
least ``span`` :math:`P` windows): the gain and its standard error are

.. math::

    g_j = m_j - m_{j-P_j}, \qquad
    \mathrm{se}_j = \sqrt{(v_j + v_{j-P_j}) / W}

(each step's ELBO is a fresh Monte Carlo estimate, so within a window the noise is nearly
independent). Window :math:`j` is *flat* when :math:`g_j < \kappa\,\mathrm{se}_j`, and the ELBO
has converged when the last ``consecutive`` windows are all flat (and at least ``min_steps``
steps have been taken). A trend that gains :math:`\delta` nats per window gives
:math:`g_j \approx P_j\delta` against a noise of :math:`\mathrm{se}_j`, so a run improving by
more than about :math:`(\kappa + 2)\,\mathrm{se}_j / P_j` per window is essentially never
stopped; the longer the run, the slower the trends it resolves. A stationary ELBO is flat with
probability :math:`\Phi(\kappa)` per window, and a plateau reached at step :math:`s` is found
by about step :math:`\tfrac43 s + 3W`.

Example:

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> noise = torch.randn(2000, generator=g).tolist()
>>> rule = PlateauRule(window=100, span=3, sigmas=1.0, consecutive=3, min_steps=0)
>>> rule.converged(noise)  # a stationary (noisy) ELBO
True
>>> rule.converged([0.01 * t + e for t, e in enumerate(noise)])  # still rising
False

References:

- The window-means test is the batch-means idea of MCMC output analysis: C. J. Geyer,
  *Practical Markov Chain Monte Carlo.* Statistical Science 7, 1992.
- Learning-rate cool-down: I. Loshchilov, F. Hutter. *SGDR: Stochastic Gradient Descent with
  Warm Restarts.* ICLR 2017 (the cosine schedule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PlateauRule", "default_window", "learning_rate"]

SCHEDULES = ("geometric", "cosine")


def default_window(steps: int) -> int:
    """The plateau test's window: ``steps / 100`` clamped to [50, 250] steps (a mean of fewer
    than 50 noisy ELBO values is too rough to judge a trend by; the test counts the gain in
    standard errors, so a short window only resolves trends less finely, and with a Gaussian
    start the ELBO of a flow guide is flat after tens of steps: a window of ``steps / 50``
    made the earliest stop 800 of 5000 steps, most of them spent on a plateau).

    >>> default_window(100), default_window(5000), default_window(10**6)
    (50, 50, 250)
    """
    return max(50, min(250, steps // 100))


@dataclass(frozen=True)
class PlateauRule:
    """The plateau test of the module docstring: ``window`` :math:`W`, ``span`` :math:`P`,
    ``sigmas`` :math:`\\kappa`, ``consecutive`` flat windows, after ``min_steps`` steps."""

    window: int
    span: int = 3
    sigmas: float = 1.0
    consecutive: int = 3
    min_steps: int = 0

    def _flat(self, elbo: Sequence[float], end: int) -> bool | None:
        """Whether the window ending at step ``end`` is flat (``None``: too early to say)."""
        w = self.window
        span = max(self.span, end // w // 4)
        start_old = end - (span + 1) * w
        if start_old < 0:
            return None
        new = elbo[end - w : end]
        old = elbo[start_old : start_old + w]
        m_new, m_old = sum(new) / w, sum(old) / w
        v_new = sum((x - m_new) ** 2 for x in new) / (w - 1)
        v_old = sum((x - m_old) ** 2 for x in old) / (w - 1)
        se = math.sqrt((v_new + v_old) / w)
        return m_new - m_old < self.sigmas * se

    def converged(self, elbo: Sequence[float]) -> bool:
        """Whether the ELBO history ``elbo`` (one value per step) has reached a plateau at its
        last step; only ever ``True`` at the end of a window."""
        n = len(elbo)
        if n < max(self.min_steps, 1) or n % self.window:
            return False
        ends = [n - i * self.window for i in range(self.consecutive)]
        return all(self._flat(elbo, end) is True for end in ends)

    def smoothed(self, elbo: Sequence[float]) -> float:
        """The mean of the last ``window`` ELBO values (what the progress display shows)."""
        tail = elbo[-self.window :]
        return sum(tail) / len(tail) if tail else math.nan


def learning_rate(
    step: int,
    *,
    lr: float,
    lr_end: float,
    steps: int,
    schedule: str = "geometric",
    converged_at: int | None = None,
    cooldown: int = 1,
) -> float:
    """The learning rate of the step after ``step`` completed steps (see the module docstring).

    >>> round(learning_rate(0, lr=1e-2, lr_end=1e-3, steps=100), 6)
    0.01
    >>> round(learning_rate(50, lr=1e-2, lr_end=1e-3, steps=100), 6)
    0.003162
    >>> round(learning_rate(50, lr=1e-2, lr_end=1e-3, steps=100, schedule="cosine"), 6)
    0.0055
    >>> round(learning_rate(60, lr=1e-2, lr_end=1e-3, steps=100, converged_at=50, cooldown=20), 6)
    0.001778
    """
    if converged_at is not None:
        start = learning_rate(converged_at, lr=lr, lr_end=lr_end, steps=steps, schedule=schedule)
        fraction = min(1.0, max(0, step - converged_at) / max(cooldown, 1))
        return start * (lr_end / start) ** fraction
    fraction = min(1.0, step / steps)
    if schedule == "cosine":
        return lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * fraction))
    return lr * (lr_end / lr) ** fraction
