r"""Is a fitted guide biased? Its PSIS :math:`\hat k` and its moments against the importance-
weighted ones, from the same draws.

With draws :math:`z_i \sim q` of the guide and log ratios
:math:`\log r_i = \log p(x, z_i) - \log q(z_i)`, Pareto-smoothed importance sampling
(PSIS; Vehtari et al., 2024) gives smoothed normalised weights :math:`\tilde w_i` and the tail
shape :math:`\hat k`. For every latent element :math:`j` (each entry of each latent site, in
the space the model samples it, as a user reads the guide's draws) compare the guide's own
moments with the weighted ones,

.. math::

    \text{mean shift}_j = \frac{|\bar z_j - \sum_i \tilde w_i z_{ij}|}{\tilde s_j}, \qquad
    \text{sd ratio}_j = \frac{\operatorname{sd}_q(z_j)}{\tilde s_j}, \qquad
    \tilde s_j^2 = \sum_i \tilde w_i \big(z_{ij} - \textstyle\sum_l \tilde w_l z_{lj}\big)^2 .

Where :math:`\hat k \le 0.7` the weighted moments are reliable estimates of the posterior's
(Yao et al., 2018), so a mean shift above 0.1 sd or an sd ratio outside :math:`[0.9, 1.1]`
says the guide itself is off by that much, in the direction shown. This sees what
:math:`\hat k` alone cannot: a guide that is too *wide* (over-dispersed) has bounded ratios and
a small :math:`\hat k`, yet its variances are wrong; and a guide a little too narrow can keep
:math:`\hat k` under 0.7 while its sds are 10-20 % short. Where :math:`\hat k > 0.7` the
weighted moments are themselves unreliable and :math:`\hat k` is the flag. Draws of the guide
cannot see posterior mass where it puts almost none (tails too light): for
:class:`~pyro_flows.infer.AutoFlow`, :mod:`~pyro_flows.infer.defensive_draws` weights the same
comparison over draws of a mixture with the guide widened (:func:`weighted_moment_check` with
``num_own``), and :mod:`~pyro_flows.infer.guide_flag` combines the two.

The check's own noise: with an effective sample size :math:`n_e = 1/\sum_i\tilde w_i^2`, the
weighted mean has a standard error of about :math:`\tilde s_j/\sqrt{n_e}` and the sd ratio a
relative one of about :math:`1/\sqrt{2 n_e}` (Gaussian-like marginals): at 1000 draws and
:math:`n_e \approx 700` about 0.04 sd and 3 %, at :func:`~pyro_flows.infer.fit_guide`'s 4000
draws and :math:`n_e \approx 3000` about 0.02 sd and 1.3 %, against the 0.1 sd and 10 % it
judges. Heavy tails make it larger (a hierarchical scale: 3-8 %), so the check measures it: 64
bootstrap resamples of the draws give each element's standard error, and an element is flagged
only when it is past the limit by more than that error.

Measured with :func:`~pyro_flows.infer.fit_guide`'s defaults (4000 draws), against the truth:
eight schools (non-centred), AutoNormal's :math:`\tau` sd ratio read 0.84/0.81 (true 2.69/3.20 =
0.84, seeds 0/1) and AutoFlow's 1.21/1.16 (true 3.93/3.20 = 1.23, seed 0), both flagged; on
posteriordb's kidiq momiq, mesquite and arma, where AutoFlow meets the reference, it read
within 0.02 of the reference's ratios and stayed quiet; on the HMM (reference sd ratio up to
1.102) it read 1.133 with a standard error of 0.026 and flagged it.

Example:

>>> import pyro, pyro.distributions as dist, torch
>>> def model():
...     pyro.sample("z", dist.Normal(0.0, 1.0))
>>> def too_wide():
...     pyro.sample("z", dist.Normal(0.0, 1.5))
>>> pyro.set_rng_seed(0)
>>> check = guide_importance_check(model, too_wide, num_samples=4000)
>>> check.khat < 0.7, check.biased, round(check.sd_ratio_range[1], 1)
(True, True, 1.5)

References:

- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance
  Sampling.* JMLR 25, 2024. https://arxiv.org/abs/1507.02646
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .importance_weights import guide_draws, psis_smooth

__all__ = [
    "KHAT_RELIABLE",
    "MEAN_SHIFT_LIMIT",
    "SD_RATIO_LIMITS",
    "GuideCheck",
    "guide_importance_check",
    "weighted_moment_check",
]

#: above this :math:`\hat k` the weighted moments are not trusted (and :math:`\hat k` flags)
KHAT_RELIABLE = 0.7
#: a mean shift above this many weighted sds flags the guide
MEAN_SHIFT_LIMIT = 0.1
#: an sd ratio outside this interval flags the guide
SD_RATIO_LIMITS = (0.9, 1.1)


@dataclass
class GuideCheck:
    r"""What :func:`guide_importance_check` found.

    :ivar khat: PSIS :math:`\hat k` of the log ratios.
    :ivar num_samples: guide draws.
    :ivar ess: effective sample size of the smoothed weights, :math:`1/\sum_i \tilde w_i^2`.
    :ivar mean_shift: per latent element (``"site"`` or ``"site[i]"``, flat index), the guide's
        mean minus the weighted mean, in weighted sds (signed).
    :ivar sd_ratio: per latent element, the guide's sd over the weighted sd.
    :ivar mean_shift_se: per latent element, the bootstrap standard error of ``mean_shift``.
    :ivar sd_ratio_se: per latent element, the bootstrap standard error of ``sd_ratio``.

    References: see the module docstring.
    """

    khat: float
    num_samples: int
    ess: float
    mean_shift: dict[str, float] = field(default_factory=dict)
    sd_ratio: dict[str, float] = field(default_factory=dict)
    mean_shift_se: dict[str, float] = field(default_factory=dict)
    sd_ratio_se: dict[str, float] = field(default_factory=dict)

    @property
    def worst_mean_shift(self) -> float:
        """The largest :math:`|\\text{mean shift}|` (0 with no elements)."""
        return max((abs(v) for v in self.mean_shift.values()), default=0.0)

    @property
    def sd_ratio_range(self) -> tuple[float, float]:
        """``(min, max)`` of the sd ratios (``(1, 1)`` with no elements)."""
        values = list(self.sd_ratio.values()) or [1.0]
        return min(values), max(values)

    @property
    def reliable(self) -> bool:
        """Whether the weighted moments can be trusted: :math:`\\hat k \\le` 0.7."""
        return self.khat == -math.inf or (math.isfinite(self.khat) and self.khat <= KHAT_RELIABLE)

    @property
    def biased(self) -> bool:
        """Reliable weights that disagree with the guide by more than 0.1 sd in a mean or 10 %
        in an sd, by more than the check's own bootstrap standard error (a heavy-tailed marginal,
        e.g. a hierarchical scale, makes the weighted sd noisy: its noise must not read as
        bias; one standard error, not two, so that a miss just past the limit is still seen)."""
        if not self.reliable:
            return False
        low_sd, high_sd = SD_RATIO_LIMITS
        for label, shift in self.mean_shift.items():
            if abs(shift) - self.mean_shift_se.get(label, 0.0) > MEAN_SHIFT_LIMIT:
                return True
        for label, ratio in self.sd_ratio.items():
            se = self.sd_ratio_se.get(label, 0.0)
            if ratio - se > high_sd or ratio + se < low_sd:
                return True
        return False

    @property
    def confirmed(self) -> bool:
        """Reliable weights whose moments agree with the guide's within the limits by two of the
        check's standard errors: every :math:`|\\text{mean shift}| + 2\\,\\mathrm{se} \\le
        0.1` and every sd ratio :math:`\\pm 2\\,\\mathrm{se}` within :math:`[0.9, 1.1]`
        (``False`` with no elements)."""
        if not self.reliable or not self.mean_shift:
            return False
        low_sd, high_sd = SD_RATIO_LIMITS
        for label, shift in self.mean_shift.items():
            if abs(shift) + 2.0 * self.mean_shift_se.get(label, 0.0) > MEAN_SHIFT_LIMIT:
                return False
        for label, ratio in self.sd_ratio.items():
            se = 2.0 * self.sd_ratio_se.get(label, 0.0)
            if ratio - se < low_sd or ratio + se > high_sd:
                return False
        return True

    def summary(self) -> str:
        """One line: the worst mean shift and the sd-ratio range, naming the elements."""
        if not self.mean_shift:
            return "no latent elements"
        worst_mean = max(self.mean_shift, key=lambda k: abs(self.mean_shift[k]))
        low = min(self.sd_ratio, key=self.sd_ratio.__getitem__)
        high = max(self.sd_ratio, key=self.sd_ratio.__getitem__)
        return (
            f"guide mean - weighted mean up to {self.mean_shift[worst_mean]:+.2f} sd "
            f"({worst_mean}), guide sd / weighted sd {self.sd_ratio[low]:.2f} ({low}) to "
            f"{self.sd_ratio[high]:.2f} ({high}); {self.num_samples} draws, ESS {self.ess:.0f}"
        )


#: bootstrap resamples of the draws for the check's standard errors, and columns per chunk
_BOOTSTRAP = 64
_BOOTSTRAP_COLUMNS = 16


def _shift_and_ratio(
    x: Tensor, weights: Tensor, own: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(guide mean - weighted mean) / weighted sd, and guide sd / weighted sd, per column of
    ``x`` ``(..., n, D)`` under normalised ``weights`` ``(..., n)``; the guide's moments from
    its own draws ``own`` ``(..., n_own, D)`` (default: ``x``)."""
    own = x if own is None else own
    mean_w = (weights[..., None] * x).sum(-2)
    sd_w = (weights[..., None] * (x - mean_w[..., None, :]) ** 2).sum(-2).sqrt()
    return (own.mean(-2) - mean_w) / sd_w, own.std(-2) / sd_w


@torch.no_grad()
def guide_importance_check(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    max_plate_nesting: int | None = None,
    batch_size: int | None = None,
    vectorize: bool = True,
    **kwargs: Any,
) -> GuideCheck:
    r"""PSIS :math:`\hat k` of ``guide`` against ``model`` and its moments against the
    importance-weighted ones, from the same ``num_samples`` draws (see the module docstring).

    :param model: a Pyro model.
    :param guide: a Pyro guide for it (an autoguide, :class:`~pyro_flows.infer.AutoFlow`, or a
        hand-written one).
    :param args: positional arguments of model and guide.
    :param num_samples: guide draws (at least 10).
    :param max_plate_nesting: the model's plate depth (default: found by tracing once).
    :param batch_size: draws per vectorised run (default: all at once).
    :param vectorize: vectorised draws (default) or one model replay per draw.
    :param kwargs: keyword arguments of model and guide.
    :returns: a :class:`GuideCheck`; its ``biased`` says whether to distrust the guide's moments.

    Cost: one guide run and one model replay per draw (vectorised by default), as for
    :func:`~pyro_flows.infer.diagnostics.guide_psis_khat`, plus :math:`O(n D)` for the moments.

    Example: see the module docstring.

    References: see the module docstring.
    """
    log_ratios, values = guide_draws(
        model, guide, args, kwargs, num_samples, max_plate_nesting, batch_size, vectorize
    )
    smoothed, khat = psis_smooth(log_ratios)
    return weighted_moment_check(khat, smoothed, values)


def weighted_moment_check(
    khat: float, smoothed: Tensor, values: dict[str, Tensor], num_own: int | None = None
) -> GuideCheck:
    r"""The moment comparison of the module docstring from smoothed log weights ``smoothed``
    ``(n,)`` of the draws ``values`` (per site, ``(n, size)``), with 64 bootstrap resamples for
    the standard errors. The guide's own moments come from the first ``num_own`` draws
    (default: all ``n``; fewer when the weighted draws include draws of another proposal, as
    in :func:`~pyro_flows.infer.defensive_draws.defensive_importance_check`); ``khat`` is the
    :math:`\hat k` recorded (that of ``smoothed``'s weights, which decides ``reliable``).

    :returns: a :class:`GuideCheck` with ``num_samples = n``.
    """
    n = len(smoothed)
    num_own = n if num_own is None else num_own
    if not 2 <= num_own <= n:
        raise ValueError(f"num_own must be in [2, {n}] (the draws), got {num_own}")
    weights = torch.softmax(smoothed, 0)
    check = GuideCheck(khat, n, float(1.0 / (weights**2).sum()))
    gen = torch.Generator().manual_seed(0)
    resamples = torch.randint(n, (_BOOTSTRAP, n), generator=gen)
    own_resamples = None
    if num_own < n:  # the guide's own draws resampled on their own
        own_resamples = torch.randint(num_own, (_BOOTSTRAP, num_own), generator=gen)
    boot_weights = torch.softmax(smoothed[resamples], -1)  # (B, n)
    for name, x in values.items():
        x = x.double().cpu()
        own = x[:num_own]
        shift, ratio = _shift_and_ratio(x, weights, own)
        shift_se = torch.zeros_like(shift)
        ratio_se = torch.zeros_like(ratio)
        for cols in torch.arange(x.shape[1]).split(_BOOTSTRAP_COLUMNS):
            xb = x[:, cols][resamples]  # (B, n, c)
            ob = xb if own_resamples is None else own[:, cols][own_resamples]
            s_b, r_b = _shift_and_ratio(xb, boot_weights, ob)
            shift_se[cols] = s_b.std(0)
            ratio_se[cols] = r_b.std(0)
        # a constant element (an LKJ Cholesky factor's L[0, 0] = 1) has no moments to compare:
        # its weighted sd is rounding error, and its shift and ratio would read -1 sd and 0
        varies = x.amax(0) > x.amin(0)
        usable = torch.isfinite(shift) & torch.isfinite(ratio) & varies
        for j in torch.nonzero(usable).reshape(-1).tolist():
            label = name if x.shape[1] == 1 else f"{name}[{j}]"
            check.mean_shift[label] = float(shift[j])
            check.sd_ratio[label] = float(ratio[j])
            check.mean_shift_se[label] = float(shift_se[j])
            check.sd_ratio_se[label] = float(ratio_se[j])
    return check
