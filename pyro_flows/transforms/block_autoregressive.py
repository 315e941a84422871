r"""Block neural autoregressive flow (BNAF; De Cao, Titov & Aziz 2019) with a numerical inverse.

One layer is a monotone neural network built into the transform itself: a stack of block
lower-triangular linear layers with positive diagonal blocks and strictly increasing
activations, plus a residual connection that makes it a bijection of :math:`\mathbb{R}^D`. The
network runs in one pass; the other direction is a sequence of scalar monotone root solves. The
maths lives in :mod:`pyro_flows.transforms._block_autoregressive`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._validation import check_hidden_dims
from ._block_autoregressive import (
    ACTIVATIONS,
    RESIDUALS,
    block_masks,
    block_weights,
    log_diag_jacobian,
    network_pass,
    residual_log_det,
    residual_output,
    solve_network,
)
from .base import FlowTransform

__all__ = ["BlockAutoregressive"]

DIRECTIONS = ("density", "sampling")
_INITIAL_GATE = 0.9  # g at initialisation: F = 0.9 u + 0.1 f(u), close to the identity
_FIRST_LOG_SLOPES = (math.log(0.5), math.log(4.0))  # first-layer row norms, log-uniform
_FIRST_BIAS = 3.0  # first-layer biases ~ U(-3, 3): breakpoints spread over the data's range
PARAM_SCALE = 20.0  # default param_scale (see the class docstring, "Parametrisation")
_PYRO_ACTIVATIONS = {"tanh": "tanh", "leakyrelu": "leaky_relu", "leaky_relu": "leaky_relu"}


def _check_param_scale(value: object) -> float:
    """``param_scale`` as a float: a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"param_scale must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"param_scale must be finite, got {value!r}")
    return float(value)


def _check_options(activation: object, residual: object, direction: object) -> str:
    """Validate the string options; return the canonical activation name."""
    key = activation.lower() if isinstance(activation, str) else activation
    if key not in _PYRO_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {ACTIVATIONS} (Pyro's 'LeakyReLU' is accepted too), "
            f"got {activation!r}"
        )
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    kind = _PYRO_ACTIVATIONS[key]  # type: ignore[index]
    if residual is None and kind == "tanh":
        raise ValueError(
            "residual=None with activation='tanh' maps R^D onto a bounded box (tanh bounds every "
            "hidden unit), so the layer would not be a bijection of R^D and its density would not "
            "normalise; use residual='gated' (default) or 'normal', or activation='leaky_relu'"
        )
    return kind


