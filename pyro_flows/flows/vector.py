"""Vector flow builders: each a plain function returning a :class:`~pyro_flows.Flow`.

Every builder has the signature ``builder(input_dim, num_transforms=..., hidden_dims=...,
context_dim=None, **options)`` and stacks its layer with a permutation in between (``Reverse`` by
default, so consecutive layers see the dimensions in opposite orders).

Common options: ``permutation`` (``"reverse"``, ``"random"`` (drawn from torch's RNG) or
``None``), ``base`` (a base distribution or module, default standard Normal) and, for layers with a
conditioner, ``activation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..flow import Flow
from ..transforms import (
    AdditiveCoupling,
    AffineCoupling,
    InverseAutoregressive,
    MaskedAutoregressive,
    Planar,
    Radial,
    Rescale,
    SplineAutoregressive,
    SplineCoupling,
)
from ..transforms._affine import EXP_LOG_SCALE_BOUND
from ._stack import stack

__all__ = ["nice", "realnvp", "maf", "iaf", "nsf", "planar", "radial"]


def nice(
    input_dim: int,
    num_transforms: int = 4,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = "reverse",
    activation: Callable[[], nn.Module] = nn.ReLU,
    base: Any = None,
) -> Flow:
    """NICE (Dinh et al. 2015): additive couplings, then a diagonal :class:`Rescale`.

    Cost: sampling and density each ``num_transforms`` conditioner passes.

    Example::

        >>> flow = nice(4, num_transforms=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(3, 4)).shape
        torch.Size([3])
    """
    flow = stack(
        input_dim,
        num_transforms,
        lambda: AdditiveCoupling(
            input_dim, hidden_dims, context_dim=context_dim, activation=activation
        ),
        permutation,
        base=base,
        context_dim=context_dim,
    )
    flow.transforms.append(Rescale(input_dim))
    return flow


def realnvp(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = "reverse",
    normalization: str | None = None,
    activation: Callable[[], nn.Module] = nn.ReLU,
    base: Any = None,
) -> Flow:
    """RealNVP (Dinh et al. 2017): affine couplings with permutations in between.

    ``normalization="actnorm"`` or ``"batchnorm"`` inserts that layer before each coupling.
    Cost: sampling and density each ``num_transforms`` conditioner passes.

    Example::

        >>> flow = realnvp(2, num_transforms=3, hidden_dims=(16,))
        >>> flow.sample((4,)).shape
        torch.Size([4, 2])
    """
    return stack(
        input_dim,
        num_transforms,
        lambda: AffineCoupling(
            input_dim, hidden_dims, context_dim=context_dim, activation=activation
        ),
        permutation,
        normalization,
        base,
        context_dim,
    )


def maf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = "reverse",
    normalization: str | None = None,
    base: Any = None,
    scale: str = "softplus",
    log_scale_bound: float = EXP_LOG_SCALE_BOUND,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017), for density estimation.

    Cost: density ``num_transforms`` MADE passes; sampling ``num_transforms * input_dim``.
    ``scale``: the layers' scale parametrisation, ``"softplus"`` or ``"exp"``, and
    ``log_scale_bound`` the exp scale's bound on one layer's log-scale (see
    :class:`~pyro_flows.transforms.MaskedAutoregressive`).

    Example::

        >>> flow = maf(3, num_transforms=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
    """
    return stack(
        input_dim,
        num_transforms,
        lambda: MaskedAutoregressive(
            input_dim,
            hidden_dims,
            context_dim=context_dim,
            scale=scale,
            log_scale_bound=log_scale_bound,
        ),
        permutation,
        normalization,
        base,
        context_dim,
    )


def iaf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = "reverse",
    base: Any = None,
    scale: str = "softplus",
    log_scale_bound: float = EXP_LOG_SCALE_BOUND,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016), for variational inference.

    Cost: sampling (and scoring own samples) ``num_transforms`` MADE passes; density of external
    points ``num_transforms * input_dim``. ``scale``: the layers' scale parametrisation,
    ``"softplus"`` or ``"exp"`` (log-scale linear in the network output, for posteriors whose
    scales are exponential in other coordinates, e.g. hierarchical models; see
    :class:`~pyro_flows.transforms.InverseAutoregressive`); ``log_scale_bound``: the exp
    scale's bound on one layer's log-scale (default 8; 16 for Neal's funnel).

    Example::

        >>> flow = iaf(3, num_transforms=2, hidden_dims=(16,))
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> log_q.shape
        torch.Size([5])
    """
    return stack(
        input_dim,
        num_transforms,
        lambda: InverseAutoregressive(
            input_dim,
            hidden_dims,
            context_dim=context_dim,
            scale=scale,
            log_scale_bound=log_scale_bound,
        ),
        permutation,
        None,
        base,
        context_dim,
    )


def nsf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    num_bins: int | None = None,
    bound: float = 5.0,
    coupling: bool = False,
    count_bins: int | None = None,
    permutation: str | None = "reverse",
    base: Any = None,
) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic splines with identity tails
    outside ``[-bound, bound]``.

    By default the layers are :class:`~pyro_flows.transforms.SplineAutoregressive` (NSF-AR, MAF
    direction, for density estimation); ``coupling=True`` uses
    :class:`~pyro_flows.transforms.SplineCoupling` (NSF-C, fast both ways; ``input_dim >= 2``).

    ``num_bins`` (default 8) is the number of bins; ``count_bins`` is Pyro's name for it (give
    one, or both equal).

    Cost: autoregressive: density ``num_transforms`` MADE passes, sampling
    ``num_transforms * input_dim``; coupling: sampling and density each ``num_transforms``
    conditioner passes.

    Example::

        >>> flow = nsf(3, num_transforms=2, hidden_dims=(16,), num_bins=4)
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
        >>> nsf(2, num_transforms=2, hidden_dims=(16,), coupling=True).sample((4,)).shape
        torch.Size([4, 2])
    """
    layer = SplineCoupling if coupling else SplineAutoregressive

    def make_layer() -> nn.Module:
        return layer(
            input_dim,
            hidden_dims,
            num_bins=num_bins,
            count_bins=count_bins,
            bound=bound,
            context_dim=context_dim,
        )

    return stack(
        input_dim, num_transforms, make_layer, permutation, base=base, context_dim=context_dim
    )


def planar(
    input_dim: int,
    num_transforms: int = 8,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    base: Any = None,
) -> Flow:
    """Planar flow (Rezende & Mohamed 2015); ``hidden_dims`` is used only with a context.

    Cost: sampling closed form; density a scalar root solve per layer and sample.

    Example::

        >>> flow = planar(2, num_transforms=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """
    return stack(
        input_dim,
        num_transforms,
        lambda: Planar(input_dim, context_dim=context_dim, hidden_dims=hidden_dims),
        None,
        base=base,
        context_dim=context_dim,
    )


def radial(
    input_dim: int,
    num_transforms: int = 8,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    base: Any = None,
) -> Flow:
    """Radial flow (Rezende & Mohamed 2015); ``hidden_dims`` is used only with a context.

    Cost: sampling closed form; density closed form (a quadratic root per layer).

    Example::

        >>> flow = radial(2, num_transforms=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """
    return stack(
        input_dim,
        num_transforms,
        lambda: Radial(input_dim, context_dim=context_dim, hidden_dims=hidden_dims),
        None,
        base=base,
        context_dim=context_dim,
    )
