r"""Defensive importance draws of an :class:`~pyro_flows.infer.AutoFlow` guide: half from the
guide, half from the guide with its base widened, weighted against the mixture.

Importance weights :math:`p/q` from the guide's own draws cannot see posterior mass where the
guide puts almost none: a guide whose tails are too light keeps a small PSIS :math:`\hat k`
when its draws never reach the posterior's tail, and its weighted moments are as short as its
own (posteriordb's one_comp: :math:`\hat k` 0.41, sds 0.48 of the reference). Defensive
importance sampling (Hesterberg, 1995; Owen & Zhou, 2000) draws from a mixture with a wider
component. For a guide :math:`\zeta = T(\varepsilon)`, :math:`\varepsilon \sim
\mathcal N(0, I_D)`, the wide component is :math:`q_s`: the same map of :math:`\varepsilon
\sim \mathcal N(0, s^2 I_D)`. Both share the Jacobian of :math:`T`, so at :math:`\zeta =
T(\varepsilon)`

.. math::

    \frac{q_s(\zeta)}{q(\zeta)} = \frac{\mathcal N(\varepsilon; 0, s^2 I)}
        {\mathcal N(\varepsilon; 0, I)}
        = s^{-D} \exp\!\Big(\tfrac12 |\varepsilon|^2 (1 - s^{-2})\Big), \qquad
    m = \tfrac12 q + \tfrac12 q_s,

and the weights :math:`p/m` of all draws (half from each component) are bounded by
:math:`2p/q_s` where the guide's tails are too light, and by :math:`2p/q` where they are too
heavy. The moments weighted by them estimate the posterior's also where the guide's own draws
cannot. Half the draws come from :math:`q` itself, so the guide's own moments and its plain
:math:`\log p/q` (PSIS :math:`\hat k` of Yao et al., 2018) come from the same call.

Cost: per draw one base -> data pass (forward, with log-determinants), one inverse pass (Pyro
scores the latent site's value) and one model run, vectorised in chunks.

Example:

>>> import pyro, pyro.distributions as dist
>>> from pyro_flows.infer import AutoFlow
>>> def model():
...     pyro.sample("z", dist.Normal(0.0, 1.0))
>>> pyro.clear_param_store()
>>> guide = AutoFlow(model, num_transforms=1, gaussian_start=False)
>>> guide()  # doctest: +ELLIPSIS
{...}
>>> draws = defensive_draws(model, guide, (), {}, 100, max_plate_nesting=0, batch_size=None)
>>> draws.log_ratios.shape, draws.mixture_log_ratios.shape, draws.values["z"].shape
(torch.Size([100]), torch.Size([200]), torch.Size([200, 1]))

References:

- T. Hesterberg. *Weighted average importance sampling and defensive mixture distributions.*
  Technometrics 37, 1995.
- A. Owen, Y. Zhou. *Safe and effective importance sampling.* JASA 95, 2000.
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .guide_check import GuideCheck, weighted_moment_check
from .importance_weights import _latent_values, _max_plate_nesting, psis_smooth

__all__ = [
    "DEFENSIVE_WIDTH",
    "DefensiveDraws",
    "defensive_check",
    "defensive_draws",
    "defensive_importance_check",
    "supports_defensive_draws",
]

#: the wide component's base scale :math:`s`
DEFENSIVE_WIDTH = 2.0


@dataclass
class DefensiveDraws:
    """What :func:`defensive_draws` returns; the first ``n`` draws are the guide's own.

    :ivar log_ratios: ``(n,)``, :math:`\\log p - \\log q` of the guide's own draws.
    :ivar mixture_log_ratios: ``(2n,)``, :math:`\\log p - \\log m` of all draws.
    :ivar values: per latent site, ``(2n, size)`` draws in the space the model samples them.
    """

    log_ratios: Tensor
    mixture_log_ratios: Tensor
    values: dict[str, Tensor]


def supports_defensive_draws(guide: object) -> bool:
    """Whether ``guide`` is an :class:`~pyro_flows.infer.AutoFlow` (a standard-normal base and
    a flow whose forward pass gives log-determinants), set up by a first call."""
    from .autoflow import AutoFlow

    return isinstance(guide, AutoFlow) and getattr(guide, "prototype_trace", None) is not None


@torch.no_grad()
def defensive_draws(
    model: Callable,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    *,
    max_plate_nesting: int,
    batch_size: int | None,
    width: float = DEFENSIVE_WIDTH,
    vmapped: bool = False,
) -> DefensiveDraws:
    r"""``num_samples`` draws of the guide and as many of its widened twin :math:`q_s`, with
    their log ratios against the guide and against the mixture (see the module docstring).

    :param model: the Pyro model.
    :param guide: an :class:`~pyro_flows.infer.AutoFlow` guide, already set up.
    :param args: positional arguments of model and guide.
    :param kwargs: keyword arguments of model and guide.
    :param num_samples: draws per component (at least 10).
    :param max_plate_nesting: the model's plate depth.
    :param batch_size: draws per vectorised run (``None``: all at once).
    :param width: the wide component's base scale :math:`s > 1`.
    :param vmapped: score the draws with the model run once per draw under ``torch.func.vmap``
        (:mod:`~pyro_flows.infer._vmapped_model`), for a model that does not broadcast over a
        draws' dim; else one vectorised model run per chunk.
    :raises TypeError: for a guide that is not a set-up ``AutoFlow``.
    :raises ValueError: for ``num_samples < 10`` or ``width <= 1``.
    """
    if not supports_defensive_draws(guide):
        raise TypeError(
            f"defensive_draws needs a set-up AutoFlow guide, got {type(guide).__name__}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples must be an int >= 10, got {num_samples!r}")
    if not width > 1.0:
        raise ValueError(f"width must be > 1, got {width!r}")
    total = 2 * num_samples
    chunk = total if batch_size is None else min(max(2, batch_size), total)
    scales = torch.ones(total)
    scales[num_samples:] = width
    plain, mixed, values = [], [], []
    for start in range(0, total, chunk):
        lr, lm, vals = _chunk(model, guide, args, kwargs, scales[start : start + chunk],
                              max_plate_nesting, width, vmapped)
        plain.append(lr)
        mixed.append(lm)
        values.append(vals)
    log_plain = torch.cat(plain)[:num_samples]
    return DefensiveDraws(
        log_plain,
        torch.cat(mixed),
        {name: torch.cat([v[name] for v in values]) for name in values[0]},
    )


def _chunk(
    model: Callable, guide: Any, args: tuple, kwargs: dict, scales: Tensor,
    max_plate_nesting: int, width: float, vmapped: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One vectorised chunk: base draws scaled by ``scales``, pushed through the guide's flow,
    scored by the model with the guide's latent site conditioned on them."""
    import pyro.poutine as poutine
    from pyro.infer.importance import vectorized_importance_weights

    flow = guide._bound_flow(*args, **kwargs)
    dim = guide.latent_dim
    param = next(flow.parameters())
    n = scales.numel()
    eps = torch.randn(n, dim, dtype=param.dtype, device=param.device)
    eps = eps * scales.to(eps)[:, None]
    x, log_q = eps, -0.5 * (eps**2).sum(-1) - 0.5 * dim * math.log(2.0 * math.pi)
    for t in flow.transforms:
        x, log_det = t.forward_and_log_det(x, None)
        log_q = log_q - log_det
    r2 = (eps**2).sum(-1)
    log_wide_over_q = 0.5 * r2 * (1.0 - width**-2) - dim * math.log(width)
    log_m_over_q = torch.logaddexp(torch.zeros_like(r2), log_wide_over_q) - math.log(2.0)
    site = f"_{guide._pyro_name}_latent"
    value = x.reshape((n,) + (1,) * max_plate_nesting + (dim,))
    conditioned = poutine.condition(guide, data={site: value})
    if vmapped:
        from ._vmapped_model import weights_and_guide_trace

        log_w, guide_trace = weights_and_guide_trace(model, conditioned, n, max_plate_nesting,
                                                     args, kwargs)
    else:
        log_w, _, guide_trace = vectorized_importance_weights(
            model, conditioned, *args, num_samples=n, max_plate_nesting=max_plate_nesting,
            normalized=False, **kwargs,
        )  # fmt: skip
    # log_w = log p(theta) - log q(zeta) + log|det J_T|: put Pyro's score of the latent (an
    # inverse pass) back and take this pass's own log q(zeta) instead (the same density)
    node = guide_trace.nodes[site]
    log_site = node["log_prob"] if "log_prob" in node else node["fn"].log_prob(value)
    log_site = log_site.reshape(n)
    log_ratio = log_w.reshape(n) + log_site - log_q
    vals = _latent_values(guide_trace, n)
    return log_ratio.double().cpu(), (log_ratio - log_m_over_q).double().cpu(), {
        k: v.double().cpu() for k, v in vals.items()
    }


