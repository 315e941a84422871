r"""Initialisation strategies that also work on sites that cannot be sampled.

Pyro's ``init_to_median``, ``init_to_sample`` and ``init_to_feasible`` all draw from the site's
distribution, so a model written with Stan's implicit flat priors
(:class:`pyro.distributions.ImproperUniform`, which has a log density but no sampler) fails at
the first guide call with ``NotImplementedError: ImproperUniform does not support sampling``.
:func:`improper_safe` wraps any strategy: for such a site it returns the point whose
unconstrained coordinates are all zero,

.. math::

    \theta_0 = T(0), \qquad T = \mathrm{biject\_to}(\mathrm{support}),

which is Stan's default centre of initialisation (Stan draws uniformly on :math:`[-2, 2]` around
it); every other site gets the wrapped strategy's value.

References:

- Stan Reference Manual, "Initialization" (random inits on :math:`(-2, 2)` in unconstrained
  space). https://mc-stan.org/docs/reference-manual/execution.html
- Pyro, ``pyro.infer.autoguide.initialization``.
  https://docs.pyro.ai/en/stable/infer.autoguide.html#module-pyro.infer.autoguide.initialization
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor
from torch.distributions import biject_to

__all__ = ["improper_safe", "unconstrained_origin"]

InitFn = Callable[[dict[str, Any]], Tensor]


def unconstrained_origin(site: dict[str, Any]) -> Tensor:
    r"""The site's value at the origin of its unconstrained space, :math:`T(0)` with
    :math:`T = \mathrm{biject\_to}(\mathrm{support})` (shape ``batch_shape + event_shape``).

    >>> import pyro.distributions as dist
    >>> from pyro.distributions import constraints
    >>> site = {"fn": dist.ImproperUniform(constraints.positive, (), (3,))}
    >>> unconstrained_origin(site).tolist()
    [1.0, 1.0, 1.0]
    """
    fn = site["fn"]
    transform = biject_to(fn.support)
    shape = transform.inverse_shape(fn.batch_shape + fn.event_shape)
    loc = getattr(fn, "loc", None)
    like = loc if isinstance(loc, Tensor) else None
    zeros = (
        torch.zeros(shape, dtype=like.dtype, device=like.device)
        if like is not None
        else torch.zeros(shape)
    )
    return transform(zeros).detach()


def improper_safe(init_loc_fn: InitFn = init_to_median) -> InitFn:
    r"""Wrap a Pyro initialisation strategy so that sites which cannot be sampled (such as
    ``ImproperUniform``, Stan's implicit flat priors) start at :math:`T(0)`, the origin of their
    unconstrained space, instead of raising ``NotImplementedError``.

    :param init_loc_fn: the strategy for every other site (default ``init_to_median``).
    :returns: a strategy with the same call signature, usable by any Pyro autoguide.
    :raises TypeError: when ``init_loc_fn`` is not callable.

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.distributions import constraints
    >>> from pyro.infer.autoguide import AutoMultivariateNormal
    >>> def model():
    ...     beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    ...     pyro.sample("y", dist.Normal(beta.sum(-1), 1.0), obs=torch.tensor(3.0))
    >>> guide = AutoMultivariateNormal(model, init_loc_fn=improper_safe())
    >>> guide()["beta"].shape
    torch.Size([2])
    """
    if not callable(init_loc_fn):
        raise TypeError(
            f"improper_safe expects a Pyro init strategy (a callable site -> value), got "
            f"{type(init_loc_fn).__name__} {init_loc_fn!r}"
        )

    def init(site: dict[str, Any] | None = None) -> Any:
        if site is None:
            return init
        try:
            return init_loc_fn(site)
        except NotImplementedError:
            return unconstrained_origin(site)

    init.__name__ = f"improper_safe({getattr(init_loc_fn, '__name__', 'init')})"
    return init
