r"""An unnormalised target density as :func:`~pyro_flows.infer.fit_target.fit_target` sees it:
read through the one target adapter (:func:`~pyro_flows.infer.target_density.as_target`),
checked to be finite on every evaluation, and weighed against the flow.

For draws :math:`x_i \sim q` the log importance weights are

.. math::

    \log w_i = \log\tilde p(x_i) - \log q(x_i), \qquad
    \log\hat Z = \log\frac1n\sum_i w_i, \qquad
    \mathrm{ESS}/n = \frac{(\sum_i w_i)^2}{n\sum_i w_i^2}.

What is checked where. :func:`log_density` reads the target the way the samplers, importance
sampling and NeuTra do: a :class:`~pyro_flows.infer.target_density.TargetDensity` built once,
at the dimension of the first points it is given (the flow's), that refuses points on another
device than the target's, rewords an error of the first evaluation (a target written for
another dimension), checks every output to be a real floating tensor of shape
``x.shape[:-1]`` and counts the points evaluated. fit_target adds one check of its own,
:func:`evaluate_target`: the values must be *finite*. The samplers do not ask that (a
:math:`-\infty` proposal is simply rejected), but a reverse-KL step on a NaN/inf would poison
the flow's parameters, so fit_target stops first with a :class:`TargetError` (a
:class:`~pyro_flows.infer.target_density.TargetOutputError`, as every other malformed output
is: the adapter's errors come back as ``TargetError`` with the adapter's message). Inside the
training loop each evaluation therefore costs the adapter's checks, which read only tensor
metadata (type, shape, dtype, device; no synchronisation), plus the one finiteness reduction
fit_target always had; the adapter is not rebuilt per call (building one reads the target's
device and dtype, which walks the tensors it holds). fit_target keeps its own count of target
evaluations (``history.grad_evals = steps * batch_size``); the adapter's counters are not
used. A target on a constrained support (``target.support``) is refused unless the flow was
pushed onto it (:func:`check_support`).

>>> import torch
>>> log_prob = lambda z: -0.5 * (z ** 2).sum(-1)
>>> evaluate_target(log_prob, torch.zeros(3, 2)).shape
torch.Size([3])
>>> evaluate_target(lambda z: z, torch.zeros(3, 2))
Traceback (most recent call last):
...
pyro_flows.infer.fit_target.TargetError: the target's log_prob returned shape (3, 2) for z of shape (3, 2) (dim=2); expected (3,) = z.shape[:-1], one log density per point
>>> issubclass(TargetError, TargetOutputError) and issubclass(TargetError, ValueError)
True

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML, 2015
  (reverse KL against an unnormalised density). https://arxiv.org/abs/1505.05770
- A. Kong. *A Note on Importance Sampling using Standardized Weights.* Technical report 348,
  University of Chicago, 1992 (the ESS of normalised weights).
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from .target_density import TargetDensity, TargetOutputError, as_target, target_dim

LogDensity = Callable[[Tensor], Tensor]


class TargetError(TargetOutputError):
    """The target returned something other than finite log densities of shape ``(batch,)``
    (the wrong shape, type or dtype, points on another device, an error on the first
    evaluation, or NaN/inf): :func:`~pyro_flows.infer.fit_target.fit_target`'s
    :class:`~pyro_flows.infer.target_density.TargetOutputError`, hence also a ``ValueError``."""

    # its public home (``pyro_flows.infer.fit_target``, which re-exports it) is the name
    # tracebacks, pickles and the documentation use
    __module__ = "pyro_flows.infer.fit_target"


class _AdaptedTarget:
    """``log_prob(x)`` of a target read through :func:`as_target` at the dimension of the first
    points given (one adapter per dimension, built once); the adapter's errors come back as
    :class:`TargetError`. No ``log_prob``, ``dim`` or ``device`` attribute: read again by
    :func:`as_target`, it is a plain callable."""

    __slots__ = ("_read", "_target")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._read: dict[int, TargetDensity] = {}

    def __call__(self, x: Tensor) -> Tensor:
        density = self._read.get(x.shape[-1])
        if density is None:  # read once, at the flow's dimension
            density = self._read[x.shape[-1]] = as_target(self._target, x.shape[-1])
        try:
            return density(x)
        except TargetOutputError as err:
            raise TargetError(str(err)) from err


def _adapted(log_prob: LogDensity) -> LogDensity:
    """``log_prob`` read through the adapter (as it is, when :func:`log_density` made it)."""
    return log_prob if isinstance(log_prob, _AdaptedTarget) else _AdaptedTarget(log_prob)


def log_density(target: Any) -> tuple[LogDensity, int | None, Any]:
    """``(log_prob, dim or None, support)`` of a target object or callable.

    The target is read by :func:`~pyro_flows.infer.target_density.as_target` (as the samplers
    read it) at the dimension of the points it is first given, the flow's: an error it raises on
    that first evaluation (a target written for another dimension), an output that is not real
    log densities of shape ``x.shape[:-1]``, or points on another device than the target's is a
    :class:`TargetError` naming what was given and what came back.

    :raises TypeError: for a target that is neither callable nor has a ``log_prob``.
    """
    dim = target_dim(target)
    return _AdaptedTarget(target), dim, getattr(target, "support", None)


def check_support(support: Any, flow: nn.Module, name: str) -> None:
    """A ``ValueError`` unless the target lives on :math:`\\mathbb R^D` (no support, or a real
    one) or ``flow`` was pushed onto its support."""
    if support is None or support is constraints.real_vector or support is constraints.real:
        return
    pushed = getattr(flow, "support", None)
    if pushed is support or (pushed is not None and repr(pushed) == repr(support)):
        return
    raise ValueError(
        f"target {name} lives on {support}, not on R^D: train a flow onto that support with "
        "pyro_flows.infer.onto_support(flow, target.support) (or pass ignore_support=True)"
    )


#: a draw farther than this from the origin that makes the target non-finite is named as a
#: likely overflow of a diverged flow (a Gaussian's log density overflows float32 at 1.8e19)
FAR_OUT = 1e8


def evaluate_target(log_prob: LogDensity, x: Tensor) -> Tensor:
    """``log_prob(x)`` read through the adapter (shape ``x.shape[:-1]``, a real floating
    tensor) and finite; otherwise :class:`TargetError` naming what came back. A ``log_prob``
    that :func:`log_density` did not make is read anew on every call."""
    value = _adapted(log_prob)(x)
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        first = x.reshape(-1, x.shape[-1])[bad[0]].detach().tolist()
        far = max(abs(v) for v in first) if first else 0.0
        diverged = (
            f"; but x has a coordinate of size {far:.3g}, where an overflow is the likely "
            "cause: the flow has probably diverged (lower lr, or clip_grad_norm)"
            if far > FAR_OUT else ""
        )
        raise TargetError(
            f"target log density returned {int(bad.numel())} non-finite value(s) "
            f"({value.reshape(-1)[bad[0]].item()} at x = {[round(v, 4) for v in first]}); "
            "a target must be finite wherever the flow can put mass (restrict the flow to the "
            f"target's support with onto_support){diverged}"
        )
    return value


@torch.no_grad()
def importance_weights(
    flow: nn.Module, log_prob: LogDensity, num_samples: int, batch_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Samples ``x ~ q`` and log importance weights :math:`\\log\\tilde p(x) - \\log q(x)`
    (``log_prob`` read through the adapter once, checked as by :func:`evaluate_target`)."""
    log_prob = _adapted(log_prob)
    xs, ws = [], []
    left = num_samples
    while left > 0:
        n = min(batch_size, left)
        x, log_q = flow.rsample_and_log_prob((n,))
        ws.append(evaluate_target(log_prob, x) - log_q)
        xs.append(x)
        left -= n
    return torch.cat(xs), torch.cat(ws)


def draw_log_ratios(
    flow: nn.Module, log_prob: LogDensity, draws: Tensor, batch_size: int = 4096
) -> Tensor:
    """:math:`\\log\\tilde p(x) - \\log q(x)` at given ``draws`` of shape ``(..., D)`` (e.g. MCMC
    draws of the target, for :func:`~pyro_flows.infer.bridge_sampling.bridge_log_Z`), without
    gradients, ``batch_size`` rows at a time; shape ``draws.shape[:-1]``."""
    log_prob = _adapted(log_prob)
    rows = draws.reshape(-1, draws.shape[-1])
    with torch.no_grad():
        out = [evaluate_target(log_prob, x) - flow.log_prob(x) for x in rows.split(batch_size)]
    return torch.cat(out).reshape(draws.shape[:-1])
