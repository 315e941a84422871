"""Block neural autoregressive flow builder (:func:`bnaf`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_hidden_dims, check_positive_int
from ..flow import Flow
from ..transforms.block_autoregressive import PARAM_SCALE, BlockAutoregressive
from ._stack import stack

__all__ = ["bnaf"]


def _factors(
    input_dim: int, hidden_factors: Sequence[int] | None, hidden_dims: Sequence[int] | None
) -> tuple[int, ...]:
    """Hidden units per dimension, from ``hidden_factors`` or total widths ``hidden_dims``."""
    if hidden_factors is not None and hidden_dims is not None:
        raise ValueError(
            "give hidden_factors (units per dimension) or hidden_dims (total widths), not both; "
            f"got hidden_factors={hidden_factors!r}, hidden_dims={hidden_dims!r}"
        )
    if hidden_dims is not None:
        dims = check_hidden_dims(hidden_dims)
        if not dims:  # (the layer's own message would name hidden_factors, not given here)
            raise ValueError("bnaf: hidden_dims must have at least one entry, got ()")
        return tuple(-(-h // input_dim) for h in dims)  # ceil(h / D), at least 1
    return check_hidden_dims((8, 8) if hidden_factors is None else hidden_factors, "hidden_factors")


def bnaf(
    input_dim: int,
    num_transforms: int = 1,
    hidden_factors: Sequence[int] | None = None,
    context_dim: int | None = None,
    *,
    hidden_dims: Sequence[int] | None = None,
    permutation: str | None = "reverse",
    base: Any = None,
    activation: str = "tanh",
    residual: str | None = "gated",
    direction: str = "density",
    param_scale: float = PARAM_SCALE,
) -> Flow:
    r"""Block neural autoregressive flow (De Cao, Titov & Aziz 2019): stacked
    :class:`~pyro_flows.transforms.block_autoregressive.BlockAutoregressive` layers.

    Each layer is :math:`F(u) = g\,u + (1-g) f(u)` with :math:`f` a monotone block
    lower-triangular network (positive, weight-normalised diagonal blocks, tanh between layers),
    a bijection of :math:`\mathbb{R}^D` with an exact log-determinant computed by log-space
    Jacobian products. A permutation (``"reverse"`` by default) goes between layers. With a
    context, it shifts each layer's first-layer bias.

    Cost (``direction="density"``, the default): ``log_prob`` of any point is one network pass
    per layer, :math:`O(D^2\sum_l a_l a_{l-1})` per sample; sampling solves, per layer,
    ``input_dim`` sequential scalar monotone equations (safeguarded Newton, typically 3-8
    iterations each over one dimension's blocks, tolerance about :math:`10^{-14}` relative in
    float64). ``direction="sampling"`` swaps the two (Pyro's orientation, for variational
    guides). Log-determinants are exact in both directions.

    :param input_dim: event size :math:`D`.
    :param num_transforms: number of BNAF layers (the paper uses 1 to 5; one is already a
        universal density approximator as the widths grow).
    :param hidden_factors: hidden units per dimension, one entry per hidden layer (Pyro's
        ``hidden_factors``); default ``(8, 8)``.
    :param context_dim: context size for a conditional flow.
    :param hidden_dims: alternative to ``hidden_factors`` with the other builders' meaning,
        total widths: factor :math:`\lceil h / D\rceil` per layer (for registry callers).
    :param permutation: ``"reverse"``, ``"random"`` or ``None`` between layers.
    :param base: base distribution (default standard Normal).
    :param activation: ``"tanh"`` or ``"leaky_relu"``.
    :param residual: ``"gated"``, ``"normal"`` or ``None`` (leaky ReLU only).
    :param direction: ``"density"`` or ``"sampling"``: which side is one pass.
    :param param_scale: the layers' :math:`c`: the log-domain parameters (diagonal blocks
        :math:`e^V`, log row norms, gate logit) are :math:`c` times the stored tensors, so that
        Adam at the learning rates of the other flows (``fit``'s 2e-3) moves them as fast as it
        moves ordinary weights; 20 by default, 1 for Pyro's parametrisation (see
        :class:`~pyro_flows.transforms.block_autoregressive.BlockAutoregressive`).

    Example::

        >>> flow = bnaf(2, num_transforms=2, hidden_factors=(4, 4))
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])

    References: N. De Cao, I. Titov, W. Aziz, "Block Neural Autoregressive Flow", UAI 2019,
    arXiv:1904.04676.
    """
    check_positive_int(input_dim, "input_dim")
    factors = _factors(input_dim, hidden_factors, hidden_dims)
    return stack(
        input_dim,
        num_transforms,
        lambda: BlockAutoregressive(
            input_dim,
            factors,
            context_dim,
            activation=activation,
            residual=residual,
            direction=direction,
            param_scale=param_scale,
        ),
        permutation,
        base=base,
        context_dim=context_dim,
    )
