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

The remembered pair cannot go stale (:class:`OwnSampleMemory`): it is served only for the very
tensor ``rsample`` returned, and only while that tensor, the context and every parameter and
buffer of the flow hold the values they had then, compared entry by entry against a copy. Version
counters alone would miss edits through ``p.data`` (which has its own counter) or a NumPy view;
the copy costs one pass over the parameters' memory per ``rsample`` and per own-sample score,
small next to the flow pass it saves (an IAF's inverse pass is ``input_dim`` MADE passes per
layer). The distribution is built fresh per ``flow()`` call and remembers at most one pair.

Where the distributions live: this module (singular) holds only the distribution a flow
*returns*; the *base* distributions a flow starts from are in :mod:`pyro_flows.base` (the
standard Normal, the wrapper of a fixed torch distribution) and in the package
:mod:`pyro_flows.distributions` (plural: trainable and discrete bases), which also re-exports
:class:`FlowDistribution` and the bases of :mod:`pyro_flows.base`, so it is the one place to
import distributions from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Transform

from ._validation import SampleShape, check_sample_shape, compiling


class FlowLike(Protocol):
    """What a :class:`FlowDistribution` reads of its flow (a :class:`~pyro_flows.Flow`): its
    base for a context, its transforms (base -> data) and its three passes. A protocol, so that
    this module does not import :mod:`pyro_flows.flow` (which imports this one)."""

    transforms: Iterable[torch.distributions.Transform]

    def base_dist(self, context: Tensor | None) -> torch.distributions.Distribution: ...

    def rsample_and_log_prob(
        self, sample_shape: SampleShape = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...

    def sample(self, sample_shape: SampleShape = (), context: Tensor | None = None) -> Tensor: ...

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor: ...


def _module_tensors(module: nn.Module, out: list[Tensor]) -> None:
    """Append every parameter and buffer of ``module`` and of its submodules to ``out`` (each
    submodule once; plain loops over ``_modules``: ``module.modules()`` builds a name for every
    submodule, and generator expressions cost a frame each; this is three times cheaper than
    either)."""
    seen = {id(module)}
    stack = [module]
    pop, push, add = stack.pop, stack.append, out.append
    while stack:
        m = pop()
        for t in m._parameters.values():
            if t is not None:
                add(t)
        for t in m._buffers.values():
            if t is not None:
                add(t)
        children = m._modules
        if children:
            for c in reversed(children.values()):
                if c is not None and id(c) not in seen:
                    seen.add(id(c))
                    push(c)


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    """The entries of ``tensors`` (one dtype and device) in one vector: a copy when there are
    several, possibly a view of the only one."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors]) if _FLATTEN is None else _FLATTEN(tensors)


_FLATTEN = getattr(getattr(torch._C, "_nn", None), "flatten_dense_tensors", None)  # one C++ call


class _Values:
    """The values of a list of tensors, kept as one vector per (dtype, device) and the list's
    layout (each tensor's dtype, device and shape). ``matches`` compares another list exactly:
    the same layout and, per group, one ``torch.equal`` of the vectors (a NaN never matches,
    which only costs a recomputation). Two passes over the values per remembered pair instead
    of a copy and a comparison per tensor."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.layout, groups = _layout(tensors)
        with torch.no_grad():
            self.flats = [_flat(group).clone() if len(group) == 1 else _flat(group)
                          for group in groups.values()]

    def matches(self, tensors: Sequence[Tensor]) -> bool:
        layout, groups = _layout(tensors)
        if layout != self.layout:
            return False
        with torch.no_grad():
            return all(
                torch.equal(_flat(group), saved)
                for group, saved in zip(groups.values(), self.flats, strict=True)
            )


#: each tensor's (dtype, device), and each tensor's shape
Layout = tuple[list[tuple[torch.dtype, torch.device]], list[torch.Size]]


def _layout(tensors: Sequence[Tensor]) -> tuple[Layout, dict[tuple, list[Tensor]]]:
    """Each tensor's (dtype, device) and shape, and the tensors grouped by dtype and device (in
    the order the groups first appear)."""
    keys = [(t.dtype, t.device) for t in tensors]
    groups: dict[tuple, list[Tensor]] = {}
    get = groups.get
    for key, t in zip(keys, tensors, strict=True):
        group = get(key)
        if group is None:
            groups[key] = [t]
        else:
            group.append(t)
    return (keys, [t.shape for t in tensors]), groups


class OwnSampleMemory:
    """The last ``(sample, log q(sample))`` pair of a distribution, served back only while
    nothing it was computed from has changed.

    ``remember`` keeps the sample tensor and a copy of the values of the sample, of the
    distribution's own tensors (context, location, ...) and of every parameter and buffer of
    the module; ``recall`` returns the remembered ``log q`` for the very same tensor object if
    every one of them still holds the same values (same dtypes, devices, shapes and entries),
    else ``None``. Comparing values, not version counters, also catches edits that bypass the
    counters (``p.data.add_``, a NumPy view). A ``log q`` remembered without autograd is not
    served while autograd is on (it has no graph).

    Cost: per remembered pair, one walk over the module and one copy of its parameters into
    one vector per dtype; per recall, the walk again and one comparison per dtype.

    Under ``torch.compile`` (see :func:`~pyro_flows._validation.compiling`) comparing values
    would break the graph (``torch.equal`` reads a value back to the host), so a pair
    remembered while compiling keeps no copies and is served by identity alone, as Pyro's
    transform caches are, and only while compiling (an eager call never serves it, and a
    compiled call never serves a pair remembered eagerly: both recompute). Compiled code should
    therefore build the distribution where it draws from it (``flow()`` per step, as
    :class:`~pyro_flows.infer.AutoFlow` does) rather than keep one across parameter updates.

    Example::

        >>> lin = torch.nn.Linear(2, 2)
        >>> memory, x = OwnSampleMemory(), torch.randn(2)
        >>> log_q = torch.tensor(0.5, requires_grad=True)
        >>> memory.remember(x, log_q, (), lin)
        >>> memory.recall(x, (), lin) is log_q
        True
        >>> _ = lin.weight.data.add_(1.0)  # invisible to version counters
        >>> memory.recall(x, (), lin) is None
        True
    """

    def __init__(self) -> None:
        self._entry: tuple[Tensor, _Values, Tensor] | None = None

    @staticmethod
    def _tensors(value: Tensor, inputs: Iterable[Tensor | None], module: nn.Module) -> list[Tensor]:
        """``value``, the given inputs and every parameter and buffer of ``module``."""
        tensors = [value, *(t for t in inputs if t is not None)]
        _module_tensors(module, tensors)
        return tensors

    def remember(
        self,
        value: Tensor,
        log_q: Tensor,
        inputs: Iterable[Tensor | None],
        module: nn.Module,
    ) -> None:
        """Remember ``log_q`` for ``value``, computed from ``inputs`` and ``module`` (while
        compiling, by identity alone: see the class docstring)."""
        if compiling():
            self._entry = (value, None, log_q)
            return
        self._entry = (value, _Values(self._tensors(value, inputs, module)), log_q)

    def recall(
        self, value: Tensor, inputs: Iterable[Tensor | None], module: nn.Module
    ) -> Tensor | None:
        """The remembered ``log q`` if ``value`` is the remembered tensor and nothing changed."""
        entry = self._entry
        if entry is None or value is not entry[0]:
            return None
        _, saved, log_q = entry
        if torch.is_grad_enabled() and not log_q.requires_grad:
            return None
        if saved is None or compiling():  # served by identity within compiled code only
            return log_q if saved is None and compiling() else None
        if not saved.matches(self._tensors(value, inputs, module)):
            return None
        return log_q

    def forget(self) -> None:
        """Drop the remembered pair (and its copies)."""
        self._entry = None


def _keep_shapes(transforms: Sequence[object], event_dim: int) -> bool:
    """Whether every one of ``transforms`` is a ``Transform`` from and to events of
    ``event_dim`` dimensions with torch's shape-keeping ``forward_shape``/``inverse_shape``: then
    ``TransformedDistribution`` keeps the base as it is, with its batch and event shapes."""
    for t in transforms:
        if not isinstance(t, Transform):
            return False
        cls = type(t)
        if (
            cls.forward_shape is not _SAME_SHAPE[0]
            or cls.inverse_shape is not _SAME_SHAPE[1]
            or t.domain.event_dim != event_dim
            or t.codomain.event_dim != event_dim
        ):
            return False
    return True


_SAME_SHAPE = (Transform.forward_shape, Transform.inverse_shape)


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
        flow: FlowLike,
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
        self._memory = OwnSampleMemory()
        if _keep_shapes(transforms, len(base.event_shape)):
            # what TransformedDistribution.__init__ would compute, without its walks of a
            # ComposeTransform (quadratic in the number of layers): the base unchanged, its
            # batch and event shapes
            self.transforms = transforms
            self.base_dist = base
            torch.distributions.Distribution.__init__(
                self, base.batch_shape, base.event_shape, validate_args=False
            )
        else:
            super().__init__(base, transforms, validate_args=False)

    def _extra_shape(self) -> torch.Size:
        """Batch dims added by ``expand`` on top of the context's batch shape."""
        own = self.context.shape[:-1] if self.context is not None else torch.Size()
        return self.batch_shape[: len(self.batch_shape) - len(own)]

    def rsample_and_log_prob(self, sample_shape: SampleShape = ()) -> tuple[Tensor, Tensor]:
        """Samples and their log density in one base -> data pass."""
        shape = check_sample_shape(sample_shape) + self._extra_shape()
        x, log_q = self.flow.rsample_and_log_prob(shape, self.context)
        self._memory.remember(x, log_q, (self.context,), self.flow)
        return x, log_q

    def rsample(self, sample_shape: SampleShape = ()) -> Tensor:
        """Reparametrised samples (their log density remembered; one graph under
        ``torch.compile``)."""
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: SampleShape = ()) -> Tensor:
        shape = check_sample_shape(sample_shape) + self._extra_shape()
        return self.flow.sample(shape, self.context)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log q(value)``: the remembered value for this distribution's own last sample if
        nothing changed since (see the module docstring), else the inverse pass. Traces as one
        graph under ``torch.compile`` (which checks shapes, not values: see
        :class:`OwnSampleMemory` for how a compiled call recognises its own sample)."""
        remembered = self._memory.recall(value, (self.context,), self.flow)
        if remembered is not None:
            if self.path_gradient and torch.is_grad_enabled():
                frozen = log_prob_with_frozen_parameters(self.flow, value, self.context)
                return remembered.detach() + (frozen - frozen.detach())
            return remembered
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


def _submodules(module: nn.Module) -> list[nn.Module]:
    """``module`` and every submodule, each once (the set of ``module.modules()``)."""
    found: list[nn.Module] = []
    seen, stack = {id(module)}, [module]
    while stack:
        m = stack.pop()
        found.append(m)
        for c in m._modules.values():
            if c is not None and id(c) not in seen:
                seen.add(id(c))
                stack.append(c)
    return found


@contextmanager
def _frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Swap every parameter of ``module`` for its detached value, and back on exit (by hand
    rather than ``torch.func.functional_call``, which refuses to run under a JIT trace; the
    submodules by a walk over ``_modules``, which TorchDynamo traces, where ``modules()`` hashes
    every submodule and breaks the graph at Pyro's ``TransformModule.__hash__``)."""
    saved = [(m, name, p) for m in _submodules(module) for name, p in m._parameters.items()]
    try:
        for m, name, p in saved:
            if p is not None:
                m._parameters[name] = p.detach()  # type: ignore[assignment]
        yield
    finally:
        for m, name, p in saved:
            m._parameters[name] = p


def log_prob_with_frozen_parameters(flow: FlowLike, x: Tensor, context: Tensor | None) -> Tensor:
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
