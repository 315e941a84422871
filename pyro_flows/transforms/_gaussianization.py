r"""Pure functions behind :class:`~pyro_flows.transforms.gaussianization.MarginalGaussianization`.

Per dimension, a mixture of :math:`K` logistic (or Gaussian) kernels with weights :math:`w_k`,
locations :math:`\mu_k` and scales :math:`s_k` has CDF, survival function and density

.. math::

    F(y) = \sum_k w_k\, G\Big(\frac{y - \mu_k}{s_k}\Big), \qquad
    S(y) = 1 - F(y) = \sum_k w_k\, G\Big(\frac{\mu_k - y}{s_k}\Big), \qquad
    f(y) = \sum_k \frac{w_k}{s_k}\, g\Big(\frac{y - \mu_k}{s_k}\Big),

with :math:`G = \sigma` (logistic) or :math:`\Phi` (Gaussian), all evaluated in log space
(log-sum-exp over the components), so :math:`\log F` and :math:`\log S` stay exact far in both
tails, where :math:`F` or :math:`S` underflow. The marginal Gaussianization is

.. math::

    z = \Phi^{-1}(F(y)) = \begin{cases} \Phi^{-1}_{\log}(\log F(y)) & F(y) \le S(y)\\
    -\Phi^{-1}_{\log}(\log S(y)) & \text{otherwise} \end{cases}, \qquad
    \log\left|\frac{dz}{dy}\right| = \log f(y) - \log\varphi(z),

where :math:`\Phi^{-1}_{\log}` (:func:`log_ndtri`) inverts :math:`\log\Phi` and is only ever
called on the smaller tail (argument :math:`\le \log\tfrac12`), so it never loses precision to
:math:`1 - p` rounding. The log-determinant is not computed as the difference of
:math:`\log f(y)` and :math:`\log\varphi(z)`, two numbers of size :math:`z^2/2` that cancel in the
tails (in float32 the difference has an absolute error of about :math:`10^{-7} z^2`), but as a
sum of two well-conditioned terms: with :math:`T` the smaller tail (:math:`F` or :math:`S`),

.. math::

    \log\left|\frac{dz}{dy}\right| = \log\frac{f(y)}{T(y)} + \log M(|z|), \qquad
    \frac{f}{T} = \sum_k \pi_k \frac{h_k(u_k)}{s_k}, \qquad
    M(t) = \frac{\Phi(-t)}{\varphi(t)},

using :math:`\log T(y) = \log\Phi(-|z|)`: :math:`\pi_k \propto w_k G(\pm u_k)` are the
components' shares of the tail (a softmax), :math:`h_k` the kernel's hazard rate
(:math:`g/G`: :math:`\sigma(\mp u)` for the logistic, :math:`1/M(\mp u)` for the Gaussian) and
:math:`M` Mills' ratio (:func:`log_mills`: direct below :math:`t = 4`, a continued fraction above).

The inverse, :func:`from_gaussian`, solves :math:`\log F(y) = \log\Phi(z)`
(or :math:`\log S(y) = \log\Phi(-z)`) for :math:`y` by safeguarded Newton
(:func:`~pyro_flows.transforms._root_finding.solve_increasing`) with implicit gradients.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._numbers import has_values
from ._root_finding import implicit_root, solve_increasing

Kernel = Literal["logistic", "gaussian"]
KERNELS = ("logistic", "gaussian")

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: ``log_ndtri`` takes ``ndtri(exp(log_p))`` as its starting point above this ``log_p`` and the
#: tail asymptotics below it (where ``exp`` would underflow in float32).
_ASYMPTOTIC_BELOW = -60.0

#: Newton steps of ``log_ndtri`` on ``log_ndtr`` after its starting point (quadratic convergence:
#: the starting points are within 1e-2 in the far tail, so 3 steps reach rounding level).
_NEWTON_STEPS = 3


def log_normal_pdf(z: Tensor) -> Tensor:
    r""":math:`\log\varphi(z) = -z^2/2 - \tfrac12\log 2\pi`."""
    return -0.5 * z * z - _HALF_LOG_2PI


#: ``log_mills`` switches from the direct formula to the continued fraction at this ``t``.
_MILLS_SWITCH = 4.0

#: Depth of the continued fraction (exact to 2e-16 for ``t >= 4``; checked against mpmath).
_MILLS_TERMS = 32


def log_mills(t: Tensor) -> Tensor:
    r"""The log of Mills' ratio, :math:`\log M(t) = \log\Phi(-t) - \log\varphi(t)`, for any real
    :math:`t`, without the cancellation of the two terms for large :math:`t`.

    Below :math:`t = 4` the direct difference (both terms moderate there); above it Laplace's
    continued fraction :math:`M(t) = 1/(t + 1/(t + 2/(t + 3/(t + \cdots))))`, 32 terms deep
    (exact to rounding for :math:`t \ge 4`), which stays exact for any :math:`t` (float32
    included) where the difference would lose all digits. For :math:`t \to -\infty`,
    :math:`\log M(t) \approx t^2/2`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms._gaussianization import log_mills
    >>> t = torch.tensor([0.0, 1e6], dtype=torch.float64)
    >>> [round(v, 10) for v in log_mills(t).tolist()]  # log(sqrt(pi/2)), log(1e-6)
    [0.2257913526, -13.815510558]

    References: P. S. Laplace, *Traité analytique des probabilités*, 1812; J. P. Mills,
    *Table of the ratio: area to bounding ordinate*, Biometrika 18, 1926.
    """
    near = t.clamp_max(_MILLS_SWITCH)
    direct = torch.special.log_ndtr(-near) - log_normal_pdf(near)
    far_mask = t >= _MILLS_SWITCH
    # the usual case in training: skip the 32-term recursion (meta tensors: no values, shapes)
    # (not under torch.jit.trace: a trace would freeze the branch of the traced input)
    if has_values(far_mask) and not torch.jit.is_tracing() and not bool(far_mask.any()):
        return direct
    far = t.clamp_min(_MILLS_SWITCH)
    r = far
    for k in range(_MILLS_TERMS, 0, -1):
        r = far + k / r
    return torch.where(far_mask, -torch.log(r), direct)


def log_ndtri(log_p: Tensor) -> Tensor:
    r"""The inverse of :math:`\log\Phi`: :math:`z` with :math:`\log\Phi(z) = \log p`, for
    :math:`\log p \le \log\tfrac12` (the lower tail; use symmetry for the upper one).

    Starts from ``ndtri(exp(log_p))`` or, where ``exp(log_p)`` would underflow, from the tail
    expansion :math:`z \approx -\sqrt{\ell - \log(2\pi\ell)}` with :math:`\ell = -2\log p`, and
    takes Newton steps (3 if any element starts from the expansion, else 1) on
    :math:`\log\Phi(z) - \log p`, whose slope is
    :math:`\varphi(z)/\Phi(z) = 1/M(-z)` (:func:`log_mills`); the function is concave and
    increasing, so Newton converges monotonically from the left after at most one step. The
    result is exact to a few ulps for any finite :math:`\log p \le \log\tfrac12` (down to
    ``-1e30`` in float32). Its gradient is the exact :math:`dz/d\log p = M(-z)`, attached by one
    implicit-function step (the iterations are not recorded).

    Example:

    >>> import torch
    >>> from pyro_flows.transforms._gaussianization import log_ndtri
    >>> log_p = torch.tensor([-1e4, -50.0, -3.0, -0.7], dtype=torch.float64)
    >>> z = log_ndtri(log_p)
    >>> bool(torch.allclose(torch.special.log_ndtr(z), log_p, rtol=1e-14))
    True
    """
    with torch.no_grad():
        lp = log_p.detach().clamp_max(math.log(0.5))
        z = torch.special.ndtri(torch.exp(lp.clamp_min(_ASYMPTOTIC_BELOW)))
        in_tail = lp <= _ASYMPTOTIC_BELOW
        steps = 1  # ndtri's start is exact to rounding except for exp's error, one step fixes it
        # (meta: shapes only; under a trace the branch must not depend on the traced input)
        if torch.jit.is_tracing() or not has_values(in_tail) or bool(in_tail.any()):
            ell = -2.0 * lp
            tail = -torch.sqrt((ell - torch.log(2 * math.pi * ell.clamp_min(1.0))).clamp_min(0.0))
            z = torch.where(in_tail, tail, z)
            steps = _NEWTON_STEPS
        for _ in range(steps):
            z = z - (torch.special.log_ndtr(z) - lp) * torch.exp(log_mills(-z))
    # value z (up to one more Newton step, below rounding), gradient M(-z) = Phi(z) / phi(z)
    return z - (torch.special.log_ndtr(z) - log_p) * torch.exp(log_mills(-z))


def kernel_scale(bandwidth: Tensor, kernel: Kernel) -> Tensor:
    r"""The kernel scale :math:`s` whose kernel has standard deviation ``bandwidth`` :math:`h`:
    :math:`s = h` (Gaussian), :math:`s = h\sqrt3/\pi` (logistic, whose variance is
    :math:`s^2\pi^2/3`)."""
    return bandwidth * (math.sqrt(3.0) / math.pi) if kernel == "logistic" else bandwidth


def _kernel_logs(u: Tensor, kernel: Kernel) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(log G(u), log G(-u), log g(u)/G(u), log g(u)/G(-u))`` of the standardised kernel."""
    if kernel == "logistic":
        log_cdf = -F.softplus(-u)
        log_sf = -F.softplus(u)
        return log_cdf, log_sf, log_sf, log_cdf  # g/G(u) = sigma(-u), g/G(-u) = sigma(u)
    return (
        torch.special.log_ndtr(u),
        torch.special.log_ndtr(-u),
        -log_mills(-u),
        -log_mills(u),
    )


