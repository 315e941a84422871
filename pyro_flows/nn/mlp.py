r"""A plain multilayer perceptron conditioner, optionally fed a context vector.

.. math::

    h_0 = [x, c], \qquad h_{l} = \mathrm{act}(W_l h_{l-1} + b_l), \qquad
    \mathrm{out} = W_L h_{L-1} + b_L

The last layer is initialised small (``out_scale`` times PyTorch's default) with a zero bias, so
flows built on it start close to the identity while every parameter still receives a gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._numbers import check_finite_number
from .._validation import check_hidden_dims, check_positive_int


def make_activation(activation: Callable[[], nn.Module]) -> nn.Module:
    """One activation layer from the module class (or factory) ``activation``.

    :raises TypeError: naming what was given, if ``activation`` is an instance, not callable,
        or does not return an ``nn.Module``.
    """
    if isinstance(activation, nn.Module) or not callable(activation):
        raise TypeError(
            "activation must be a module class such as nn.ReLU (called once per layer), got "
            f"{type(activation).__name__} ({activation!r})"
        )
    layer = activation()
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"activation must return an nn.Module, got {type(layer).__name__} from {activation!r}"
        )
    return layer


def _check_features(value: Tensor, size: int, name: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"MLP expected {name} as a torch.Tensor, got {type(value).__name__}")
    if value.dim() == 0 or value.shape[-1] != size:
        raise ValueError(f"MLP expected {name} of shape (..., {size}), got {tuple(value.shape)}")


class _FreshOutputReLU(nn.ReLU):
    """ReLU in place on a Linear's fresh output (one allocation less), out of place under
    ``torch.jit.trace``, whose sanity check re-runs the graph and sees in-place edits differ."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=not torch.jit.is_tracing())


class MLP(nn.Module):
    """Dense network ``R^{in_features} x R^{context_dim} -> R^{out_features}``.

    :param in_features: size of the main input (may be 0 for context-only networks).
    :param hidden_dims: sizes of the hidden layers.
    :param out_features: size of the output.
    :param context_dim: size of an optional context, concatenated to the input.
    :param activation: activation module class between layers.
    :param out_scale: scale of the last layer's initial weights (0 gives an exact zero output).

    Example::

        >>> net = MLP(2, (16, 16), 4, context_dim=3)
        >>> net(torch.randn(5, 2), torch.randn(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        in_features: int,
        hidden_dims: Sequence[int],
        out_features: int,
        context_dim: int | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
        out_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features", minimum=0)
        check_positive_int(out_features, "out_features")
        if context_dim is not None:
            check_positive_int(context_dim, "context_dim")
        hidden = check_hidden_dims(hidden_dims)
        out_scale = check_finite_number(out_scale, "out_scale")
        self.in_features = in_features
        self.context_dim = context_dim
        first = in_features + (context_dim or 0)
        if first == 0:
            raise ValueError(
                "MLP needs in_features + context_dim >= 1, got in_features=0 and "
                f"context_dim={context_dim}"
            )
        sizes = (first, *hidden, out_features)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                # ReLU acts in place on each Linear's fresh output (one allocation less)
                layers.append(
                    _FreshOutputReLU() if activation is nn.ReLU else make_activation(activation)
                )
        if len(sizes) == 2:
            make_activation(activation)  # no hidden layer uses it, but a bad one is still refused
        self.net = nn.Sequential(*layers)
        last = layers[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(out_scale)
            last.bias.zero_()

    def forward(self, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        """``x``: ``(..., in_features)`` (``None`` when ``in_features == 0``); ``context``:
        ``(..., context_dim)`` exactly when the network was built with one, its batch shape
        broadcasting with ``x``'s.

        :raises ValueError: naming the expected and the given shapes.
        """
        if self.context_dim is None:
            if context is not None:
                raise ValueError(
                    "MLP was built without a context (context_dim=None) but got a context of "
                    f"shape {tuple(context.shape)}"
                )
            _check_features(x, self.in_features, "x")  # type: ignore[arg-type]
            return self.net(x)
        if context is None:
            raise ValueError(
                f"MLP was built with context_dim={self.context_dim} and needs a context of shape "
                "(..., context_dim), got None"
            )
        _check_features(context, self.context_dim, "context")
        if x is None or self.in_features == 0:
            return self.net(context)
        _check_features(x, self.in_features, "x")
        if x.shape[:-1] != context.shape[:-1]:
            x, context = _broadcast_rows(x, context)
        return self.net(torch.cat([x, context], -1))


def _broadcast_rows(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
    """Expand ``x`` and ``context`` to their common batch shape (``ValueError`` naming both
    shapes if there is none)."""
    try:
        batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"MLP: the batch shape of x {tuple(x.shape[:-1])} does not broadcast with the batch "
            f"shape of the context {tuple(context.shape[:-1])}"
        ) from None
    return x.expand(*batch, x.shape[-1]), context.expand(*batch, context.shape[-1])
