r"""The modes of a target around :func:`~pyro_flows.infer.fit_target.fit_target`'s training:
the search before it that picks the method (and starts the chains of ``flow_mcmc``), and the
checks after it (the PSIS :math:`\hat k` of the final weights, the probe for missed modes).

Before training, :func:`~pyro_flows.infer.mode_search.search_modes` climbs
:math:`\log\tilde p` from over-dispersed points; with more than one distinct maximum,
``method="auto"`` trains by ``flow_mcmc`` (mass-covering) with chains started at the maxima,
else by reverse KL. After training, :func:`~pyro_flows.infer.mode_probe.probe_modes` looks for
a local maximum where the flow's density is far too small: reverse KL,

.. math::

    \mathrm{KL}(q \,\|\, p) = \mathbb E_q[\log q(x) - \log p(x)],

never pays for mass of :math:`p` that :math:`q` does not sample, so the ELBO, the ESS and
:math:`\log\hat Z` cannot see such a mode; the probe warns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._target_evaluation import LogDensity, TargetError, evaluate_target

#: target gradient evaluations per start of the mode search (300 climbing steps and a check)
_SEARCH_COST_PER_START = 301


@dataclass
class MethodChoice:
    """What the search before training decided.

    :ivar method: ``"reverse_kl"`` or ``"flow_mcmc"``.
    :ivar modes_found: distinct local maxima found (``-1``: no search ran).
    :ivar search: the search's result (``None`` without a search).
    :ivar chains: the flow-assisted chains of ``flow_mcmc`` (``None`` for reverse KL).
    :ivar search_cost: the search's target gradient evaluations (counted by ``flow_mcmc``).
    """

    method: str
    modes_found: int = -1
    search: Any = None
    chains: Any = None
    search_cost: int = 0


def choose_method(method: str, target: Any, log_prob: LogDensity, flow: nn.Module,
                  batch_size: int, seed: int) -> MethodChoice:
    """``method`` (one of ``"auto"``, ``"reverse_kl"``, ``"flow_mcmc"``) resolved: unless it is
    ``"reverse_kl"``, search the target's modes (``"auto"``: ``flow_mcmc`` with more than one)
    and, for ``flow_mcmc``, start ``batch_size`` chains per level at them (at the flow's draws
    when no maximum converged, a funnel's neck)."""
    if method == "reverse_kl":
        return MethodChoice(method)
    search = search_target(target, log_prob, flow, batch_size, seed)
    modes_found = len(search.modes)
    if method == "auto":
        method = "flow_mcmc" if modes_found > 1 else "reverse_kl"
    if method != "flow_mcmc":
        return MethodChoice(method, modes_found, search)
    from .flow_mcmc import FlowAssistedChains

    starts = search.modes
    if len(starts) == 0:  # no converged maximum (a funnel's neck): start at q's draws
        from .results import _forked_rng

        with torch.no_grad(), _forked_rng(seed, []):
            starts = flow.rsample_and_log_prob((batch_size,))[0]
    chains = FlowAssistedChains(flow, log_prob, starts, chains=batch_size, seed=seed)
    return MethodChoice(
        method, modes_found, search, chains, search.num_starts * _SEARCH_COST_PER_START
    )


def final_khat(log_w: Tensor) -> float:
    """PSIS k-hat of the final weights (``nan`` when it cannot be fitted)."""
    from .diagnostics import psis_khat

    try:
        return float(psis_khat(log_w))
    except (ValueError, RuntimeError):
        return math.nan


def search_target(target: Any, log_prob: LogDensity, flow: nn.Module, batch_size: int,
                  seed: int) -> Any:
    """The local maxima of the target (:func:`~pyro_flows.infer.mode_search.search_modes`),
    searched around its ``initial_params()`` (else the origin) in the flow's dtype and device,
    after a check of the target on ``batch_size`` of the flow's draws (the first step's check:
    a :class:`~pyro_flows.infer.fit_target.TargetError` for a wrong shape or NaN). The global
    RNG is left as it was."""
    from .mode_search import search_modes
    from .results import _forked_rng, as_target

    with torch.no_grad(), _forked_rng(seed, []):
        x = flow.rsample_and_log_prob((batch_size,))[0]
        evaluate_target(log_prob, x)
    dim = x.shape[-1]
    try:
        centre = as_target(target, dim)._center(x.dtype, x.device)
    except (TypeError, ValueError, AttributeError):
        centre = torch.zeros(dim, dtype=x.dtype, device=x.device)
    return search_modes(log_prob, dim, centre=centre.to(x), seed=seed)


def check_modes(flow: nn.Module, log_prob: LogDensity, history: Any,
                seed: int, candidates: Tensor | None) -> None:
    """Run the mode probe on the trained flow; record it in ``history`` (a
    :class:`~pyro_flows.infer.fit_target.TargetFitHistory`) and warn about missed modes (a
    probe that fails is recorded, never fatal: the training result stands). The warning points
    two frames above the caller of this function (``stacklevel=3``)."""
    from .mode_probe import probe_modes

    try:
        probe = probe_modes(flow, log_prob, seed=seed, candidates=candidates)
    except (ValueError, RuntimeError, TargetError) as error:
        history.mode_check = f"mode check failed: {error}"
        return
    history.mode_check = probe.summary()
    history.missed_modes = probe.modes[probe.missed].tolist()
    if history.missed_modes:
        if history.method == "flow_mcmc":
            advice = ("Training by flow_mcmc has not made the flow cover them yet: train "
                      "longer, or use a more flexible flow (e.g. a spline flow); use "
                      "infer.importance_sample or infer.annealed_importance_sampling with it "
                      "rather than its raw draws.")
        else:
            advice = ("Reverse KL is mode-seeking, and the ELBO, ESS and log Z from the flow's "
                      "own draws cannot see the missing mass. Use method='flow_mcmc' "
                      "(mass-covering; what method='auto' picks when its search finds several "
                      "modes), a more flexible flow, or check with MCMC (its chains start at the "
                      "modes) and infer.annealed_importance_sampling.")
        warnings.warn(
            f"fit_target: the flow misses {len(history.missed_modes)} mode(s) of the target "
            f"({probe.summary()}). {advice}",
            UserWarning,
            stacklevel=3,
        )
