r"""Invertible residual layers: i-ResNet (Behrmann et al., 2019) and Residual Flows (Chen et al.,
2019), as one layer :class:`InvertibleResidual` whose options select either recipe.

The maths kernels (spectral normalisation, LipSwish, the closed-form Jacobian, the fixed-point
solver and the log-determinant estimators) are pure functions in
:mod:`pyro_flows.transforms._residual`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._numbers import check_bool, check_finite_number, check_positive_number
from .._validation import check_hidden_dims, check_positive_int
from . import _residual as R
from .base import FlowTransform

__all__ = [
    "ACTIVATIONS",
    "EXACT_MAX_DIM",
    "InvertibleResidual",
    "LOGDET_MODES",
    "MAX_ROULETTE_TERMS",
    "SPECTRAL_NORMS",
]

ACTIVATIONS = ("lipswish", "elu")
LOGDET_MODES = ("exact", "series", "roulette")
SPECTRAL_NORMS = ("exact", "power")
#: ``logdet=None`` means ``"exact"`` up to this ``input_dim``, an estimator above it.
EXACT_MAX_DIM = 16
#: Cap on the number of power-series terms of one Russian-roulette draw.
MAX_ROULETTE_TERMS = 100


@dataclass
class _Net:
    """The normalised network of one call: weights, biases (the first one shifted by the
    context), and the Lipschitz bound :math:`\\prod_l \\min(\\sigma_l, c)` of :math:`g`."""

    weights: list[Tensor]
    biases: list[Tensor]
    lipschitz: Tensor


class InvertibleResidual(FlowTransform):
    r"""Invertible residual block: data :math:`y` and base :math:`x` related by
    :math:`x = y + g(y)`, with :math:`\mathrm{Lip}(g) < 1`.

    :math:`g` is an MLP (``hidden_dims``, activation LipSwish :math:`z\sigma(\beta z)/1.1` with
    a learnt :math:`\beta = \mathrm{softplus}(\cdot)` per layer, or ELU; both 1-Lipschitz) whose
    linear maps are spectrally normalised, :math:`\tilde W_l = W_l/\max(1, \sigma(W_l)/c)`, so
    :math:`\mathrm{Lip}(g) \le \prod_l \|\tilde W_l\|_2 \le c^{L} < 1` (:math:`c` = ``coeff``,
    default 0.97). Then :math:`y \mapsto y + g(y)` is a bijection of :math:`\mathbb{R}^D`
    (Banach's fixed-point theorem) with :math:`\det(I + J_g) > 0`.

    **Directions.** The residual map is on the density side (data -> base), the main use:

    ========================  =============================================================
    direction                 computation and cost per sample
    ========================  =============================================================
    inverse (data -> base,    :math:`x = y + g(y)`: one MLP pass, plus the log-determinant
    ``log_prob``)             :math:`\log\det(I + J_g(y))` (below)
    forward (base -> data,    solve :math:`y = x - g(y)` by fixed-point iteration
    sampling)                 (contraction: :math:`\|y_k - y^*\| \le L^k\|y_0 - y^*\|`),
                              typically 10-100 MLP passes, at most ``max_iter``; the log-det
                              (:math:`-\log\det(I + J_g(y))`) costs one more pass
    ``log_abs_det_jacobian``  one pass at the given :math:`y` (no solve): scoring the
    (log q of own sample)     flow's own samples costs no extra solve
    ========================  =============================================================

    **Fixed-point tolerance.** From :math:`y_0 = x`, each sample iterates
    :math:`y_{k+1} = x - g(y_k)` until the a-posteriori (Banach) bound
    :math:`\|y_{k+1} - y^*\|_2 \le \frac{L}{1-L}\|y_{k+1} - y_k\|_2 \le
    \mathrm{tol}\,(1 + \|y_{k+1}\|_2)`, with :math:`L = \prod_l \min(\sigma_l, c)` and ``tol``
    = ``inverse_tol`` (default :math:`16\varepsilon`: :math:`3.6\times10^{-15}` in float64,
    :math:`1.9\times10^{-6}` in float32), or until its step stops shrinking (rounding level);
    at most ``max_iter`` (default 1000) iterations, then one more step :math:`y = x - g(y^*)`
    carries the gradient. Gradients are implicit-function gradients
    :math:`\partial y/\partial\theta = -(I + J_g)^{-1}\partial g/\partial\theta`, the
    transposed solve done by the same iteration in the backward pass (no backpropagation
    through the iterations; first-order gradients only in this direction).

    **Log-determinant** (``logdet``):

    * ``"exact"``: :math:`J_g` in closed form (:math:`J_g = \tilde W_L\,\mathrm{diag}(a'_{L-1})
      \cdots\mathrm{diag}(a'_1)\,\tilde W_1`, :math:`O(D\,H^2)` per sample) and ``slogdet``
      (:math:`O(D^3)`); the default for ``input_dim <= 16`` (:data:`EXACT_MAX_DIM`).
    * ``"series"`` (i-ResNet): :math:`\sum_{k=1}^{n}(-1)^{k+1}\,v^\top J_g^k v/k` with
      ``n_probes`` Rademacher vectors :math:`v` and ``n_terms`` terms (``n_terms`` vector-Jacobian
      products); biased by the truncation, :math:`|\text{bias}| \le D\sum_{k>n} L^k/k`.
    * ``"roulette"`` (Residual Flows): the first ``n_exact_terms`` terms, then
      :math:`N \sim \mathrm{Geometric}(p)` more, term :math:`k` divided by :math:`P(N \ge
      k - m)`: unbiased for :math:`\log\det(I+J_g)` (:math:`m + (1-p)/p` products on average,
      :math:`N` capped at :data:`MAX_ROULETTE_TERMS`); the variance is finite when
      :math:`L^2 < 1-p`. As in Chen et al., one :math:`N` is drawn per probe and shared by the
      whole batch (the cost of a call is then fixed), so the estimates of one call are
      correlated: average over calls, not only over a batch, to reduce the error. With
      ``neumann_gradient`` its gradient is the unbiased Neumann-series estimate of Chen et al.
      (terms computed without a graph: memory independent of :math:`N`).
      The default for ``input_dim > 16``.

    **What is exact.** ``sample``/``rsample``: exact in every mode (a deterministic solve, to
    the tolerance above). ``log_prob`` and the log density returned with a sample: exact with
    ``logdet="exact"``; a biased estimate with ``"series"``; an unbiased estimate of the log
    density with ``"roulette"`` (not of the density). Estimates draw fresh probes per call from
    torch's RNG, or, with ``seed``, the same probes every call (reproducible, e.g. for
    evaluation; training needs fresh ones), so forward and inverse log-dets are then only
    approximately opposite.

    **Spectral norm** (``spectral_norm``): ``"exact"`` (default) computes :math:`\sigma(W_l)`
    by ``svdvals`` each call (:math:`O(\min(m,n)^2\max(m,n))` per map): the bound holds exactly
    and the layer is a deterministic function of its parameters in train and eval modes.
    ``"power"`` keeps power-iteration vectors as buffers, runs ``n_power_iterations`` steps per
    call in training mode only (eval mode is deterministic), warm-started: cheaper for wide
    layers, but :math:`\sigma` is under-estimated until the iteration has converged, so the
    bound (and invertibility) holds only approximately just after large weight changes.

    **Context.** With ``context_dim``, the context enters the first layer,
    :math:`W_1 y + V c + b_1`, with :math:`V` unconstrained: :math:`g` stays
    :math:`c^L`-Lipschitz in :math:`y` for each context, so the layer is invertible in
    :math:`y`; the term :math:`Vc` is computed once per context row.

    **Initialisation.** PyTorch's ``Linear`` initialisation, the last layer scaled by
    :math:`10^{-2}` with a zero bias: the layer starts close to the identity.

    :param input_dim: event size :math:`D`.
    :param hidden_dims: hidden sizes of :math:`g` (at least one).
    :param context_dim: context size, or ``None``.
    :param activation: ``"lipswish"`` or ``"elu"``.
    :param logdet: ``"exact"``, ``"series"``, ``"roulette"`` or ``None`` (see above).
    :param coeff: :math:`c \in (0, 1)`, the bound on each normalised map's spectral norm.
    :param spectral_norm: ``"exact"`` or ``"power"``.
    :param n_power_iterations: power iterations per training-mode call (``"power"`` only).
    :param n_terms: series terms (``"series"``).
    :param n_probes: Hutchinson vectors per sample (``"series"``, ``"roulette"``).
    :param geom_p: :math:`p` of the geometric number of roulette terms.
    :param n_exact_terms: terms always computed by the roulette estimator.
    :param neumann_gradient: use the Neumann-series gradient for ``"roulette"``.
    :param seed: seed the probes of every call (reproducible estimates), or ``None``.
    :param inverse_tol: fixed-point tolerance (relative, see above); ``None`` for
        :math:`16\varepsilon` of the dtype.
    :param max_iter: cap on fixed-point iterations (forward solve and its backward solve).

    Example::

        >>> layer = InvertibleResidual(2, hidden_dims=(16,))
        >>> y = torch.randn(5, 2)
        >>> x, log_det = layer.inverse_and_log_det(y)
        >>> y_back, fwd_log_det = layer.forward_and_log_det(x)
        >>> bool(torch.allclose(y_back, y, atol=1e-5)), bool(torch.allclose(fwd_log_det, -log_det))
        (True, True)
        >>> big = InvertibleResidual(32, hidden_dims=(16,), logdet="roulette", seed=0)
        >>> big.inverse_and_log_det(torch.randn(3, 32))[1].shape
        torch.Size([3])

    References:

    * J. Behrmann, W. Grathwohl, R. T. Q. Chen, D. Duvenaud, J.-H. Jacobsen, "Invertible
      Residual Networks", ICML 2019, arXiv:1811.00995.
    * R. T. Q. Chen, J. Behrmann, D. Duvenaud, J.-H. Jacobsen, "Residual Flows for Invertible
      Generative Modeling", NeurIPS 2019, arXiv:1906.02735.
    * T. Miyato, T. Kataoka, M. Koyama, Y. Yoshida, "Spectral Normalization for Generative
      Adversarial Networks", ICLR 2018 (power iteration).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        *,
        activation: str = "lipswish",
        logdet: str | None = None,
        coeff: float = 0.97,
        spectral_norm: str = "exact",
        n_power_iterations: int = 5,
        n_terms: int = 10,
        n_probes: int = 1,
        geom_p: float = 0.5,
        n_exact_terms: int = 2,
        neumann_gradient: bool = True,
        seed: int | None = None,
        inverse_tol: float | None = None,
        max_iter: int = 1000,
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        if not self.hidden_dims:
            raise ValueError("InvertibleResidual needs at least one hidden layer, got ()")
        self.activation = _choice(activation, ACTIVATIONS, "activation")
        if logdet is None:
            logdet = "exact" if self.input_dim <= EXACT_MAX_DIM else "roulette"
        self.logdet = _choice(logdet, LOGDET_MODES, "logdet")
        self.spectral_norm = _choice(spectral_norm, SPECTRAL_NORMS, "spectral_norm")
        self.coeff = check_finite_number(coeff, "coeff")
        if not 0 < self.coeff < 1:
            raise ValueError(f"coeff must be in (0, 1), got {self.coeff}")
        self.n_power_iterations = check_positive_int(n_power_iterations, "n_power_iterations")
        self.n_terms = check_positive_int(n_terms, "n_terms")
        self.n_probes = check_positive_int(n_probes, "n_probes")
        self.geom_p = check_finite_number(geom_p, "geom_p")
        if not 0 < self.geom_p < 1:
            raise ValueError(f"geom_p must be in (0, 1), got {self.geom_p}")
        self.n_exact_terms = check_positive_int(n_exact_terms, "n_exact_terms", minimum=0)
        if self.n_exact_terms >= MAX_ROULETTE_TERMS:
            raise ValueError(f"n_exact_terms must be < {MAX_ROULETTE_TERMS}, got {n_exact_terms}")
        self.neumann_gradient = check_bool(neumann_gradient, "neumann_gradient")
        self.seed = None if seed is None else check_positive_int(seed, "seed", minimum=0)
        self.inverse_tol = (
            None if inverse_tol is None else check_positive_number(inverse_tol, "inverse_tol")
        )
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self._build_parameters()

    def _build_parameters(self) -> None:
        d, c = self.input_dim, self.context_dim or 0
        sizes = (d, *self.hidden_dims, d)
        weights, biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            linear = nn.Linear(fan_in + (c if i == 0 else 0), fan_out)
            weights.append(linear.weight.detach().clone())
            biases.append(linear.bias.detach().clone())
        weights[-1].mul_(1e-2)
        biases[-1].zero_()
        if self.context_dim is not None:
            self.context_weight = nn.Parameter(weights[0][:, d:].clone())
            weights[0] = weights[0][:, :d].clone()
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)
        if self.activation == "lipswish":  # softplus(raw) = 0.974, Chen et al.'s initial beta
            self.beta_raw = nn.Parameter(torch.full((len(self.hidden_dims),), 0.5))
        if self.spectral_norm == "power":
            for i, w in enumerate(weights):
                self.register_buffer(f"_u{i}", F.normalize(torch.randn(w.shape[0]), dim=0))

    # -- the network ---------------------------------------------------------------------------
    def _sigma(self, i: int, weight: Tensor, update: bool = True) -> Tensor:
        if self.spectral_norm == "exact":
            return R.spectral_norm_exact(weight)
        u_buffer: Tensor = getattr(self, f"_u{i}")
        if self.training and update:
            u, _ = R.power_iteration(weight, u_buffer, self.n_power_iterations)
            with torch.no_grad():
                u_buffer.copy_(u)
        u, v = R.power_iteration(weight, u_buffer.clone(), 0)  # (a clone: the graph keeps it)
        return u @ weight @ v

    def _net(self, context: Tensor | None, update: bool = True) -> _Net:
        weights, sigmas = [], []
        for i, w in enumerate(self.weights):
            sigma = self._sigma(i, w, update)
            weights.append(R.spectral_normalise(w, sigma, self.coeff))
            sigmas.append(sigma.detach())
        # a tensor, not a float: no host sync, and a traced module keeps it live
        lipschitz = torch.stack(sigmas).clamp_max(self.coeff).prod().clamp_max(self.coeff)
        biases = list(self.biases)
        if context is not None:
            biases[0] = biases[0] + context @ self.context_weight.t()
        return _Net(weights, biases, lipschitz)

    def _act(self, i: int, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.activation == "elu":
            return R.elu(z)
        return R.lipswish(z, F.softplus(self.beta_raw[i]))

    def _g(self, y: Tensor, net: _Net) -> tuple[Tensor, list[Tensor]]:
        return R.mlp_forward(y, net.weights, net.biases, self._act)

    def lipschitz_bound(self) -> float:
        r"""The bound :math:`\prod_l \min(\sigma(W_l), c)` on :math:`\mathrm{Lip}(g)` (with
        ``spectral_norm="power"``, from the current estimates of :math:`\sigma`, which this
        does not update)."""
        with torch.no_grad():
            return float(self._net(None, update=False).lipschitz)

    # -- log-determinant -----------------------------------------------------------------------
    def _generator(self, like: Tensor) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=like.device).manual_seed(self.seed)

    def _log_det(self, net: _Net, derivs: list[Tensor], y: Tensor) -> Tensor:
        r""":math:`\log\det(I + J_g(y))`, exact or estimated according to ``logdet``."""
        if self.logdet == "exact":
            return R.logdet_exact(R.mlp_jacobian(net.weights, derivs))
        gen = self._generator(y)
        probes = R.rademacher((self.n_probes, *y.shape), y, gen)
        if self.logdet == "series":
            coeffs = R.series_coefficients(self.n_terms, y)
        else:
            coeffs = R.roulette_coefficients(
                self.n_probes, self.geom_p, self.n_exact_terms, MAX_ROULETTE_TERMS, y, gen
            )

        def vjp(w: Tensor) -> Tensor:
            return R.mlp_vjp(w, net.weights, derivs)

        if self.logdet == "roulette" and self.neumann_gradient and torch.is_grad_enabled():
            return R.neumann_logdet(vjp, probes, coeffs)
        return R.hutchinson_logdet(vjp, probes, coeffs)

    # -- the two directions --------------------------------------------------------------------
    def _tol(self, like: Tensor) -> float:
        if self.inverse_tol is not None:
            return self.inverse_tol
        return 16 * torch.finfo(like.dtype).eps

    def _solve(self, x: Tensor, net: _Net) -> Tensor:
        """``y`` with ``y + g(y) = x``: the fixed point, then one differentiable step."""
        tol = self._tol(x)
        y_star, _ = R.fixed_point(
            lambda y: x - self._g(y, net)[0], x, net.lipschitz, tol, self.max_iter
        )
        g, derivs = self._g(y_star, net)
        weights = [w.detach() for w in net.weights]
        derivs = [d.detach() for d in derivs]
        return R.attach_implicit_gradient(
            x - g,
            lambda w: R.mlp_vjp(w, weights, derivs),
            net.lipschitz,
            tol,
            self.max_iter,
        )

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: solve ``y + g(y) = x``; ``-log det(I + J_g(y))``."""
        x, context = self._prepare_shared_context(x, context, "x")
        net = self._net(context)
        y = self._solve(x, net)
        return y, -self._log_det(net, self._g(y, net)[1], y)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Base -> data (sampling) without the log-determinant."""
        x, context = self._prepare_shared_context(x, context, "x")
        return self._solve(x, self._net(context))

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = y + g(y)`` (one pass); ``log det(I + J_g(y))``."""
        y, context = self._prepare_shared_context(y, context, "y")
        net = self._net(context)
        g, derivs = self._g(y, net)
        return y + g, self._log_det(net, derivs, y)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx| = -log det(I + J_g(y))`` from ``y`` (one pass, no solve)."""
        y, context = self._prepare_shared_context(y, context, "y")
        net = self._net(context)
        return -self._log_det(net, self._g(y, net)[1], y)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_dims={self.hidden_dims}, "
            f"activation={self.activation!r}, logdet={self.logdet!r}, coeff={self.coeff}, "
            f"spectral_norm={self.spectral_norm!r}"
        )


def _choice(value: object, options: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
