r"""The proposal :math:`q` of an AIS run: its draws, and its log density with gradient.

Annealed importance sampling (:mod:`pyro_flows.infer.ais`) starts its particles at
:math:`x_0 \sim q` and moves them by HMC on
:math:`\log f_\beta = (1 - \beta)\log q + \beta\log\tilde p`, which needs :math:`\log q(x)`
and :math:`\nabla_x\log q(x)` at every point a trajectory visits. ``None`` stands for the
standard Normal,

.. math::

    \log q(x) = -\tfrac12\lVert x\rVert^2 - \tfrac D2\log 2\pi, \qquad
    \nabla_x\log q(x) = -x,

drawn from the run's own generator; any other proposal (a :class:`~pyro_flows.Flow`, a
distribution) draws with ``rsample_and_log_prob`` or ``sample`` and is differentiated by
autograd.

References:

- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .results import _draw

__all__: list[str] = []


def _check_proposal(proposal: Any) -> None:
    """Refuse (``TypeError``) a proposal that has no ``log_prob`` or no way to draw."""
    if proposal is None:
        return
    can_draw = callable(getattr(proposal, "rsample_and_log_prob", None)) or callable(
        getattr(proposal, "sample", None)
    )
    if not (can_draw and callable(getattr(proposal, "log_prob", None))):
        raise TypeError(
            "proposal must be None (a standard Normal), a pyro_flows Flow or a distribution with "
            "sample(sample_shape) (or rsample_and_log_prob) and a differentiable log_prob(x), "
            f"got {type(proposal).__name__}"
        )


class _Proposal:
    """The proposal's draws and its log density with gradient; ``None`` is a standard Normal
    drawn from the run's generator."""

    def __init__(self, proposal: Any, dim: int) -> None:
        self.proposal = proposal
        self.dim = dim
        self._log_norm = 0.5 * dim * math.log(2.0 * math.pi)

    def draw(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``n`` draws and their log densities: the standard Normal's from ``generator`` (in
        ``dtype`` on ``device``), a given proposal's from the global RNG (seeded by the caller)."""
        if self.proposal is None:
            assert generator is not None and dtype is not None and device is not None
            x = _draw("randn", (n, self.dim), generator, dtype=dtype, device=device)
            return x, -0.5 * (x * x).sum(-1) - self._log_norm
        if callable(getattr(self.proposal, "rsample_and_log_prob", None)):
            x, log_q = self.proposal.rsample_and_log_prob((n,))
        else:
            x = self.proposal.sample((n,))
            log_q = self.proposal.log_prob(x)
        if not isinstance(x, Tensor) or not isinstance(log_q, Tensor):
            raise TypeError(
                "the proposal must return tensors from sample / log_prob, got "
                f"{type(x).__name__} and {type(log_q).__name__}"
            )
        if x.shape != (n, self.dim) or log_q.shape != (n,):
            raise ValueError(
                f"the proposal must give draws of shape (n, dim) = ({n}, {self.dim}) and log "
                f"densities of shape ({n},), got {tuple(x.shape)} and {tuple(log_q.shape)}"
            )
        return x.detach(), log_q.detach()

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.proposal is None:
            return -0.5 * (x * x).sum(-1) - self._log_norm, -x
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lq = self.proposal.log_prob(xg)
            if not isinstance(lq, Tensor) or lq.shape != x.shape[:-1]:
                raise ValueError(
                    f"the proposal's log_prob must return shape {tuple(x.shape[:-1])}, got "
                    f"{tuple(lq.shape) if isinstance(lq, Tensor) else type(lq).__name__}"
                )
            if not lq.requires_grad:
                raise TypeError(
                    "AIS moves the particles by HMC on (1 - beta) log q + beta log p, but the "
                    "proposal's log_prob(x) is not differentiable in x with torch.autograd"
                )
            (grad,) = torch.autograd.grad(lq.sum(), xg)
        return lq.detach().to(x.dtype), grad.detach().to(x.dtype)
