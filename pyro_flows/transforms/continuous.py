r"""Continuous normalizing flows (FFJORD, Grathwohl et al., 2019) on ``torchdiffeq``.

The dynamics network (:class:`ODEDynamics`), the augmented system that integrates the state and
its log-determinant together (:class:`AugmentedDynamics`, with the exact trace or Hutchinson's
estimator), and the transform :class:`ContinuousFlow` that solves it in either direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_hidden_dims, check_positive_int
from .base import FlowTransform

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}
_TRACES = ("auto", "exact", "hutchinson")
_NOISES = ("rademacher", "gaussian")
EXACT_TRACE_MAX_DIM = 10
_NOT_TRACEABLE = (
    "ContinuousFlow cannot run under torch.jit.trace (which pyro.infer.JitTrace_ELBO, "
    "JitTraceGraph_ELBO, JitTraceMeanField_ELBO and other Jit* ELBOs use): its adaptive ODE solver "
    "picks the number of steps from the data, and its log-determinant calls torch.autograd.grad "
    "inside the dynamics; a trace can record neither. Use pyro.infer.Trace_ELBO (or another "
    "non-Jit ELBO) and call the flow eagerly."
)

__all__ = ["ContinuousFlow", "ODEDynamics", "AugmentedDynamics", "EXACT_TRACE_MAX_DIM"]


def _torchdiffeq() -> Any:
    try:
        import torchdiffeq
    except ImportError as err:  # pragma: no cover - the dependency is declared
        raise ImportError(
            "ContinuousFlow needs torchdiffeq: pip install 'torchdiffeq>=0.2.3'"
        ) from err
    return torchdiffeq


class ODEDynamics(nn.Module):
    r"""The vector field :math:`f(z, t; c)` of a continuous flow: an MLP with the time
    concatenated to the input of every layer (FFJORD's ``concat`` layers) and the context to the
    first one,

    .. math::

        h_0 = z, \qquad h_l = \sigma\big(W_l [h_{l-1}, t, c_l] + b_l\big), \qquad
        f(z, t; c) = W_L [h_{L-1}, t] + b_L,

    with :math:`c_1 = c` and :math:`c_l` empty for :math:`l > 1`. The last layer starts at
    ``out_scale`` times PyTorch's default weights and a zero bias, so a fresh flow is close to
    the identity. Smooth activations (``"tanh"``, ``"softplus"``, ``"elu"``) keep :math:`f`
    Lipschitz and differentiable, which the ODE solver and the trace need.

    :param input_dim: state size :math:`D`.
    :param hidden_dims: hidden layer sizes.
    :param context_dim: context size, or ``None``.
    :param activation: ``"tanh"``, ``"softplus"`` or ``"elu"``.
    :param out_scale: scale of the last layer's initial weights.

    Cost: one MLP pass per evaluation (the ODE solver calls it many times per solve).

    Example::

        >>> f = ODEDynamics(2, (16, 16))
        >>> f(torch.tensor(0.5), torch.randn(5, 2)).shape
        torch.Size([5, 2])

    References:

    * W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD:
      Free-form Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019,
      arXiv:1810.01367.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        activation: str = "tanh",
        out_scale: float = 1e-1,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.context_dim = context_dim
        hidden = check_hidden_dims(hidden_dims)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}"
            )
        sizes = (self.input_dim, *hidden, self.input_dim)
        self.layers = nn.ModuleList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            extra = 1 + ((context_dim or 0) if i == 0 else 0)
            self.layers.append(nn.Linear(a + extra, b))
        self.activation = _ACTIVATIONS[activation]()
        with torch.no_grad():
            last = self.layers[-1]
            assert isinstance(last, nn.Linear)
            last.weight.mul_(out_scale)
            last.bias.zero_()

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``f(z, t; c)`` for ``z`` of shape ``(N, D)`` and a scalar ``t``."""
        tt = t.to(z).expand(*z.shape[:-1], 1)
        h = z
        for i, layer in enumerate(self.layers):
            parts = [h, tt] if i > 0 or context is None else [h, tt, context]
            h = layer(torch.cat(parts, -1))
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h


class AugmentedDynamics(nn.Module):
    r"""The augmented system of the instantaneous change of variables:

    .. math::

        \frac{d}{dt}\begin{bmatrix} z \\ \ell \\ c \end{bmatrix}
        = \begin{bmatrix} f(z, t; c) \\ \operatorname{tr}\frac{\partial f}{\partial z}
        \\ 0 \end{bmatrix},

    so that :math:`\ell(T) - \ell(0) = \log|\det \partial z(T)/\partial z(0)|`. The trace is
    either exact (one vector-Jacobian product per dimension) or Hutchinson's unbiased estimate
    :math:`\epsilon^\top (\partial f/\partial z)\,\epsilon` with one fixed noise draw
    :math:`\epsilon` (:math:`\mathbb E[\epsilon\epsilon^\top] = I`) per solve, one
    vector-Jacobian product. The context rides along as a constant state, so that the adjoint
    method also returns its gradient.

    Cost: per evaluation, one pass of :math:`f` plus :math:`D` vector-Jacobian products (exact)
    or one (Hutchinson); only the pass of :math:`f` when the log-det is not wanted.

    :param dynamics: the vector field :math:`f`.

    Example::

        >>> aug = AugmentedDynamics(ODEDynamics(2, (8,)))
        >>> dz, dl = aug(torch.tensor(0.0), (torch.randn(3, 2), torch.zeros(3)))
        >>> dz.shape, dl.shape
        (torch.Size([3, 2]), torch.Size([3]))

    References:

    * R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
      Equations", NeurIPS 2018, arXiv:1806.07366 (instantaneous change of variables, adjoint).
    * M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
      Laplacian smoothing splines", Commun. Stat. Simul. Comput. 18(3), 1989.
    """

    def __init__(self, dynamics: ODEDynamics) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.noise: Tensor | None = None  # None: exact trace
        self.with_log_det = True
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        z = state[0]
        context = state[2] if len(state) > 2 else None
        if not self.with_log_det:
            dz = self.dynamics(t, z, context)
            return (dz, *(torch.zeros_like(s) for s in state[1:]))
        need_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (need_graph and z.requires_grad):
                z = z.detach().requires_grad_(True)
            dz = self.dynamics(t, z, context)
            if self.noise is None:
                trace = torch.zeros_like(dz[..., 0])
                last = dz.shape[-1] - 1
                for i in range(last + 1):
                    keep = need_graph or i < last
                    g = torch.autograd.grad(
                        dz[..., i].sum(), z, create_graph=need_graph, retain_graph=keep
                    )[0]
                    trace = trace + g[..., i]
            else:
                g = torch.autograd.grad(dz, z, self.noise, create_graph=need_graph)[0]
                trace = (g * self.noise).sum(-1)
        if not need_graph:
            dz, trace = dz.detach(), trace.detach()
        rest = (torch.zeros_like(state[2]),) if context is not None else ()
        return (dz, trace, *rest)


def _state_norm(state: Any) -> Tensor:
    """RMS norm of the ``z`` part only (the step size ignores the log-det and the context)."""
    z = state[0] if isinstance(state, tuple) else state
    return z.pow(2).mean().sqrt()


class ContinuousFlow(FlowTransform):
    r"""A continuous normalizing flow: the time-:math:`T` map of :math:`dz/dt = f(z, t; c)`.

    FFJORD's free-form transform. The forward (base :math:`\to` data) map integrates the ODE from
    :math:`t = 0` to :math:`T`, the inverse from :math:`T` back to :math:`0`; the log-determinant
    comes from the instantaneous change of variables (Chen et al., 2018),

    .. math::

        y = x + \int_0^T f(z(t), t; c)\,dt, \qquad
        \log\left|\det\frac{\partial y}{\partial x}\right|
        = \int_0^T \operatorname{tr}\frac{\partial f}{\partial z}(z(t), t; c)\,dt,

    integrated together with :math:`z` (:class:`AugmentedDynamics`). :math:`f` is an MLP with
    the time concatenated to each layer (:class:`ODEDynamics`); any Lipschitz :math:`f` gives a
    bijection, so there is no architectural constraint.

    **Trace.** ``trace="exact"`` computes :math:`\operatorname{tr}\partial f/\partial z` with
    :math:`D` vector-Jacobian products per evaluation of :math:`f`. ``trace="hutchinson"`` uses
    :math:`\epsilon^\top(\partial f/\partial z)\epsilon` (Rademacher or Gaussian
    :math:`\epsilon`, drawn once per solve), one vector-Jacobian product, an unbiased estimate of
    the log-det: used **in training mode only**; in eval mode the layer uses the exact trace, so
    reported densities are exact up to the solver tolerance. ``"auto"`` (default) is exact for
    :math:`D \le 10` and Hutchinson (in training) above.

    **Solver and tolerances.** Any ``torchdiffeq`` method (default ``"dopri5"``, adaptive
    Dormand-Prince 5(4)) with relative/absolute tolerances ``rtol``/``atol``, applied to the
    RMS norm of :math:`z` only, so that sampling without the log-det
    (:meth:`forward_without_log_det`) takes exactly the same steps and returns the same sample.
    Float32 raises both tolerances to at least :math:`100\,\varepsilon_{32} \approx 1.2\times
    10^{-5}` (tighter ones cannot be met). The inverse is the same solve backwards in time, so
    the round trip :math:`\mathrm{inv}(\mathrm{fwd}(x)) - x` is of the order of the tolerances
    (measured on a small randomly perturbed 2-D layer: about ``5e-5``, log-dets ``3e-4``, at the
    defaults ``rtol = atol = 1e-5``; ``1.5e-7`` at ``1e-8``; ``2e-9`` at ``1e-10`` in float64);
    the forward and inverse log-dets agree to the same order. Tighten the tolerances where
    external points must be scored to high accuracy.

    **Gradients.** ``adjoint=False`` backpropagates through the solver's operations (fast,
    memory grows with the number of steps); ``adjoint=True`` uses
    ``torchdiffeq.odeint_adjoint``: constant memory, a second (backward-in-time) solve, gradients
    equal to the direct ones up to the tolerances.

    **Tracing.** Not supported: under ``torch.jit.trace`` (so also ``pyro.infer.JitTrace_ELBO``
    and the other ``Jit*`` ELBOs) every solve raises a ``RuntimeError`` that says so, before any
    work: the adaptive solver's step count depends on the data and the trace calls
    ``torch.autograd.grad`` inside the dynamics. Use ``pyro.infer.Trace_ELBO``.

    **Cost.** forward (sampling) and inverse (density): one ODE solve each, i.e. (number of
    steps) :math:`\times` (6 for dopri5) evaluations of :math:`f`, each followed by :math:`D`
    vector-Jacobian products with the exact trace or 1 with Hutchinson; sampling without the
    log-det evaluates :math:`f` only. The number of steps adapts to the tolerances and to how
    stiff :math:`f` has become in training (``nfe`` counts the evaluations of the last solve).

    :param input_dim: event size :math:`D`.
    :param hidden_dims: hidden sizes of :math:`f`.
    :param context_dim: context size, or ``None``.
    :param activation: ``"tanh"`` (default), ``"softplus"`` or ``"elu"``.
    :param time: integration time :math:`T > 0`.
    :param trace: ``"auto"``, ``"exact"`` or ``"hutchinson"``.
    :param noise: Hutchinson noise, ``"rademacher"`` (default, lower variance) or
        ``"gaussian"``.
    :param method: a ``torchdiffeq`` solver name.
    :param rtol: relative tolerance.
    :param atol: absolute tolerance.
    :param adjoint: use the adjoint method for gradients.

    Example::

        >>> flow = ContinuousFlow(2, hidden_dims=(8,))
        >>> x = torch.randn(5, 2)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> x_back, inv_log_det = flow.inverse_and_log_det(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-4)), log_det.shape
        (True, torch.Size([5]))

    References:

    * W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD:
      Free-form Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019,
      arXiv:1810.01367.
    * R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
      Equations", NeurIPS 2018, arXiv:1806.07366.
    * M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
      Laplacian smoothing splines", 1989.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        *,
        activation: str = "tanh",
        time: float = 1.0,
        trace: str = "auto",
        noise: str = "rademacher",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
    ) -> None:
        super().__init__(input_dim, context_dim)
        if trace not in _TRACES:
            raise ValueError(f"trace must be one of {_TRACES}, got {trace!r}")
        if noise not in _NOISES:
            raise ValueError(f"noise must be one of {_NOISES}, got {noise!r}")
        from torchdiffeq._impl.odeint import SOLVERS

        if method not in SOLVERS:
            raise ValueError(f"method must be one of {tuple(SOLVERS)}, got {method!r}")
        for name, value in (("time", time), ("rtol", rtol), ("atol", atol)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        self.hidden_dims = check_hidden_dims(hidden_dims)
        self.trace = trace
        self.noise = noise
        self.method = method
        self.rtol, self.atol, self.time = float(rtol), float(atol), float(time)
        self.adjoint = bool(adjoint)
        self.dynamics = ODEDynamics(self.input_dim, self.hidden_dims, context_dim, activation)
        self._nfe = 0

    @property
    def nfe(self) -> int:
        """Number of evaluations of :math:`f` in the last solve."""
        return self._nfe

    def _uses_hutchinson(self) -> bool:
        if not self.training:
            return False
        if self.trace == "auto":
            return self.input_dim > EXACT_TRACE_MAX_DIM
        return self.trace == "hutchinson"

    def _solve(
        self, x: Tensor, context: Tensor | None, reverse: bool, with_log_det: bool = True
    ) -> tuple[Tensor, Tensor]:
        if torch.jit.is_tracing():
            raise RuntimeError(_NOT_TRACEABLE)
        batch = x.shape[:-1]
        z = x.reshape(-1, self.input_dim)
        state: tuple[Tensor, ...] = (z, torch.zeros(z.shape[0], dtype=x.dtype, device=x.device))
        if context is not None:
            state = (*state, context.reshape(-1, context.shape[-1]))
        # a fresh wrapper per solve: the adjoint's backward pass re-evaluates it later with the
        # same noise, whatever other solves ran in between
        aug = AugmentedDynamics(self.dynamics)
        aug.with_log_det = with_log_det
        if with_log_det and self._uses_hutchinson():
            if self.noise == "gaussian":
                aug.noise = torch.randn_like(z)
            else:
                aug.noise = torch.randint_like(z, 2) * 2 - 1
        if x.numel() == 0:  # an empty batch: nothing to integrate (the solver's step underflows)
            batch = x.shape[:-1]
            return x.clone(), x.new_zeros(batch)
        ends = [self.time, 0.0] if reverse else [0.0, self.time]
        t = torch.tensor(ends, dtype=x.dtype, device=x.device)
        floor = 100 * torch.finfo(x.dtype).eps
        tol = {"rtol": max(self.rtol, floor), "atol": max(self.atol, floor)}
        options = {"norm": _state_norm} if self.method in _ADAPTIVE else None
        tde = _torchdiffeq()
        if self.adjoint:
            params = tuple(p for p in self.dynamics.parameters() if p.requires_grad)
            out = tde.odeint_adjoint(
                aug, state, t, method=self.method, options=options, adjoint_params=params, **tol
            )
        else:
            out = tde.odeint(aug, state, t, method=self.method, options=options, **tol)
        self._nfe = aug.nfe
        y = out[0][-1].reshape(*batch, self.input_dim)
        return y, out[1][-1].reshape(batch)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare(x, context, "x")
        return self._solve(x, context, reverse=False)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare(y, context, "y")
        return self._solve(y, context, reverse=True)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare(x, context, "x")
        return self._solve(x, context, reverse=False, with_log_det=False)[0]

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx|`` as minus the inverse solve's from ``y`` (Pyro scores ``y``)."""
        return -self.inverse_and_log_det(y, context)[1]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_dims={self.hidden_dims}, trace={self.trace!r}, "
            f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, time={self.time}, "
            f"adjoint={self.adjoint}"
        )


_ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")