@torch.no_grad()
def defensive_importance_check(
    model: Callable,
    guide: Any,
    *args: Any,
    num_samples: int = 2000,
    max_plate_nesting: int | None = None,
    batch_size: int | None = None,
    width: float = DEFENSIVE_WIDTH,
    **kwargs: Any,
) -> GuideCheck:
    r"""The moment check of :mod:`~pyro_flows.infer.guide_check` with defensive weights: the
    guide's moments (from its ``num_samples`` own draws) against those weighted by :math:`p/m`
    over all ``2 * num_samples`` draws of the mixture :math:`m = \tfrac12 q + \tfrac12 q_s`.

    :param model: the Pyro model.
    :param guide: a set-up :class:`~pyro_flows.infer.AutoFlow`.
    :param args: positional arguments of model and guide.
    :param num_samples: draws per component (at least 10).
    :param max_plate_nesting: the model's plate depth (default: found by tracing once).
    :param batch_size: draws per vectorised run (default: all at once).
    :param width: the wide component's base scale :math:`s > 1`.
    :param kwargs: keyword arguments of model and guide.
    :returns: a :class:`~pyro_flows.infer.guide_check.GuideCheck` whose ``khat`` is the PSIS
        :math:`\hat k` of the mixture weights :math:`p/m` (what ``reliable`` judges) and whose
        ``num_samples`` counts both components' draws.
    :raises TypeError, ValueError: as :func:`defensive_draws`.

    Example: an exact guide agrees with its defensive weights.

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer.autoguide.initialization import init_to_value
    >>> from pyro_flows.infer import AutoFlow
    >>> def model():
    ...     pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> pyro.clear_param_store()
    >>> guide = AutoFlow(model, num_transforms=1, gaussian_start=False, init_scale=1.0,
    ...                  init_loc_fn=init_to_value(values={"z": torch.tensor(0.0)}))
    >>> guide()  # doctest: +ELLIPSIS
    {...}
    >>> pyro.set_rng_seed(0)
    >>> check = defensive_importance_check(model, guide, num_samples=2000)
    >>> check.reliable, check.confirmed, check.num_samples
    (True, True, 4000)

    References: see the module docstring.
    """
    if max_plate_nesting is None:
        if not supports_defensive_draws(guide):
            raise TypeError(
                f"defensive_draws needs a set-up AutoFlow guide, got {type(guide).__name__}"
            )
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    return defensive_check(model, guide, args, kwargs, num_samples,
                           max_plate_nesting=max_plate_nesting, batch_size=batch_size,
                           width=width)


def defensive_check(
    model: Callable,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    *,
    max_plate_nesting: int,
    batch_size: int | None,
    width: float = DEFENSIVE_WIDTH,
    vmapped: bool = False,
) -> GuideCheck:
    """:func:`defensive_importance_check` with the model's arguments as ``args``/``kwargs``
    and the scoring of :func:`defensive_draws` (``vmapped``) to choose."""
    draws = defensive_draws(model, guide, args, kwargs, num_samples,
                            max_plate_nesting=max_plate_nesting, batch_size=batch_size,
                            width=width, vmapped=vmapped)
    smoothed, khat = psis_smooth(draws.mixture_log_ratios)
    return weighted_moment_check(khat, smoothed, draws.values, num_own=num_samples)