class BlockAutoregressive(FlowTransform):
    r"""Block neural autoregressive flow layer, invertible everywhere, conditional if asked.

    **The network.** With hidden factors :math:`a_0,\dots,a_{L-1}`, layer :math:`l` maps
    :math:`\mathbb{R}^{D a_{l-1}} \to \mathbb{R}^{D a_l}` (:math:`a_{-1} = a_L = 1`) by a
    weight matrix of :math:`D\times D` blocks :math:`W^{(l)}_{ij}` of shape
    :math:`(a_l, a_{l-1})`: zero for :math:`j > i`, free for :math:`j < i`, and
    :math:`\exp V` (positive) on the diagonal; each row is weight-normalised to norm
    :math:`e^{s}` with a learnt :math:`s`. Every layer but the last is followed by the
    activation :math:`\sigma` (``tanh``, or a leaky ReLU of slope :math:`0.01`), strictly
    increasing. So the network output :math:`f_i(u)` depends on :math:`u_{\le i}` only and is
    strictly increasing in :math:`u_i`, with

    .. math::

        \frac{\partial f_i}{\partial u_i} = W^{(L)}_{ii}\,\mathrm{diag}\,\sigma'(z^{(L-1)}_i)
        \,W^{(L-1)}_{ii} \cdots \mathrm{diag}\,\sigma'(z^{(0)}_i)\,W^{(0)}_{ii} > 0,

    computed **exactly** in log space by log-sum-exp log-matrix products (the paper's
    method), so the log-determinant is a sum of logs and stays finite in float32 when the
    products of weights along the chain are far beyond the float32 range and the activations
    fully saturated (each weight itself is computed with its row's largest raw entry divided out
    first, so raw values :math:`V` far beyond 88 are fine too). A context (``context_dim``) adds a
    learnt linear function of the context to the first layer's bias; it moves every
    dimension's map without touching monotonicity.

    **A bijection of** :math:`\mathbb{R}^D`. With tanh the hidden units are bounded, so
    :math:`f` alone (Pyro's ``residual=None``) maps onto a bounded set: not a bijection of
    :math:`\mathbb{R}^D`, and a density through it would not normalise. The layer is therefore

    .. math::

        F(u) = g\,u + (1 - g) f(u)\ \ (\text{``gated''}, g = \mathrm{sigmoid}(\gamma)),
        \qquad F(u) = u + f(u)\ \ (\text{``normal''}),

    whose :math:`i`-th component has slope at least :math:`g > 0` (resp. 1) in :math:`u_i`:
    strictly increasing and unbounded both ways, so :math:`F` is a bijection of
    :math:`\mathbb{R}^D` onto :math:`\mathbb{R}^D` with a lower-triangular Jacobian, and
    :math:`\log|\det F'| = \sum_i \mathrm{logaddexp}(\log g, \log(1-g) + \log f'_i)` (resp.
    :math:`\mathrm{softplus}(\log f'_i)`). ``residual=None`` is allowed with the leaky ReLU
    only: its slopes are at least :math:`0.01^{L}` times the product of the diagonal blocks, so
    :math:`f` itself is onto.

    **Directions.** With ``direction="density"`` (default) the one-pass map :math:`F` is the
    data -> base side (``inverse_and_log_det``, ``log_prob`` in one network pass) and sampling
    (``forward_and_log_det``) inverts it; ``direction="sampling"`` swaps them (Pyro's
    orientation, for variational guides: samples and their log density in one pass).

    **Numerical inverse.** :math:`F(u) = v` is solved for :math:`u_1, u_2, \dots` in turn: given
    :math:`u_{<i}`, :math:`F_i` is a strictly increasing scalar function of :math:`u_i`, and
    the earlier dimensions enter only through constants, so each iteration evaluates dimension
    :math:`i`'s diagonal blocks only. The root is bracketed in closed form: for tanh,
    :math:`|f_i - c_i| \le s_i` (:math:`c_i` the last layer's constant, :math:`s_i` the sum of
    its diagonal block), so :math:`u_i \in [(v_i - (1-g)(c_i + s_i))/g, (v_i - (1-g)(c_i -
    s_i))/g]`; for the leaky ReLU from the slope bounds. The bracket is widened by 1% and
    solved by :func:`~pyro_flows.transforms._root_finding.solve_increasing` (safeguarded
    Newton) under ``no_grad``, started from the Newton step at :math:`u_i = 0`, until
    :math:`|F_i(u_i) - v_i| \le 8\varepsilon(1 + |v_i| + (1-g)|c_i|)` (:math:`\varepsilon` the
    dtype's machine epsilon) or the bracket shrinks to rounding level, at most 100 iterations.
    So the error in :math:`u_i` is that residual over the slope :math:`F'_{ii} \ge g`, or
    :math:`4\varepsilon|u_i|` where :math:`F` is steep; measured on random layers, the round
    trip satisfies :math:`|F(F^{-1}(v)) - v| \le 16\varepsilon(1 + |v| + \max|u| +
    F'_{ii}(1 + |u_i|))` in float64 and float32 (about :math:`10^{-14}` and :math:`10^{-5}`
    relative for moderate values; the tests allow :math:`64\varepsilon`). Roots are
    re-attached with :func:`~pyro_flows.transforms._root_finding.implicit_root`, so the
    inverse has exact implicit-function gradients; the log-det is computed from the
    pre-activations at the roots (exact given the roots).

    **Cost.** One-pass side: one network pass (dense products with zero upper blocks),
    :math:`O(D^2 \sum_l a_l a_{l-1})` per sample, plus the
    log-space Jacobian chain, :math:`O(D \sum_l a_l a_{l-1})`. Solving side: :math:`D`
    sequential scalar solves, each one constant evaluation (the slices of one network pass,
    all of them together cost one pass) and, per solver iteration (typically 3-8), one pass
    through that dimension's blocks, :math:`O(\sum_l a_l a_{l-1})`; :math:`D` Python-level
    steps per call, so it is slow for large :math:`D`.

    **Parametrisation.** The stored tensors are the paper's (and Pyro's) parameters divided by
    a constant :math:`c` = ``param_scale`` (default 20): :math:`V = c\,` ``raw_weights``,
    :math:`s = c\,` ``log_scales`` and :math:`\gamma = c\,` ``gate``; the biases are stored as
    they are. The map is the same for any :math:`c`; what changes is how fast a gradient
    method moves it. Adam moves every stored number by about ``lr`` per step, whatever its
    size. A bias or an ordinary weight of size :math:`O(1/\sqrt{\text{fan-in}})` changes by
    percents per step at ``lr = 2e-3``, but :math:`V` on the diagonal blocks, :math:`s` and
    :math:`\gamma` act through exponentials and need changes of order 1 (a slope 5 times
    steeper is :math:`\Delta s = 1.6`, 800 steps at ``lr = 2e-3``), and :math:`V` below the
    diagonal only sets directions of weight-normalised rows. Without the factor a BNAF trains
    an order of magnitude slower than the other flows at the learning rates they use (the
    paper trains it with ``lr`` between 1e-2 and 1e-1): measured on ``moons`` and
    ``8gaussians`` (5 layers, factors (32, 32), 300 steps of ``lr = 2e-3``), gaps to the oracle
    of +1.0 and +1.4 nats with :math:`c = 1`, +0.11 and +0.24 with 10, +0.07 and +0.11 with 20.
    ``param_scale=1`` gives Pyro's parametrisation (then use a learning rate about 20 times
    larger for the same speed). The factor is tuned for Adam-like optimisers, whose steps do
    not depend on the size of the gradient. With plain SGD it makes the effective step
    :math:`c^2` times larger, so use ``param_scale=1`` there.

    **Initialisation** (in the effective parameters). :math:`V \sim \mathcal{U}(\pm
    \sqrt{6/(a_l + a_{l-1})})` on the diagonal and lower blocks (so the diagonal blocks
    :math:`e^V` are close to 1). The first layer's rows get norms :math:`e^s` log-uniform in
    :math:`[1/2, 4]` and biases :math:`\mathcal{U}(\pm 3)`: units :math:`\tanh(e^s u_i + b)`
    with varied slopes and breakpoints spread over the range of standardised data (with
    biases :math:`\pm 1/\sqrt{a_0}`, Pyro's scale, every unit is nearly the same function of
    :math:`u_i`, and moving them apart costs hundreds of steps: +0.4 and +1.4 nats after 300
    steps in the measurement above). Later rows get norm :math:`a_{l-1}^{-1/2}`: rows of
    :math:`a_{l-1}` nearly equal positive entries of norm 1 would amplify by
    :math:`\sqrt{a_{l-1}}` per layer, so a wide network would start far from the identity
    (5 layers of factors (32, 32): initial NLL 9.3 on standard Normal data against 2.84 for the
    base; now 3.0, and about the same at any width). Hidden biases are
    :math:`\mathcal{U}(\pm 1/\sqrt{a_l})`, the output bias 0. The gate starts at
    :math:`g = 0.9`, so a fresh gated layer is close to the identity (:math:`F = 0.9u + 0.1
    f(u)`; on standard Normal inputs, mean :math:`|F(u) - u|` about 0.05 to 0.07 and
    :math:`|\log\det|` about 0.1 to 0.3). With ``residual="normal"`` the last layer's rows
    start 10 times smaller: :math:`F = u + f` is then a mild expansion (0.03 and 0.08; larger
    starts were measured to learn slower).

    :param input_dim: event size :math:`D` (1 is allowed).
    :param hidden_factors: :math:`a_0, \dots, a_{L-1}`: hidden layer :math:`l` has
        :math:`a_l` units per dimension (Pyro's ``hidden_factors``; :math:`L \ge 1`).
    :param context_dim: context size for a conditional layer.
    :param activation: ``"tanh"`` (default) or ``"leaky_relu"`` (Pyro's ``"LeakyReLU"``).
    :param residual: ``"gated"`` (default), ``"normal"``, or ``None`` (leaky ReLU only).
    :param direction: ``"density"`` (default) or ``"sampling"``: which side is one pass.
    :param param_scale: :math:`c > 0`, the factor between the stored tensors and
        :math:`V, s, \gamma` (see "Parametrisation"); 20 by default, 1 for Pyro's.

    Example::

        >>> layer = BlockAutoregressive(3, hidden_factors=(4, 4))
        >>> y = torch.randn(5, 3)
        >>> x, log_det = layer.inverse_and_log_det(y)  # density direction: one pass
        >>> y_back, _ = layer.forward_and_log_det(x)  # sampling: 3 scalar root solves
        >>> bool(torch.allclose(y_back, y, atol=1e-5)), log_det.shape
        (True, torch.Size([5]))
        >>> cond = BlockAutoregressive(2, (4,), context_dim=3, direction="sampling")
        >>> cond.forward_and_log_det(torch.randn(4, 7, 2), torch.randn(7, 3))[0].shape
        torch.Size([4, 7, 2])

    Differences from Pyro's ``BlockAutoregressive``: any point can be mapped both ways (Pyro's
    raises on the inverse of a point it did not produce), the residual defaults to ``"gated"``
    (``None`` with tanh is refused, see above), the gate is :math:`g` on ``u`` as in Pyro but
    initialised at 0.9, a context is supported, the stored parameters are Pyro's divided by
    ``param_scale`` and the initialisation differs (see above).

    References:

    * N. De Cao, I. Titov, W. Aziz, "Block Neural Autoregressive Flow", UAI 2019,
      arXiv:1904.04676 (the layer, the weight normalisation and the log-space Jacobian).
    * C.-W. Huang, D. Krueger, A. Lacoste, A. Courville, "Neural Autoregressive Flows", ICML
      2018 (monotone neural transformers).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_factors: Sequence[int] = (8, 8),
        context_dim: int | None = None,
        *,
        activation: str = "tanh",
        residual: str | None = "gated",
        direction: str = "density",
        param_scale: float = PARAM_SCALE,
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.hidden_factors = check_hidden_dims(hidden_factors, "hidden_factors")
        if not self.hidden_factors:
            raise ValueError("hidden_factors must have at least one entry, got ()")
        self.activation = _check_options(activation, residual, direction)
        self.residual = residual
        self.direction = direction
        self.param_scale = _check_param_scale(param_scale)
        D = self.input_dim
        sizes = (1, *self.hidden_factors, 1)
        c = self.param_scale
        self.raw_weights = nn.ParameterList()
        self.log_scales = nn.ParameterList()
        self.biases = nn.ParameterList()
        for l, (a_in, a_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            diag, lower = block_masks(D, a_out, a_in)
            self.register_buffer(f"_diag{l}", diag, persistent=False)
            self.register_buffer(f"_lower{l}", lower, persistent=False)
            bound = math.sqrt(6.0 / (a_in + a_out))
            raw = torch.empty(D * a_out, D * a_in).uniform_(-bound, bound)
            self.raw_weights.append(nn.Parameter(raw.masked_fill(~(diag | lower), 0.0) / c))
            if l == 0:  # first hidden units: varied slopes, breakpoints over [-3, 3]-ish
                log_scale = torch.empty(D * a_out).uniform_(*_FIRST_LOG_SLOPES)
                b = torch.empty(D * a_out).uniform_(-_FIRST_BIAS, _FIRST_BIAS)
            else:  # rows of norm a_in^(-1/2): gain about 1 along the diagonal blocks
                log_scale = torch.full((D * a_out,), -0.5 * math.log(a_in))
                b = torch.empty(D * a_out).uniform_(-1.0, 1.0) / math.sqrt(a_out)
            if l == len(sizes) - 2:
                b.zero_()  # the output starts unshifted
                if residual == "normal":
                    log_scale = log_scale + math.log(0.1)
            self.log_scales.append(nn.Parameter(log_scale / c))
            self.biases.append(nn.Parameter(b))
        self.context_net: nn.Linear | None = None
        if self.context_dim is not None:
            self.context_net = nn.Linear(self.context_dim, D * sizes[1], bias=False)
        self.gate: nn.Parameter | None = None
        if residual == "gated":
            logit = math.log(_INITIAL_GATE / (1 - _INITIAL_GATE))
            self.gate = nn.Parameter(torch.tensor(logit / c))

    def _params(self, context: Tensor | None) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """``(weights, log_diags, biases)`` of every layer; the first bias per context row."""
        weights, log_diags, c = [], [], self.param_scale
        for l, (raw, log_scale) in enumerate(zip(self.raw_weights, self.log_scales, strict=True)):
            diag, lower = getattr(self, f"_diag{l}"), getattr(self, f"_lower{l}")
            w, log_diag = block_weights(c * raw, c * log_scale, diag, lower, self.input_dim)
            weights.append(w)
            log_diags.append(log_diag)
        biases = list(self.biases)
        if self.context_net is not None:
            assert context is not None
            biases[0] = biases[0] + self.context_net(context)
        return weights, log_diags, biases

    def _gate(self) -> Tensor | None:
        r"""The gate logit :math:`\gamma` (``param_scale`` times the stored ``gate``)."""
        return None if self.gate is None else self.param_scale * self.gate

    def _one_pass(self, u: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``F(u)`` and ``log|det dF/du|`` in one network pass."""
        weights, log_diags, biases = self._params(context)
        f, pre = network_pass(u, weights, biases, self.activation)
        log_df = log_diag_jacobian(pre, log_diags, self.activation)
        gate = self._gate()
        y = residual_output(u, f, self.residual, gate)
        return y, residual_log_det(log_df, self.residual, gate)

    def _solve(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``u = F^{-1}(v)`` and ``log|det du/dv|`` by ``D`` scalar root solves."""
        weights, log_diags, biases = self._params(context)
        u, log_det = solve_network(
            v, weights, biases, log_diags, self.activation, self.residual, self._gate()
        )
        return u, -log_det

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: a root solve (``direction="density"``) or one pass (``"sampling"``)."""
        x, context = self._prepare_shared_context(x, context, "x")
        return (
            self._one_pass(x, context) if self.direction == "sampling" else self._solve(x, context)
        )

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: one pass (``direction="density"``) or a root solve (``"sampling"``)."""
        y, context = self._prepare_shared_context(y, context, "y")
        return (
            self._one_pass(y, context) if self.direction == "density" else self._solve(y, context)
        )

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx|`` given both ends: one pass on whichever end is the network input."""
        if self.direction == "density":
            return -self.inverse_and_log_det(y, context)[1]
        return self.forward_and_log_det(x, context)[1]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_factors={self.hidden_factors}, "
            f"activation={self.activation!r}, residual={self.residual!r}, "
            f"direction={self.direction!r}, param_scale={self.param_scale:g}"
        )
