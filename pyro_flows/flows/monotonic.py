"""The unconstrained monotonic neural autoregressive flow builder (UNAF / UMNN-MAF)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..flow import Flow
from ..transforms.monotonic import UnconstrainedMonotonicAutoregressive, check_activation
from ._stack import stack

__all__ = ["unaf"]


def unaf(
    input_dim: int,
    num_transforms: int = 3,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = "reverse",
    base: Any = None,
    signal: int = 16,
    network: Sequence[int] = (64, 64),
    network_activation: str = "silu",
    quadrature_nodes: int = 32,
    bound: float = 10.0,
) -> Flow:
    r"""Unconstrained monotonic neural autoregressive flow (Wehenkel & Louppe 2019).

    ``num_transforms`` layers
    (:class:`~pyro_flows.transforms.monotonic.UnconstrainedMonotonicAutoregressive`) with a
    permutation in between. Each maps data :math:`y` to base :math:`x` by

    .. math::

        x_i = b_i + \int_0^{y_i} g(t, h_i)\,dt, \qquad (b_i, h_i) = \mathrm{MADE}(y_{<i}, c),
        \qquad g = \mathrm{softplus}(\mathrm{MLP}(t, h_i)) + 10^{-3} > 0,

    the integral by ``quadrature_nodes``-node Gauss-Legendre quadrature on
    :math:`[0, \mathrm{clip}(y_i, \pm B)]` (``bound`` :math:`= B`) with exact linear tails
    beyond. The log-determinant is the exact derivative of that quadrature map, so the density
    is exact (normalised) for the bijection computed; only its distance to the ideal integral
    carries quadrature error (see the layer's docstring for measured errors and the condition
    for monotonicity). ``hidden_dims`` sizes the MADE, ``signal`` the conditioning vector
    :math:`h_i`, ``network`` the integrand MLP (shared by all dimensions), whose activation is
    ``network_activation`` (``"silu"`` or ``"tanh"``).

    Cost: density (data -> base) ``num_transforms`` MADE passes plus
    ``num_transforms * input_dim * (quadrature_nodes + 1)`` integrand evaluations per point;
    sampling ``num_transforms * input_dim`` MADE passes, each with one scalar Newton/bisection
    solve (typically 4-8 iterations of ``quadrature_nodes + 1`` integrand evaluations;
    residual :math:`16\varepsilon(1 + |x|)` in the map's value). A density-estimation flow,
    like MAF.

    Example::

        >>> flow = unaf(2, num_transforms=2, hidden_dims=(16,), signal=4, network=(8,))
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
        >>> flow.sample((3,)).shape
        torch.Size([3, 2])

    References:

    * A. Wehenkel, G. Louppe, "Unconstrained Monotonic Neural Networks", NeurIPS 2019,
      arXiv:1908.05164.
    * F. Rozet et al., zuko (``zuko.flows.UNAF``).
    """
    check_activation(network_activation, "network_activation")  # even for no layer built
    return stack(
        input_dim,
        num_transforms,
        lambda: UnconstrainedMonotonicAutoregressive(
            input_dim,
            hidden_dims,
            context_dim=context_dim,
            signal=signal,
            network=network,
            network_activation=network_activation,
            quadrature_nodes=quadrature_nodes,
            bound=bound,
        ),
        permutation,
        base=base,
        context_dim=context_dim,
    )
