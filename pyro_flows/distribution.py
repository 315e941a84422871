r"""``FlowDistribution``: the Pyro distribution a :class:`~pyro_flows.Flow` returns per call.

It is a ``pyro.distributions.TransformedDistribution`` (so ``pyro.sample``, ELBOs, ``Predictive``
and everything else in Pyro accept it), with two fast paths:

- ``rsample`` runs :meth:`Flow.rsample_and_log_prob` (base -> data once) and remembers the pair
  ``(x, log q(x))``; a later ``log_prob`` of *that very tensor* returns the remembered value, so a
  guide scoring its own sample (every ELBO does) costs no inverse pass, even for IAF.
- every other ``log_prob`` runs :meth:`Flow.log_prob` (the inverse pass) from scratch.

With ``path_gradient=True`` the own-sample score keeps the remembered value but takes its
gradient along the sample path only (Roeder et al.'s "sticking the landing" estimator): it adds
:math:`\ell(x) - \mathrm{stop}(\ell(x))`, where :math:`\ell = \log q_{\mathrm{stop}(\phi)}`
is the flow's density with its parameters frozen, evaluated by one inverse pass, so that

.. math::

    \nabla_\phi \log q = \nabla_x \log q_\phi(x)\big|_{x = f_\phi(\varepsilon)}
        \frac{\partial f_\phi(\varepsilon)}{\partial \phi}

and the score term :math:`\nabla_\phi \log q_\phi(x)|_x`, which has expectation zero, is
dropped. The ELBO's value is unchanged; its gradient stays unbiased and its variance vanishes
where :math:`q` equals the posterior.

Reference: G. Roeder, Y. Wu, D. Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
Estimators for Variational Inference", NeurIPS 2017, https://arxiv.org/abs/1703.09194.

The remembered pair cannot go stale: it is keyed on the tensor's identity *and* its version
counter, and on the version counters of every parameter and buffer of the flow, so an in-place
edit, an optimiser step, ``load_state_dict`` or ``.to()`` all invalidate it. The distribution is
built fresh per ``flow()`` call and remembers at most one pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .flow import Flow, SampleShape


class FlowDistribution(dist.TransformedDistribution):
    """Distribution of ``flow`` for a fixed ``context``; see the module docstring.

    :param flow: the flow.
    :param context: the context (already validated) or ``None``.
    :param batch_shape: for unconditional flows, an explicit batch shape (from ``expand``).
    :param path_gradient: score own samples with the path-only gradient (see the module
        docstring; costs one inverse pass per score under autograd).
    """

    arg_constraints: dict = {}

    def __init__(
        self,
        flow: Flow,
        context: Tensor | None,
        batch_shape: torch.Size | None = None,
        path_gradient: bool = False,
    ) -> None:
        if not isinstance(path_gradient, bool):
            raise TypeError(f"path_gradient must be a bool, got {path_gradient!r}")
        self.flow = flow
        self.context = context
        self.path_gradient = path_gradient
        base = flow.base_dist(context)
        if batch_shape is not None and base.batch_shape != batch_shape:
            base = base.expand(batch_shape)
        transforms = [
            t.condition(context) if (context is not None and t.context_dim) else t
            for t in flow.transforms
        ]
        self._remembered: tuple[Tensor, int, tuple[tuple[int, int], ...], Tensor] | None = None
        super().__init__(base, transforms, validate_args=False)

    def _versions(self) -> tuple[tuple[int, int], ...]:
        """Version counter and storage address of every parameter and buffer: an in-place edit
        bumps the first, ``.to()`` / ``load_state_dict`` with ``assign`` change the second."""
        return tuple(
            (t._version, t.data_ptr()) for t in chain(self.flow.parameters(), self.flow.buffers())
        )

    def _extra_shape(self) -> torch.Size:
        """Batch dims added by ``expand`` on top of the context's batch shape."""
        own = self.context.shape[:-1] if self.context is not None else torch.Size()
        return self.batch_shape[: len(self.batch_shape) - len(own)]

    def rsample_and_log_prob(self, sample_shape: SampleShape = ()) -> tuple[Tensor, Tensor]:
        """Samples and their log density in one base -> data pass."""
        shape = torch.Size(sample_shape) + self._extra_shape()
        x, log_q = self.flow.rsample_and_log_prob(shape, self.context)
        self._remembered = (x, x._version, self._versions(), log_q)
        return x, log_q

    def rsample(self, sample_shape: SampleShape = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: SampleShape = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self._extra_shape()
        return self.flow.sample(shape, self.context)

    def log_prob(self, value: Tensor) -> Tensor:
        r = self._remembered
        if (
            r is not None
            and value is r[0]
            and value._version == r[1]
            and self._versions() == r[2]
            and (r[3].requires_grad or not torch.is_grad_enabled())
        ):
            if self.path_gradient and torch.is_grad_enabled():
                frozen = log_prob_with_frozen_parameters(self.flow, value, self.context)
                return r[3].detach() + (frozen - frozen.detach())
            return r[3]
        log_q = self.flow.log_prob(value, self.context)
        if self._extra_shape():
            log_q = log_q.expand(torch.broadcast_shapes(log_q.shape, self.batch_shape))
        return log_q

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> FlowDistribution:
        batch_shape = torch.Size(batch_shape)
        if self.context is None:
            return FlowDistribution(self.flow, None, batch_shape, self.path_gradient)
        context = self.context.expand(batch_shape + self.context.shape[-1:])
        return FlowDistribution(self.flow, context, path_gradient=self.path_gradient)


@contextmanager
def _frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Swap every parameter of ``module`` for its detached value, and back on exit (by hand
    rather than ``torch.func.functional_call``, which refuses to run under a JIT trace)."""
    saved = [(m, name, p) for m in module.modules() for name, p in m._parameters.items()]
    try:
        for m, name, p in saved:
            if p is not None:
                m._parameters[name] = p.detach()  # type: ignore[assignment]
        yield
    finally:
        for m, name, p in saved:
            m._parameters[name] = p


def log_prob_with_frozen_parameters(flow: Flow, x: Tensor, context: Tensor | None) -> Tensor:
    r""":math:`\log q_{\mathrm{stop}(\phi)}(x)`: the flow's log-density by the inverse pass with
    every parameter detached, so gradients reach ``x`` (and ``context``) only.

    >>> from pyro_flows import flows
    >>> flow = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    >>> x = torch.randn(4, 2, requires_grad=True)
    >>> log_prob_with_frozen_parameters(flow, x, None).sum().backward()
    >>> all(p.grad is None for p in flow.parameters()), tuple(x.grad.shape)
    (True, (4, 2))
    """
    with _frozen_parameters(flow):
        return flow.log_prob(x, context)
