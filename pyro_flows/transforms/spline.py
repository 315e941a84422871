r"""Neural spline flows: rational-quadratic spline layers with linear tails.

Each layer maps every dimension through its own monotone rational-quadratic spline with
``num_bins`` bins on :math:`[-B, B]` (``bound``) and the identity outside, whose
:math:`3K - 1` parameters (:math:`K` widths, :math:`K` heights, :math:`K - 1` inner-knot
derivatives) come from a conditioner network:

- :class:`SplineCoupling`: the parameters of :math:`x_b` come from :math:`x_a` (an MLP), as in
  RealNVP; one pass in each direction.
- :class:`SplineAutoregressive` (MAF direction) and :class:`InverseSplineAutoregressive` (IAF
  direction): the parameters of dimension :math:`i` come from the dimensions before it (a MADE).

The maths lives in :mod:`pyro_flows.transforms._spline` as pure functions
(:func:`~pyro_flows.transforms._spline.rational_quadratic_spline`). With all network outputs zero
the spline is the identity, and the conditioners start with small outputs, so a fresh layer is
close to the identity. The tails are the identity with log-determinant 0, so inputs far outside
the bound (float32 up to any magnitude) stay finite in values and gradients.

Every layer also accepts ``count_bins=``, Pyro's name for ``num_bins`` (one of the two, or both
equal; different values are a ``ValueError``). The elementwise splines with their own parameters
(Pyro's ``Spline`` and ``ConditionalSpline``) live in
:mod:`pyro_flows.transforms.elementwise_spline`.

References: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019;
Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
NeurIPS 2017; Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_positive_int
from ..nn.made import MADE
from ._directions import DensityInOnePass, SamplingInOnePass
from ._spline import rational_quadratic_spline
from .base import FlowTransform
from .coupling import CouplingTransform

DEFAULT_NUM_BINS = 8


def resolve_num_bins(
    num_bins: int | None, count_bins: int | None, default: int = DEFAULT_NUM_BINS
) -> int:
    """The number of bins from ``num_bins`` or its alias ``count_bins`` (Pyro's name).

    Either may be given, or both with the same value; ``default`` when neither is.

    :raises ValueError: if both are given with different values.

    >>> resolve_num_bins(None, 16), resolve_num_bins(6, None), resolve_num_bins(None, None)
    (16, 6, 8)
    """
    if num_bins is not None and count_bins is not None and num_bins != count_bins:
        raise ValueError(
            "num_bins and count_bins are two names for the number of bins (count_bins is "
            f"Pyro's): give one, got num_bins={num_bins!r} and count_bins={count_bins!r}"
        )
    if num_bins is not None:
        return num_bins
    return default if count_bins is None else count_bins


def _check_spline_options(num_bins: int, bound: float) -> tuple[int, float]:
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        raise TypeError(
            f"bound must be a positive finite number, got {type(bound).__name__} ({bound!r})"
        )
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    return num_bins, float(bound)


def _split(params: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Parameter-major ``(..., 3K - 1, N)`` -> unnormalised widths ``(..., K, N)``, heights
    ``(..., K, N)`` and inner-knot derivatives ``(..., K - 1, N)`` (views)."""
    # split, not slicing: its backward is one concatenation instead of a zero-filled
    # full-size gradient per slice
    widths, heights, derivatives = params.split([num_bins, num_bins, num_bins - 1], dim=-2)
    return widths, heights, derivatives


class SplineCoupling(CouplingTransform):
    r"""Rational-quadratic spline coupling (NSF-C): :math:`y_a = x_a,\ y_b = g_\theta(x_b)`.

    Each entry of :math:`x_b` goes through its own monotone rational-quadratic spline with
    ``num_bins`` bins on :math:`[-B, B]` and identity tails, :math:`\theta = \mathrm{MLP}(x_a, c)`
    (:math:`3K - 1` parameters per entry), and
    :math:`\log|\det J| = \sum_i \log g_{\theta,i}'(x_{b,i})`. On bin :math:`k` with
    :math:`\xi = (x - x^{(k)}) / w_k`, slope :math:`s_k = h_k / w_k` and knot derivatives
    :math:`\delta^{(k)}`,

    .. math::

        g(x) = y^{(k)} + h_k\,\frac{s_k\xi^2 + \delta^{(k)}\xi(1-\xi)}
            {s_k + (\delta^{(k)} + \delta^{(k+1)} - 2s_k)\,\xi(1-\xi)},

    and the inverse is the root of a quadratic in :math:`\xi` (closed form, exact).

    Cost: forward (sampling) 1 conditioner pass; inverse (density) 1 conditioner pass; both
    :math:`O(K)` extra per entry.

    :param input_dim: event size ``D >= 2``.
    :param hidden_dims: hidden sizes of the conditioner MLP.
    :param num_bins: number of bins ``K`` (default 8).
    :param bound: the spline acts on ``[-bound, bound]``; identity outside.
    :param split_dim: size of the unchanged part ``x_a`` (default ``D // 2``).
    :param context_dim: context size for a conditional layer.
    :param activation: activation module class of the conditioner.
    :param count_bins: Pyro's name for ``num_bins`` (give one of the two, or both equal).

    Example::

        >>> t = SplineCoupling(4, hidden_dims=(32,), num_bins=6, context_dim=2)
        >>> x, c = torch.randn(8, 4), torch.randn(8, 2)
        >>> y, log_det = t.forward_and_log_det(x, c)
        >>> x_back, inv_log_det = t.inverse_and_log_det(y, c)
        >>> torch.allclose(x_back, x, atol=1e-5), log_det.shape
        (True, torch.Size([8]))

    Reference: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        num_bins: int | None = None,
        bound: float = 5.0,
        split_dim: int | None = None,
        context_dim: int | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
        *,
        count_bins: int | None = None,
    ) -> None:
        num_bins, bound = _check_spline_options(resolve_num_bins(num_bins, count_bins), bound)
        self.num_bins = num_bins
        self.bound = bound
        self.num_params = 3 * num_bins - 1
        super().__init__(input_dim, hidden_dims, split_dim, context_dim, activation)

    def _params(self, x_a: Tensor, context: Tensor | None) -> tuple[Tensor, ...]:
        """Widths ``(..., K, D - split_dim)``, heights (same) and derivatives
        ``(..., K - 1, D - split_dim)``: parameter-major, as the spline's ``bin_dim=-2``."""
        out = self.conditioner(x_a, context)
        return _split(
            out.unflatten(-1, (self.num_params, self.input_dim - self.split_dim)), self.num_bins
        )

    def _spline(
        self, v: Tensor, params: tuple[Tensor, ...], inverse: bool
    ) -> tuple[Tensor, Tensor]:
        out, log_det = rational_quadratic_spline(v, *params, self.bound, inverse, bin_dim=-2)
        return out, log_det.sum(-1)

    def _elementwise_forward(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return self._spline(x_b, params, inverse=False)

    def _elementwise_inverse(
        self, y_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return self._spline(y_b, params, inverse=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_bins={self.num_bins}, bound={self.bound}"


class _SplineAutoregressive(FlowTransform):
    """``v_i = g(u_i; theta(u_<i))``: one MADE pass for ``u -> v``, ``D`` passes for ``v -> u``."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        num_bins: int | None = None,
        bound: float = 5.0,
        context_dim: int | None = None,
        input_order: Sequence[int] | None = None,
        activation: Callable[[Tensor], Tensor] = F.relu,
        *,
        count_bins: int | None = None,
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.num_bins, self.bound = _check_spline_options(
            resolve_num_bins(num_bins, count_bins), bound
        )
        self.made = MADE(
            input_dim,
            hidden_dims,
            param_dims=(3 * self.num_bins - 1,),
            context_dim=context_dim,
            input_order=input_order,
            activation=activation,
        )

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """MADE's ``(..., D, 3K - 1)`` output is a view of parameter-major memory: transpose
        back to ``(..., 3K - 1, D)`` (free) and split."""
        return _split(params.transpose(-1, -2), self.num_bins)

    def _one_pass(self, u: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``v`` and ``log|dv/du|`` in one MADE pass."""
        (params,) = self.made(u, context)
        v, log_det = rational_quadratic_spline(u, *self._split(params), self.bound, bin_dim=-2)
        return v, log_det.sum(-1)

    def _solve(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``u`` and ``log|du/dv|`` in ``D`` MADE passes (the first ``k`` dimensions are exact
        after ``k`` passes; the last pass reads only exact inputs, so its log-det is final)."""
        weights = self.made.masked_weights()
        u = v  # any start works: pass k makes dimension k exact
        for _ in range(self.input_dim):
            (params,) = self.made(u, context, weights)
            u, log_det = rational_quadratic_spline(
                v, *self._split(params), self.bound, inverse=True, bin_dim=-2
            )
        return u, log_det.sum(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_bins={self.num_bins}, bound={self.bound}"


class SplineAutoregressive(DensityInOnePass, _SplineAutoregressive):
    r"""Autoregressive rational-quadratic spline layer (NSF-AR), MAF direction: the density is one
    MADE pass on the data.

    With :math:`y` the data side and :math:`x` the base side, every dimension goes through its
    own monotone rational-quadratic spline (``num_bins`` bins on :math:`[-B, B]`, identity
    tails) whose parameters a MADE reads from the data dimensions before it:

    .. math::

        x_i = g\big(y_i;\ \theta_i(y_{<i}, c)\big), \qquad
        \log\left|\det\frac{\partial x}{\partial y}\right| = \sum_i \log g'\big(y_i;\
        \theta_i(y_{<i}, c)\big).

    Maximum-likelihood training is fast; sampling solves :math:`y_i = g^{-1}(x_i;\
    \theta_i(y_{<i}))` in ``input_dim`` passes (each a closed-form spline inverse). Both
    Jacobians are lower triangular in ``input_order``.

    Cost: inverse (density, data -> base): 1 MADE pass; forward (sampling): ``input_dim``
    MADE passes; both :math:`O(K)` extra per entry.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param num_bins: number of bins ``K``, default 8 (:math:`3K - 1` MADE outputs per
        dimension).
    :param bound: the splines act on ``[-bound, bound]``; identity outside.
    :param context_dim: context size for a conditional layer.
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.
    :param count_bins: Pyro's name for ``num_bins`` (give one of the two, or both equal).

    Example::

        >>> t = SplineAutoregressive(3, hidden_dims=(16,), num_bins=4)
        >>> y = torch.randn(5, 3)
        >>> x, log_det = t.inverse_and_log_det(y)  # one pass
        >>> torch.allclose(t(x), y, atol=1e-5)  # sampling direction: 3 passes
        True

    References: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019;
    Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
    NeurIPS 2017.
    """


class InverseSplineAutoregressive(SamplingInOnePass, _SplineAutoregressive):
    r"""Autoregressive rational-quadratic spline layer, IAF direction: sampling is one MADE pass
    on the base sample.

    .. math::

        y_i = g\big(x_i;\ \theta_i(x_{<i}, c)\big), \qquad
        \log\left|\det\frac{\partial y}{\partial x}\right| = \sum_i \log g'\big(x_i;\
        \theta_i(x_{<i}, c)\big),

    with :math:`g` a monotone rational-quadratic spline (``num_bins`` bins on :math:`[-B, B]`,
    identity tails). Drawing samples and scoring them
    (:meth:`~pyro_flows.Flow.rsample_and_log_prob`) is fast: the variational-inference direction.
    Scoring an external point solves the recursion in ``input_dim`` passes. The Jacobian is lower
    triangular in ``input_order``.

    Cost: forward (sampling, base -> data): 1 MADE pass; inverse (density): ``input_dim``
    MADE passes; both :math:`O(K)` extra per entry.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param num_bins: number of bins ``K``, default 8 (:math:`3K - 1` MADE outputs per
        dimension).
    :param bound: the splines act on ``[-bound, bound]``; identity outside.
    :param context_dim: context size for a conditional layer (amortized posterior).
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.
    :param count_bins: Pyro's name for ``num_bins`` (give one of the two, or both equal).

    Example::

        >>> t = InverseSplineAutoregressive(3, hidden_dims=(16,), context_dim=2)
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> y, log_det = t.forward_and_log_det(x, c)  # one pass
        >>> torch.allclose(t.inverse_and_log_det(y, c)[0], x, atol=1e-5)  # 3 passes
        True

    References: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019;
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational Inference with
    Inverse Autoregressive Flow", NeurIPS 2016.
    """


def spline_coupling(
    input_dim: int,
    split_dim: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int | None = None,
    bound: float = 3.0,
    *,
    num_bins: int | None = None,
) -> SplineCoupling:
    r"""A :class:`SplineCoupling` with Pyro's ``spline_coupling`` signature and defaults:
    :math:`y_a = x_a,\ y_b = g_\theta(x_b)` with :math:`\theta = \mathrm{MLP}(x_a)`,
    ``split_dim = input_dim // 2``, hidden sizes ``[10 input_dim, 10 input_dim]``,
    ``count_bins`` 8, ``bound`` 3.

    Unlike Pyro's, the first ``split_dim`` coordinates pass through unchanged (Pyro also maps
    them through an elementwise rational-linear spline: put a
    :class:`~pyro_flows.transforms.elementwise_spline.Spline` before this layer for that), and
    the spline on the others is rational-quadratic (Pyro's is rational-linear).

    Cost: one MLP pass in each direction; both exact (closed form).

    >>> t = spline_coupling(2, count_bins=16)
    >>> t.num_bins, t.bound, t.split_dim
    (16, 3.0, 1)
    """
    input_dim = check_positive_int(input_dim, "input_dim")
    if hidden_dims is None:
        hidden_dims = (10 * input_dim, 10 * input_dim)
    return SplineCoupling(
        input_dim,
        hidden_dims,
        resolve_num_bins(num_bins, count_bins),
        bound,
        split_dim,
    )
