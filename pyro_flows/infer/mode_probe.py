r"""Modes a trained flow misses: climb the target from over-dispersed points, then ask the flow.

A flow :math:`q` fitted by reverse KL is mode-seeking: it can sit on some of the target's modes
and give the others no mass, and then every diagnostic computed from its own draws (the ELBO,
the importance-sampling ESS and :math:`\hat k`, the IS estimate of :math:`\log Z`) looks fine,
because no draw ever lands where the mass is missing. This probe looks there on purpose:

1. Starting points are drawn over-dispersed around the flow's draws,
   :math:`z_0 = \bar x + s\,(x - \bar x)` with :math:`x \sim q` and a spread :math:`s`
   log-uniform in :math:`[1, s_{\max}]` per point (``max_spread``, 20 by default).
2. Each point climbs :math:`\log\tilde p` by Adam in the flow's sd units (the learning rate
   cosine-decayed to 0); points whose gradient is still large at the end (a ridge, or a density
   growing without bound such as the funnel's neck) are dropped, and the rest are merged into
   distinct local maxima :math:`m_k`.
3. At a mode the log importance weight :math:`w(m_k) = \log\tilde p(m_k) - \log q(m_k)` is
   compared with its typical value over the flow's draws (the median of :math:`w(x)`,
   :math:`x \sim q`, which is :math:`\approx \log Z` for a good flow):

   .. math::

       e_k = w(m_k) - \operatorname{median}_{x \sim q} w(x).

   A flow that covers :math:`m_k` in proportion has :math:`e_k \approx 0`; :math:`e_k > 8`
   (``missed_nats``) means its density there is more than :math:`e^8 \approx 3000` times too
   small: the mode is *missed*. Modes far below the highest one found (``height_nats``, 10
   nats) carry no mass that matters and are not judged.

The probe finds modes that gradient ascent from the starting cloud reaches; it proves nothing
about modes outside it, and on a continuum of maxima (a ring) it reports many points, all
covered when the flow is good.

Example::

    >>> import torch
    >>> from pyro_flows import Flow
    >>> from pyro_flows.transforms.affine import ElementwiseAffine
    >>> def two_modes(z):   # Gaussians at (+-4, 0), sd 0.7, equal mass
    ...     a = -0.5 * (((z - torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
    ...     b = -0.5 * (((z + torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
    ...     return torch.logaddexp(a, b)
    >>> one_mode = Flow([ElementwiseAffine(2, loc=torch.tensor([4.0, 0.0]), scale=0.7)])
    >>> probe = probe_modes(one_mode, two_modes, seed=0)
    >>> int(probe.missed.sum()), [round(v) for v in probe.modes[probe.missed][0].tolist()]
    (1, [-4, 0])

References:

- D. J. C. MacKay. *Information Theory, Inference, and Learning Algorithms*, ch. 29-30 (why
  samples from a fitted approximation cannot reveal the mass it misses). CUP, 2003.
- L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
  Annealed Importance Sampling Bootstrap.* ICLR 2023 (reverse KL dropping modes).
  https://arxiv.org/abs/2208.01893
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._steps import check_int, check_number
from .mode_search import check_climb_options, climb

__all__ = ["ModeProbe", "probe_modes"]

#: a mode where the flow's log importance weight exceeds its median over the flow's draws by
#: more than this many nats is missed (the flow's density there is e^8 ~ 3000 times too small);
#: measured: dropped modes 48-3300 nats, the crest of a covered ring up to 3.6
MISSED_NATS = 8.0


@dataclass(frozen=True)
class ModeProbe:
    r"""What :func:`probe_modes` found.

    :ivar modes: ``(K, D)`` distinct local maxima of :math:`\log\tilde p` reached.
    :ivar log_p: ``(K,)`` :math:`\log\tilde p` there.
    :ivar log_q: ``(K,)`` the flow's :math:`\log q` there.
    :ivar excess: ``(K,)`` :math:`e_k`, the log weight there minus its median over flow draws.
    :ivar missed: ``(K,)`` bool, modes that matter (within ``height_nats`` of the highest) with
        :math:`e_k >` ``missed_nats``.
    :ivar reference: the median log weight over the flow's draws (about :math:`\log Z`).
    :ivar num_starts: starting points climbed; ``num_converged`` of them converged.
    """

    modes: Tensor
    log_p: Tensor
    log_q: Tensor
    excess: Tensor
    missed: Tensor
    reference: float
    num_starts: int
    num_converged: int

    def summary(self, limit: int = 3) -> str:
        """One line per missed mode (at most ``limit``), or a line saying none was."""
        if not bool(self.missed.any()):
            return (f"no missed mode among {len(self.modes)} found from {self.num_starts} "
                    "over-dispersed starts")
        lines = []
        order = torch.argsort(self.excess, descending=True)
        for k in [int(i) for i in order if bool(self.missed[i])][:limit]:
            where = ", ".join(f"{v:.3g}" for v in self.modes[k, :4].tolist())
            more = ", ..." if self.modes.shape[1] > 4 else ""
            excess = float(self.excess[k])
            factor = f"e^{excess:.1f}" if excess < 1000 else "over e^1000"
            lines.append(
                f"mode at ({where}{more}): log p {float(self.log_p[k]):.2f}, the flow's "
                f"density there {factor} times too small"
            )
        return "; ".join(lines)


def probe_modes(
    flow: nn.Module,
    log_prob: Callable[[Tensor], Tensor],
    *,
    num_starts: int = 64,
    max_spread: float = 20.0,
    steps: int = 300,
    lr: float = 0.1,
    num_samples: int = 2048,
    missed_nats: float = MISSED_NATS,
    height_nats: float = 10.0,
    seed: int = 0,
    candidates: Tensor | None = None,
) -> ModeProbe:
    r"""Climb ``log_prob`` from over-dispersed points around ``flow``'s draws and report the
    local maxima the flow misses (see the module docstring for the maths).

    :param flow: a trained flow with ``rsample_and_log_prob`` and ``log_prob``.
    :param log_prob: the target's unnormalised log density, batched over leading dimensions.
    :param num_starts: starting points.
    :param max_spread: the largest over-dispersion factor :math:`s_{\max}`, at least 1.
    :param steps: Adam steps of the climb.
    :param lr: Adam's initial learning rate, in the flow's sd units.
    :param num_samples: flow draws for the centre, the scales and the reference weight (at
        least ``num_starts``, which start from the first draws, and at least 2).
    :param missed_nats: the excess :math:`e_k` above which a mode is missed.
    :param height_nats: modes more than this many nats below the highest are not judged.
    :param seed: seeds the flow's draws and the spreads (the global RNG is forked and restored).
    :param candidates: ``(M, D)`` maxima found some other way (e.g. by
        :func:`~pyro_flows.infer.mode_search.search_modes` before training), judged with the
        ones the climb reaches.
    :returns: a :class:`ModeProbe`.
    :raises TypeError: arguments of the wrong type.
    :raises ValueError: counts below 1 (``num_samples`` below ``max(2, num_starts)``),
        ``max_spread < 1``, ``lr <= 0``, negative or non-finite nats, candidates not of shape
        ``(M, D)``, a ``log_prob`` that does not return one differentiable value per point, or
        a log weight :math:`\log\tilde p(x) - \log q(x)` that is NaN or infinite at every
        flow draw (a NaN target: no reference to judge the modes by).
    """
    from .mode_search import _values
    from .results import _forked_rng

    _check_probe_options(num_starts, max_spread, steps, lr, num_samples, missed_nats,
                         height_nats, seed)
    with torch.no_grad(), _forked_rng(seed, []):
        x, log_q = flow.rsample_and_log_prob((num_samples,))
        x, log_q = x.detach(), log_q.detach()
        log_p_x = _values(log_prob, x)
        log_w = log_p_x - log_q
        finite = torch.isfinite(log_w)
        if not bool(finite.any()):
            raise ValueError(
                f"probe_modes: the log weight log_prob(x) - log q(x) is NaN or infinite at all "
                f"{num_samples} flow draws (e.g. log_prob {float(log_p_x[0])}, log q "
                f"{float(log_q[0])}): no reference weight to judge modes by (a NaN target?)"
            )
        reference = float(log_w[finite].median())
        if candidates is not None:
            candidates = _checked_candidates(candidates, x.shape[-1])
        centre = x.mean(0)
        scale = x.std(0).clamp_min(1e-6)
        generator = torch.Generator().manual_seed(seed)
        spread = torch.exp(
            torch.rand(num_starts, 1, generator=generator, dtype=torch.float64)
            * math.log(max_spread)
        ).to(x)
        z0 = centre + spread * (x[:num_starts] - centre)
    z, value, converged = climb(log_prob, z0, scale, steps=steps, lr=lr)
    with torch.no_grad():
        points = z[converged.to(z.device)]
        heights = value[converged.to(z.device)]
        if candidates is not None and len(candidates):
            candidates = candidates.to(points)
            points = torch.cat([points, candidates])
            heights = torch.cat([heights, log_prob(candidates).detach().to(heights)])
        modes, log_p = _merge(points, heights, scale)
        if len(modes):
            log_q_modes = flow.log_prob(modes).detach()
        else:
            log_q_modes = torch.empty(0, dtype=x.dtype, device=x.device)
        excess = log_p - log_q_modes - reference
        top = max(float(log_p.max()) if len(log_p) else -math.inf,
                  float(log_p_x[finite].max()))
        missed = (excess > missed_nats) & (log_p >= top - height_nats)
    return ModeProbe(modes, log_p, log_q_modes, excess, missed.cpu(), reference, num_starts,
                     int(converged.sum()))


def _check_probe_options(num_starts: object, max_spread: object, steps: object, lr: object,
                         num_samples: object, missed_nats: object, height_nats: object,
                         seed: object) -> None:
    """The arguments of :func:`probe_modes` checked before anything runs."""
    check_climb_options(num_starts, max_spread, steps, lr, seed)
    check_int(num_samples, "num_samples", 2)
    if num_samples < num_starts:  # type: ignore[operator]
        raise ValueError(
            f"num_samples ({num_samples}) must be at least num_starts ({num_starts}): the "
            "starts are spread from the first flow draws"
        )
    check_number(missed_nats, "missed_nats", positive=False)
    check_number(height_nats, "height_nats", positive=False)


def _checked_candidates(candidates: object, dim: int) -> Tensor:
    """``candidates`` as a detached ``(M, dim)`` floating tensor, else a clear error."""
    if not isinstance(candidates, Tensor):
        raise TypeError(f"candidates must be None or a tensor (M, {dim}), got "
                        f"{type(candidates).__name__}")
    if candidates.dim() != 2 or candidates.shape[-1] != dim:
        raise ValueError(f"candidates must have shape (M, {dim}), got {tuple(candidates.shape)}")
    return candidates.detach()


def _merge(points: Tensor, heights: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct maxima, highest first: a point within half a flow sd (every coordinate) of a
    kept one is the same maximum."""
    order = torch.argsort(heights, descending=True)
    kept: list[int] = []
    for i in order.tolist():
        if all(float(((points[i] - points[j]) / scale).abs().max()) > 0.5 for j in kept):
            kept.append(i)
    index = torch.tensor(kept, dtype=torch.long, device=points.device)
    return points[index], heights[index]
