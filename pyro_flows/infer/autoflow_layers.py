r"""The flow of an :class:`~pyro_flows.infer.autoflow.AutoFlow` guide: its layers, built from
the ``flow=`` option, and the stages put around them.

The guide's map from the base draw :math:`\varepsilon \sim \mathcal N(0, I_D)` to the
unconstrained latents is, stage by stage (each optional one in brackets),

.. math::

    \zeta = \mu + \sigma \odot \bigl[L\bigr]\,
        \bigl[a + s \odot\bigr]\, \bigl[t\bigr] \circ f_K \circ \dots \circ f_1 \circ
        \bigl[g\bigr](\varepsilon),

with :math:`g` a sinh-arcsinh map (``learn_tails``), :math:`f_k` the builder's flow layers set to
the identity, :math:`t` the elementwise tail stage (``tail_stage``, on by default with the
Gaussian start: sinh-arcsinh then Tukey h, see :func:`tail_stages`), :math:`(a, s)` a
location-scale step trained after the Gaussian start (in the start's whitened units), :math:`L`
unit lower triangular (trained with ``full_rank``, or fixed by the Gaussian start's Laplace step
when whitening, by default up to :data:`WHITEN_MAX_DIM` dimensions) and :math:`(\mu, \sigma)`
the location-scale anchor at ``init_loc_fn``'s point and ``init_scale``. At the start every
optional stage is the identity, so the untrained guide is exactly
:math:`\mathcal N(\mu, \sigma^2 I)`.

References: Kucukelbir et al., JMLR 2017 (ADVI's location-scale guide); Kingma et al., NeurIPS
2016 (inverse autoregressive flows); the full entries are in
:class:`~pyro_flows.infer.autoflow.AutoFlow`'s docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from .. import flows as _flows
from ..flow import Flow
from ..nn.made import MADE
from ..transforms.affine import ElementwiseAffine
from ..transforms.sinh_arcsinh import SinhArcsinh
from ..transforms.tukey_h import TukeyH
from ..transforms.unit_lower import UnitLowerTriangular

__all__ = ["FLOW_BUILDERS", "WHITEN_MAX_DIM", "build_layers", "guide_flow", "tail_stages"]

#: builder names accepted by ``AutoFlow(model, flow=...)``: the registry's guide builders
#: (:func:`pyro_flows.flows.builder_names` with ``guide=True``)
FLOW_BUILDERS: dict[str, Callable[..., Flow]] = {
    name: _flows.BUILDERS[name].build for name in _flows.builder_names(guide=True)
}

FlowSpec = str | Callable[..., Flow]

#: ``whiten=None`` (the default) whitens by the start's Laplace step up to this many latent
#: dimensions (the step costs one backward pass per dimension)
WHITEN_MAX_DIM = 200


def _default_hidden(latent_dim: int) -> tuple[int, int]:
    width = max(32, 2 * latent_dim + 2)
    return (width, width)


def build_layers(
    spec: FlowSpec,
    latent_dim: int,
    *,
    num_transforms: int | None,
    hidden_dims: tuple[int, ...] | None,
    flow_options: dict[str, Any],
) -> Flow:
    """The flow layers ``spec`` names (a key of :data:`FLOW_BUILDERS` or a callable
    ``latent_dim -> Flow``) on ``latent_dim`` dimensions; a named builder gets hidden widths
    ``(w, w)``, ``w = max(32, 2 D + 2)``, unless ``hidden_dims`` is given.

    :raises ValueError: when the callable does not return a context-free ``Flow`` on
        ``latent_dim`` dimensions.

    Example:

    >>> build_layers("iaf", 3, num_transforms=2, hidden_dims=None, flow_options={}).input_dim
    3
    """
    builder = FLOW_BUILDERS[spec] if isinstance(spec, str) else spec
    kwargs = dict(flow_options)
    named = isinstance(spec, str) or spec in FLOW_BUILDERS.values()
    if num_transforms is not None:
        kwargs["num_transforms"] = num_transforms
    if hidden_dims is not None:
        kwargs["hidden_dims"] = hidden_dims
    elif named and _accepts(builder, "hidden_dims"):
        kwargs["hidden_dims"] = _default_hidden(latent_dim)
    built = builder(latent_dim, **kwargs)
    if not isinstance(built, Flow):
        raise ValueError(
            f"AutoFlow: the flow callable must return a pyro_flows.Flow, got {type(built).__name__}"
        )
    if built.input_dim != latent_dim or built.context_dim is not None:
        raise ValueError(
            f"AutoFlow: the flow must act on the {latent_dim} unconstrained latent "
            f"dimensions without context, got input_dim={built.input_dim}, "
            f"context_dim={built.context_dim}"
        )
    return built


def tail_stages(latent_dim: int) -> list[SinhArcsinh | TukeyH]:
    r"""The elementwise tail stage :math:`t = h \circ g` of the default guide, between the flow
    layers and the location-scale step: a sinh-arcsinh map
    :math:`g_d(v) = \sinh(\tau_d \operatorname{asinh} v + s_d)` (tail power and skew, lighter
    or heavier than Gaussian), then Tukey's h map :math:`h_d(u) = u\,e^{h_d^\pm u^2/2}`
    (power-law tails, :math:`P(|y| > t) \sim t^{-1/h}`, one weight per side). Both start at
    the identity.

    Why it is needed: the flow layers are affine autoregressive maps of a Gaussian base, and
    such (Lipschitz triangular) maps keep Gaussian tails (Jaini et al., 2020); with
    :math:`D = 1` an IAF layer has no conditioner input, so without this stage the
    one-dimensional guide is exactly Gaussian. Why after the flow layers, not next to the base
    (``learn_tails``): next to the base the sinh-arcsinh map lowered the sd ratios of
    ``examples/bayesian``'s 10-D funnel to 0.72-1.08 (seed 0; 0.90-0.99 then without it);
    after them, 0.85-1.00 against 0.88-1.00 without on seed 0, and 0.97-1.05 against
    0.94-1.01 on seed 1 (``docs/guides.rst``). Why both maps: the sinh-arcsinh map alone left
    a Student-t with 4 degrees of freedom at sd ratios 0.89-0.95 (from a Gaussian its tails
    are never polynomial), and Tukey's h alone (heavier tails only) left the eight schools'
    :math:`\tau` at 1.14-1.15.

    References: M. C. Jones, A. Pewsey, Biometrika 2009 (sinh-arcsinh); J. W. Tukey 1977 and
    T. C. Headrick et al. 2008 (the h transformation); P. Jaini, I. Kobyzev, Y. Yu,
    M. Brubaker, ICML 2020, https://arxiv.org/abs/1907.04481 (tails of triangular flows).

    Example:

    >>> import torch
    >>> stages = tail_stages(3)
    >>> [type(t).__name__ for t in stages]
    ['SinhArcsinh', 'TukeyH']
    >>> x = torch.randn(5, 3)
    >>> bool(torch.allclose(stages[1](stages[0](x)), x))  # the identity at the start
    True
    """
    return [SinhArcsinh(latent_dim), TukeyH(latent_dim)]


def guide_flow(
    layers: Flow,
    init_loc: Tensor,
    init_scale: float,
    *,
    learn_tails: bool,
    tail_stage: bool = False,
    full_rank: bool,
    whiten: bool | None,
    gaussian_start: bool,
) -> tuple[Flow, bool]:
    r"""The guide's flow: ``layers`` (set to the identity) between the optional stages of the
    module docstring, and whether it has the linear stage :math:`L`.

    ``whiten=None`` whitens when ``gaussian_start`` is on and :math:`D \le`
    :data:`WHITEN_MAX_DIM`; a whitening :math:`L` is frozen (set by the start, never trained),
    a ``full_rank`` one trainable. ``tail_stage`` puts :func:`tail_stages` between the flow
    layers and the location-scale step (``AutoFlow`` turns it on with the Gaussian start).

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.identity_init import identity_init_
    >>> layers = identity_init_(build_layers("iaf", 2, num_transforms=1, hidden_dims=None,
    ...                                      flow_options={}))
    >>> flow, linear = guide_flow(layers, torch.zeros(2), 0.1, learn_tails=False,
    ...                           full_rank=False, whiten=None, gaussian_start=True)
    >>> linear, [type(t).__name__ for t in flow.transforms][-3:]
    (True, ['ElementwiseAffine', 'UnitLowerTriangular', 'ElementwiseAffine'])
    """
    latent_dim = layers.input_dim
    tails = [SinhArcsinh(latent_dim)] if learn_tails else []
    shape = tail_stages(latent_dim) if tail_stage else []
    whiten = whiten if whiten is not None else gaussian_start and latent_dim <= WHITEN_MAX_DIM
    linear = [UnitLowerTriangular(latent_dim)] if full_rank or whiten else []
    if linear:
        linear[0].frozen = not full_rank
    affine = ElementwiseAffine(latent_dim, loc=init_loc, scale=init_scale)
    # with the start, training moves a location-scale stage in the start's whitened units
    # (y = mu0 + sigma0 * L (a + s * f)): Adam steps each parameter by about its learning
    # rate, which in raw units is many posterior sds where those are small (a regression
    # slope with sd 0.007 moved 1.5 sds in one step at lr 1e-2 and the fit never recovered
    # the start's accuracy); the anchor (mu0, sigma0) and L are frozen after the start
    steps = [ElementwiseAffine(latent_dim)] if gaussian_start else []
    stages = [*tails, *layers.transforms, *shape, *steps, *linear, affine]
    flow = Flow(stages, base=layers.base).to(init_loc)
    # Pyro's optimisers step every parameter tensor on their own (about 0.1 ms each on a CPU):
    # MADEs with each layer's weight and bias in one tensor halve the count
    for module in flow.modules():
        if isinstance(module, MADE):
            module.pack_parameters_()
    return flow, bool(linear)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