def mixture_logs(
    y: Tensor, loc: Tensor, scale: Tensor, log_weights: Tensor, kernel: Kernel
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r""":math:`(\log F(y), \log S(y), \log f(y)/F(y), \log f(y)/S(y))` of the per-dimension
    mixtures, all four without cancellation (the last two as log-sum-exps of the tail shares
    times the kernels' hazard rates; see the module docstring). :math:`\log f` is the sum of
    the first and third (or second and fourth).

    :param y: points, shape ``(..., D)``.
    :param loc: :math:`\mu`, shape broadcastable to ``(..., D, K)``; likewise ``scale``
        (:math:`s > 0`) and ``log_weights`` (normalised: log-sum-exp over ``K`` is 0).
    :param kernel: ``"logistic"`` or ``"gaussian"``.
    :return: four tensors of shape ``(..., D)``.
    """
    u = (y.unsqueeze(-1) - loc) / scale
    log_cdf, log_sf, hazard_cdf, hazard_sf = _kernel_logs(u, kernel)
    log_scale = torch.log(scale)
    lower = log_weights + log_cdf
    upper = log_weights + log_sf
    return (
        torch.logsumexp(lower, -1),
        torch.logsumexp(upper, -1),
        torch.logsumexp(torch.log_softmax(lower, -1) + hazard_cdf - log_scale, -1),
        torch.logsumexp(torch.log_softmax(upper, -1) + hazard_sf - log_scale, -1),
    )


def to_gaussian(
    y: Tensor, loc: Tensor, scale: Tensor, log_weights: Tensor, kernel: Kernel
) -> tuple[Tensor, Tensor]:
    r"""Data -> base, closed form: :math:`z = \Phi^{-1}(F(y))` and
    :math:`\log|dz/dy| = \log(f/T) + \log M(|z|)` per dimension (shapes ``(..., D)``)."""
    log_cdf, log_sf, hazard_cdf, hazard_sf = mixture_logs(y, loc, scale, log_weights, kernel)
    lower = log_cdf <= log_sf
    t = log_ndtri(torch.minimum(log_cdf, log_sf))  # -|z|
    z = torch.where(lower, t, -t)
    return z, torch.where(lower, hazard_cdf, hazard_sf) + log_mills(-t)


def _bracket_offset(log_tail: Tensor) -> Tensor:
    r"""A standardised point :math:`u \le 0` with :math:`\log G(u) \le` ``log_tail`` for both
    kernels: :math:`\log\sigma(u) \le u` and :math:`\log\Phi(u) \le -u^2/2 - \log 2`."""
    return torch.minimum(log_tail, -torch.sqrt(-2.0 * log_tail))


def from_gaussian(
    z: Tensor,
    loc: Tensor,
    scale: Tensor,
    log_weights: Tensor,
    kernel: Kernel,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    r"""Base -> data: :math:`y = F^{-1}(\Phi(z))` by root finding, and
    :math:`\log|dy/dz| = -\log(f/T) - \log M(|z|)` (shapes ``(..., D)``; the negative of
    :func:`to_gaussian`'s at the same pair).

    For :math:`z \le 0` it solves :math:`\log F(y) - \log\Phi(z) = 0`, for :math:`z > 0`
    :math:`\log\Phi(-z) - \log S(y) = 0`: both increasing in :math:`y`, with slopes
    :math:`f/F` and :math:`f/S`, bracketed by
    :math:`[\min_k(\mu_k + s_k u^*), \max_k \mu_k]` (lower tail; mirrored for the upper one),
    where :math:`u^* = \min(t, -\sqrt{-2t})` and :math:`t = \log\Phi(-|z|)`: there every
    kernel's tail is below :math:`t`, while :math:`F(\max_k\mu_k) \ge \tfrac12`. The solver stops
    at :math:`|\text{residual}| \le 8\varepsilon(1 + |t|)` (:math:`\varepsilon` the dtype's machine
    epsilon), the rounding level of :math:`t` itself, which moves :math:`z` by about
    :math:`8\varepsilon(1 + |t|)\,\Phi(-|z|)/\varphi(z) \approx 4\varepsilon(1 + |z|)`, a few
    ulps; or when the bracket is a few ulps wide. Gradients reach ``z`` and every parameter
    through the implicit function theorem.
    """
    shape = (*z.shape, loc.shape[-1])
    loc_e, scale_e, logw_e = (p.expand(shape) for p in (loc, scale, log_weights))
    target = torch.special.log_ndtr(-z.abs())  # the smaller tail, <= log 1/2
    upper = z > 0

    def residual(y: Tensor, loc: Tensor, scale: Tensor, logw: Tensor, target: Tensor):
        log_cdf, log_sf, hazard_cdf, hazard_sf = mixture_logs(y, loc, scale, logw, kernel)
        f = torch.where(upper, target - log_sf, log_cdf - target)
        return f, torch.exp(torch.where(upper, hazard_sf, hazard_cdf))

    with torch.no_grad():
        t = target.detach()
        u_star = _bracket_offset(t).unsqueeze(-1)
        mu, s = loc_e.detach(), scale_e.detach()
        lower_lo = (mu + s * u_star).amin(-1)
        lower_hi = mu.amax(-1)
        upper_lo = mu.amin(-1)
        upper_hi = (mu - s * u_star).amax(-1)
        lo = torch.where(upper, upper_lo, lower_lo)
        hi = torch.where(upper, upper_hi, lower_hi)
        ftol = 8 * torch.finfo(z.dtype).eps * (1 + t.abs())
        if has_values(z):
            root = solve_increasing(
                lambda y: residual(y, mu, s, logw_e.detach(), t),
                lo,
                hi,
                ftol=ftol,
                max_iter=max_iter,
            )
        else:  # meta tensors carry shapes only: there is nothing to iterate on
            root = lo.clone()
    y = implicit_root(lambda y: residual(y, loc_e, scale_e, logw_e, target), root)
    _, _, hazard_cdf, hazard_sf = mixture_logs(y, loc, scale, log_weights, kernel)
    return y, -torch.where(upper, hazard_sf, hazard_cdf) - log_mills(z.abs())
