r"""What an :class:`~pyro_flows.infer.autoflow.AutoFlow` guide refuses, with errors that say
what was expected and what was given: bad constructor options, discrete latent sites, models
without latent sites, latent sites in subsampled plates, and stale entries of Pyro's param
store.

A joint flow over the concatenated unconstrained latents
:math:`\zeta = (\zeta_{s_1}, \dots, \zeta_{s_k}) \in \mathbb R^D` needs every latent site to be
continuous (``biject_to(support)`` maps it to :math:`\mathbb R^{d_s}`), all of them present at
every step (a subsampled local site would change :math:`D`), and parameters of the shapes the
flow on :math:`D` dimensions has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pyro
from pyro.params.param_store import param_with_module_name

from ..flow import Flow
from .autoflow_layers import FLOW_BUILDERS

__all__ = ["check_options", "check_param_store", "check_sites", "check_subsampled_locals"]


def check_options(
    flow: Any,
    *,
    init_scale: Any,
    num_quantile_samples: Any,
    whiten: Any,
    learn_tails: Any,
    full_rank: Any,
    tail_stage: Any = None,
    path_gradient: Any,
    gaussian_start: Any,
    start_draws: Any,
    start_points: Any,
    hidden_dims: Any = None,
) -> None:
    """Refuse bad :class:`~pyro_flows.infer.autoflow.AutoFlow` options.

    :raises ValueError: an unknown builder name, a non-positive or non-finite ``init_scale``,
        ``num_quantile_samples < 2``, ``start_draws`` not an int >= 2, ``start_points`` not
        an int >= 1.
    :raises TypeError: a ``flow`` that is neither a name nor callable, a non-numeric
        ``init_scale``, a ``whiten`` or ``tail_stage`` that is not a bool or None, a flag
        that is not a bool, ``hidden_dims`` that is not ``None`` or a sequence.

    Example:

    >>> check_options("maf", init_scale=0.0, num_quantile_samples=100, whiten=None,
    ...               learn_tails=False, full_rank=False, path_gradient=False,
    ...               gaussian_start=True, start_draws=32, start_points=6)
    Traceback (most recent call last):
    ...
    ValueError: AutoFlow: init_scale must be a finite number > 0, got 0.0
    """
    if isinstance(flow, str):
        if flow not in FLOW_BUILDERS:
            raise ValueError(
                f"AutoFlow: unknown flow {flow!r}; expected one of {sorted(FLOW_BUILDERS)}, "
                "a builder from pyro_flows.flows, or a callable latent_dim -> Flow"
            )
    elif not callable(flow):
        raise TypeError(
            "AutoFlow: flow must be a builder name, a builder or a callable "
            f"latent_dim -> Flow, got {type(flow).__name__}"
        )
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)):
        raise TypeError(
            f"AutoFlow: init_scale must be a finite number > 0, got "
            f"{type(init_scale).__name__} {init_scale!r}"
        )
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"AutoFlow: init_scale must be a finite number > 0, got {init_scale!r}")
    if not isinstance(num_quantile_samples, int) or num_quantile_samples < 2:
        raise ValueError(
            f"AutoFlow: num_quantile_samples must be an int >= 2, got {num_quantile_samples!r}"
        )
    if whiten is not None and not isinstance(whiten, bool):
        raise TypeError(f"AutoFlow: whiten must be a bool or None, got {whiten!r}")
    flags = (("learn_tails", learn_tails), ("full_rank", full_rank))
    if tail_stage is not None and not isinstance(tail_stage, bool):
        raise TypeError(f"AutoFlow: tail_stage must be a bool or None, got {tail_stage!r}")
    # one draw makes the start's objective unbounded: mu - sigma * eps keeps the draw where it
    # is while the entropy term sum(log sigma) grows without end (a median of -16532 on a
    # 2-D Gaussian posterior); two draws pin every sigma
    for name, value, low in (("start_draws", start_draws, 2), ("start_points", start_points, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"AutoFlow: {name} must be an int >= {low}, got {value!r}")
    if hidden_dims is not None and (
        isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence)
    ):
        raise TypeError(
            "AutoFlow: hidden_dims must be None (the builder's default widths) or a sequence "
            f"of ints, got {type(hidden_dims).__name__} {hidden_dims!r}"
        )
    for name, value in (
        *flags,
        ("path_gradient", path_gradient),
        ("gaussian_start", gaussian_start),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"AutoFlow: {name} must be a bool, got {value!r}")


def check_sites(trace: Any) -> None:
    """Clear errors for discrete latent sites and models without latent sites (nothing to
    check before the prototype trace exists, ``trace=None``)."""
    if trace is None:
        return
    for name, site in trace.iter_stochastic_nodes():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"AutoFlow covers continuous latent sites only, but site {name!r} is discrete "
                f"(support {site['fn'].support}). Marginalise it out by enumeration: mark it "
                "with infer={'enumerate': 'parallel'} (or @config_enumerate), train with "
                "TraceEnum_ELBO, and give AutoFlow the model without that site: "
                f"AutoFlow(poutine.block(model, hide=[{name!r}])). See "
                "https://pyro.ai/examples/enumeration.html"
            )
    if not any(True for _ in trace.iter_stochastic_nodes()):
        raise ValueError(
            "AutoFlow found no latent sample sites in the model (every pyro.sample site is "
            "observed, or there are none); there is nothing to infer, use an empty guide"
        )


def check_subsampled_locals(trace: Any) -> None:
    """Refuse a latent site in a subsampled plate (a joint flow cannot score a subset of it)."""
    for name, site in trace.iter_stochastic_nodes():
        for frame in site["cond_indep_stack"]:
            full = frame.full_size or frame.size
            if full != frame.size:
                raise ValueError(
                    f"AutoFlow: latent site {name!r} lives in plate {frame.name!r} that is "
                    f"subsampled ({frame.size} of {full}); a joint flow over all latents "
                    "cannot score a subset of a local site. Subsample only observed sites, "
                    "amortise the local site with an encoder (AmortizedFlow), or guide it "
                    "with AutoNormal inside an AutoGuideList"
                )


def check_param_store(name: str, flow: Flow) -> None:
    """Refuse stale param-store entries of another model under this guide's names (Pyro
    would otherwise bind tensors of the wrong shape), and warn about entries under the flow's
    name that it does not have (they would be ignored, and the guide trained from scratch)."""
    store = pyro.get_param_store()
    own = {param_with_module_name(name, n): p for n, p in flow.named_parameters()}
    for full, param in own.items():
        if full in store and store[full].shape != param.shape:
            raise ValueError(
                f"Pyro's param store already holds {full!r} with shape "
                f"{tuple(store[full].shape)}, but this AutoFlow needs {tuple(param.shape)}: "
                "it belongs to another guide of the same name. Call "
                "pyro.clear_param_store() first, or name the guide differently."
            )
    prefix = param_with_module_name(name, "")
    unused = sorted(key for key in store.keys() if key.startswith(prefix) and key not in own)
    if unused:
        warnings.warn(
            f"Pyro's param store holds {len(unused)} entries under this AutoFlow's name that its "
            f"flow does not have (e.g. {unused[0]!r}); they are ignored. A store saved by an "
            "earlier version (MADE layers with separate 'weight' and 'bias', now one "
            "'weight_and_bias') or by a guide of another shape under the same name; call "
            "pyro.clear_param_store() first, or load the guide's state_dict instead",
            UserWarning,
            stacklevel=4,
        )
