r"""The flows of ``pyro-flows compare``: :func:`train_flow` fits the flow of a
:class:`~pyro_flows.compare.settings.FlowSettings` to a target and returns a
:class:`TrainedFlow`, which the flow-based methods (``flow``, ``neutra``, ``is``, ``ais``;
``flow_mcmc`` with its own) sample from and are charged for.

Training maximises the ELBO (reverse KL, the default)

.. math::

    \max_\theta\ \mathbb E_{q_\theta}[\log\tilde p(z) - \log q_\theta(z)],

or, for ``method="flow_mcmc"``, minimises the forward KL on flow-assisted tempered chains
(:func:`~pyro_flows.infer.fit_target`). A flow for a box target (U2-U4) is built on
:math:`\mathbb R^D` and pushed onto the box by :func:`~pyro_flows.infer.onto_support`; both are
kept (NeuTra and AIS run in the space before the push).

Example:

>>> from pyro_flows.compare.settings import FlowSettings
>>> from pyro_flows.targets import get_target
>>> s = FlowSettings("realnvp", {"num_transforms": 1, "hidden_dims": (8,)}, steps=3,
...                  batch_size=8)
>>> train_flow(get_target("banana"), s, progress=False).grad_evals
24

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015.
- M. Gabrié, G. M. Rotskoff, E. Vanden-Eijnden. *Adaptive Monte Carlo augmented with
  normalizing flows.* PNAS 119, 2022 (``flow_mcmc``). https://arxiv.org/abs/2105.12603
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..flow import Flow
from ..infer import TargetFitHistory, fit_target, onto_support
from ..targets import Target
from ._arguments import _boxed, _check_seed, _check_settings, _check_target
from .settings import FlowSettings

__all__ = ["TrainedFlow", "train_flow"]


@dataclass
class TrainedFlow:
    r"""A flow fitted to a target by :func:`~pyro_flows.infer.fit_target`: by reverse KL (the
    default of ``settings.flow``) as ``flow``, ``neutra`` and ``is`` share it, or by
    ``method="flow_mcmc"`` for the ``flow_mcmc`` row.

    :ivar flow: the flow on the target's support (sampled and scored by ``flow`` and ``is``).
    :ivar base_flow: the same layers on :math:`\mathbb R^D` (before the push onto a box);
        ``flow`` itself for targets on :math:`\mathbb R^D`. NeuTra runs in its base space.
    :ivar history: the :class:`~pyro_flows.infer.TargetFitHistory` (ELBO per step, ...).
    :ivar wall_time: training seconds, flow construction included.
    :ivar settings: the :class:`~pyro_flows.compare.settings.FlowSettings` used.

    Its cost, charged to every method that uses it, is ``history.grad_evals`` target gradients
    (reverse KL: :math:`\texttt{steps} \times \texttt{batch\_size}`; ``flow_mcmc``: the mode
    search's and every chain's) and ``wall_time`` seconds.

    Example: see :func:`train_flow`.

    References: Rezende & Mohamed, ICML 2015; Hoffman et al., 2019.
    """

    flow: Flow
    base_flow: Flow
    history: TargetFitHistory
    wall_time: float
    settings: FlowSettings

    @property
    def grad_evals(self) -> int:
        """Target gradients spent on training (``history.grad_evals``; reverse KL:
        ``steps * batch_size``)."""
        return int(self.history.grad_evals)


def train_flow(
    target: Target, settings: FlowSettings, *, seed: int = 0, progress: bool = True
) -> TrainedFlow:
    r"""Build the flow of ``settings`` (weights from ``torch.manual_seed(seed)``) and fit it to
    ``target`` by ``settings.method``: reverse KL by default,

    .. math::

        \max_\theta\ \mathbb E_{q_\theta}[\log\tilde p(z) - \log q_\theta(z)],

    or forward KL on flow-assisted tempered chains (``"flow_mcmc"``,
    :func:`~pyro_flows.compare.methods.flow_settings`),
    pushing it onto the target's support first when that is a box.

    Example:

    >>> from pyro_flows.targets import get_target
    >>> s = FlowSettings("realnvp", {"num_transforms": 1, "hidden_dims": (8,)}, steps=5,
    ...                  batch_size=16)
    >>> trained = train_flow(get_target("u2"), s, progress=False)
    >>> trained.grad_evals, trained.flow is trained.base_flow
    (80, False)

    References: D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.*
    ICML 2015.
    """
    _check_target(target)
    _check_settings(settings, FlowSettings)
    _check_seed(seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    base_flow = settings.build(target.dim)
    flow = onto_support(base_flow, target.support) if _boxed(target) else base_flow
    history = fit_target(
        flow,
        target,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        anneal=settings.anneal,
        method=settings.method,
        eval_every=0,
        eval_samples=1024,
        progress=progress,
        seed=seed,
    )
    flow.eval()
    return TrainedFlow(flow, base_flow, history, time.perf_counter() - start, settings)
