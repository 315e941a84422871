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
from torch import Tensor, nn

from .._validation import check_hidden_dims, check_positive_int


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
        hidden = check_hidden_dims(hidden_dims)
        self.in_features = in_features
        self.context_dim = context_dim
        first = in_features + (context_dim or 0)
        if first == 0:
            raise ValueError("MLP needs in_features + context_dim >= 1, got 0")
        sizes = (first, *hidden, out_features)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                # ReLU acts in place on each Linear's fresh output (one allocation less)
                layers.append(nn.ReLU(inplace=True) if activation is nn.ReLU else activation())
        self.net = nn.Sequential(*layers)
        last = layers[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(out_scale)
            last.bias.zero_()

    def forward(self, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        if context is not None:
            x = context if x is None or self.in_features == 0 else torch.cat([x, context], -1)
        assert x is not None
        return self.net(x)
