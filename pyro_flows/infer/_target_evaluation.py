r"""An unnormalised target density as :func:`~pyro_flows.infer.fit_target.fit_target` sees it:
read once at the flow's dimension, checked on every evaluation, and weighed against the flow.

For draws :math:`x_i \sim q` the log importance weights are

.. math::

    \log w_i = \log\tilde p(x_i) - \log q(x_i), \qquad
    \log\hat Z = \log\frac1n\sum_i w_i, \qquad
    \mathrm{ESS}/n = \frac{(\sum_i w_i)^2}{n\sum_i w_i^2};

a target that returns the wrong shape or NaN/inf where the flow puts mass is a
:class:`TargetError` naming what came back (:func:`evaluate_target`), and a target on a
constrained support (``target.support``) is refused unless the flow was pushed onto it
(:func:`check_support`).

>>> import torch
>>> log_prob = lambda z: -0.5 * (z ** 2).sum(-1)
>>> evaluate_target(log_prob, torch.zeros(3, 2)).shape
torch.Size([3])
>>> evaluate_target(lambda z: z, torch.zeros(3, 2))
Traceback (most recent call last):
...
pyro_flows.infer.fit_target.TargetError: target log density returned shape (3, 2) for samples of shape (3, 2); expected (3,) (one value per sample)
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

LogDensity = Callable[[Tensor], Tensor]


class TargetError(ValueError):
    """The target returned something other than finite log densities of shape ``(batch,)``."""

    # its public home (``pyro_flows.infer.fit_target``, which re-exports it) is the name
    # tracebacks, pickles and the documentation use
    __module__ = "pyro_flows.infer.fit_target"


def log_density(target: Any) -> tuple[LogDensity, int | None, Any]:
    """``(log_prob, dim or None, support)`` of a target object or callable.

    The target is read by :func:`~pyro_flows.infer.results.as_target` (as the samplers read
    it) at the dimension of the points it is first given, the flow's: an error it raises on
    that first evaluation (a target written for another dimension), an output that is not real
    log densities of shape ``x.shape[:-1]``, or points on another device than the target's is a
    :class:`TargetError` naming what was given and what came back.
    """
    from .results import TargetOutputError, as_target, target_dim

    dim = target_dim(target)  # TypeError for what is neither callable nor has a log_prob
    read: dict[int, Any] = {}

    def log_prob(x: Tensor) -> Tensor:
        if x.shape[-1] not in read:  # read once, at the flow's dimension
            read[x.shape[-1]] = as_target(target, x.shape[-1])
        try:
            return read[x.shape[-1]](x)
        except TargetOutputError as err:
            raise TargetError(str(err)) from err

    return log_prob, dim, getattr(target, "support", None)


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


def evaluate_target(log_prob: LogDensity, x: Tensor) -> Tensor:
    """``log_prob(x)`` checked: shape ``x.shape[:-1]``, finite; otherwise :class:`TargetError`
    naming what came back."""
    value = log_prob(x)
    if not isinstance(value, Tensor):
        raise TargetError(f"target log density must return a Tensor, got {type(value).__name__}")
    if value.shape != x.shape[:-1]:
        raise TargetError(
            f"target log density returned shape {tuple(value.shape)} for samples of shape "
            f"{tuple(x.shape)}; expected {tuple(x.shape[:-1])} (one value per sample)"
        )
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        first = x.reshape(-1, x.shape[-1])[bad[0]].detach().tolist()
        raise TargetError(
            f"target log density returned {int(bad.numel())} non-finite value(s) "
            f"({value.reshape(-1)[bad[0]].item()} at x = {[round(v, 4) for v in first]}); "
            "a target must be finite wherever the flow can put mass (restrict the flow to the "
            "target's support with onto_support)"
        )
    return value


@torch.no_grad()
def importance_weights(
    flow: nn.Module, log_prob: LogDensity, num_samples: int, batch_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Samples ``x ~ q`` and log importance weights :math:`\\log\\tilde p(x) - \\log q(x)`."""
    xs, ws = [], []
    left = num_samples
    while left > 0:
        n = min(batch_size, left)
        x, log_q = flow.rsample_and_log_prob((n,))
        ws.append(evaluate_target(log_prob, x) - log_q)
        xs.append(x)
        left -= n
    return torch.cat(xs), torch.cat(ws)
