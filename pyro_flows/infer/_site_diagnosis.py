r"""Which sites make a model's log density non-finite at a guide's draw: what ``fit_guide``
names when its very first steps have a NaN/inf loss.

The ELBO's estimate :math:`\log p(x, z) - \log q(z)` is a sum over the sites of the model
and guide traces; when it is NaN or infinite before a single step was taken, the cause is
almost never the learning rate but a site: observed data holding NaN/inf, a parameter a
distribution cannot take, a density that overflows. :func:`non_finite_sites` runs the guide
once (one draw, no particle plate), replays the model on it, and names the sites whose
``log_prob`` is not finite where it is not masked out, with the count of non-finite entries
of an observed value.

References: Pyro's ``poutine.trace`` and ``poutine.replay`` (E. Bingham et al., *Pyro: Deep
Universal Probabilistic Programming*, JMLR 20, 2019).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

__all__ = ["non_finite_sites"]


def non_finite_sites(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Descriptions of the sites of ``guide`` and of ``model`` (replayed on the guide's draw)
    whose log density is not finite, guide sites first; empty when every site is finite or
    the traces cannot be made (the cause is then not one site).

    Example:

    >>> import math, pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     m = pyro.sample("m", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(m, 1.0), obs=y)
    >>> def guide(y):
    ...     pyro.sample("m", dist.Normal(0.0, 1.0))
    >>> non_finite_sites(model, guide, (torch.tensor([math.nan, 1.0]),), {})
    ["observed site 'y' (its value holds 1 NaN/inf of 2 entries)"]
    """
    found: list[str] = []
    try:
        with poutine.block(), torch.no_grad(), torch.random.fork_rng(devices=[]):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            for kind, trace in (("guide", guide_trace), ("model", model_trace)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample":
                        continue
                    described = _describe(kind, name, site)
                    if described is not None:
                        found.append(described)
    except Exception:  # noqa: BLE001 - a trace that cannot be made names no site
        return []
    return found


def _describe(kind: str, name: str, site: dict) -> str | None:
    """``site``'s description when its log density is not finite (or cannot be computed)."""
    value = site["value"]
    observed = bool(site.get("is_observed")) and isinstance(value, torch.Tensor)
    bad = int((~torch.isfinite(value)).sum()) if observed and value.is_floating_point() else 0
    data = f"observed site {name!r} (its value holds {bad} NaN/inf of {value.numel()} entries)"
    try:
        log_prob = scale_and_mask(site["fn"].log_prob(value), mask=site.get("mask"))
    except Exception as error:  # noqa: BLE001 - a refused value is what we report
        if bad:
            return data
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{kind} site {name!r} (its log_prob raised {type(error).__name__}: {first_line})"
    if not isinstance(log_prob, torch.Tensor) or bool(torch.isfinite(log_prob).all()):
        return None
    if bad:
        return data
    if observed:
        return f"observed site {name!r} (a non-finite log density at finite data)"
    return f"{kind} site {name!r} (a non-finite log density at the guide's draw)"
