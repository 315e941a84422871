r"""A dense layer whose weight and bias are one parameter tensor.

:class:`PackedLinear` computes what :class:`torch.nn.Linear` computes,

.. math::

    y = x W^\top + b, \qquad [W \,|\, b] \in \mathbb{R}^{m \times (n + 1)},

but keeps :math:`W` and :math:`b` side by side in one parameter, ``weight_and_bias``, and serves
``weight`` and ``bias`` as views of it. Why: an optimiser that steps each tensor on its own
(Pyro's ``pyro.optim.Adam`` holds one ``torch.optim.Adam`` per parameter) pays about 0.1 ms of
Python per tensor and step on a CPU whatever the tensor's size, and tracing a guide registers
every tensor through ``pyro.param``.
:meth:`~pyro_flows.nn.MADE.pack_parameters_` turns a MADE's layers into these (three tensors
instead of six for three layers); :class:`~pyro_flows.infer.AutoFlow` does it to its MADEs, 15
fewer tensors per SVI step for its five IAF layers (``benchmarks/loops.py --parts svi``). The
price is in the forward and backward passes: the MADE applies ``[W | b]`` to its input with a
column of ones appended (about 10% of a small MADE's forward and backward), so training loops
that step all tensors at once (torch's fused or ``foreach`` Adam) keep the separate layout.

The views write through: ``layer.weight.zero_()`` under ``torch.no_grad()`` edits the
parameter, as it does for ``nn.Linear``. Gradients live on ``weight_and_bias``
(``layer.weight_and_bias.grad[:, :-1]`` is the weight's). A state dict saved from an
``nn.Linear`` (keys ``weight`` and ``bias``) loads into it.

Example:

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> layer = PackedLinear(3, 2)
>>> x = torch.randn(5, 3)
>>> bool(torch.allclose(layer(x), x @ layer.weight.T + layer.bias))
True
>>> [name for name, _ in layer.named_parameters()], tuple(layer.weight_and_bias.shape)
(['weight_and_bias'], (2, 4))
>>> dense = torch.nn.Linear(3, 2)
>>> _ = layer.load_state_dict(dense.state_dict())  # an nn.Linear's keys load
>>> bool(torch.equal(layer.weight, dense.weight) and torch.equal(layer.bias, dense.bias))
True

References:

- M. Germain, K. Gregor, I. Murray, H. Larochelle. *MADE: Masked Autoencoder for Distribution
  Estimation.* ICML, 2015 (the layers this packs). https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .packed_state import pack_split_entries

__all__ = ["PackedLinear", "packed_affine"]


def packed_affine(x: Tensor, weight_and_bias: Tensor) -> Tensor:
    """``x W^T + b`` from ``[W | b]``: the input with a column of ones appended, one
    ``F.linear`` (cheaper in forward and backward than slicing ``W`` and ``b`` out of the
    packed tensor)."""
    return F.linear(F.pad(x, (0, 1), value=1.0), weight_and_bias)


def _join(weight_and_bias: list[Tensor]) -> Tensor:
    weight, bias = weight_and_bias
    return torch.cat([weight, bias[:, None]], dim=1)


class PackedLinear(nn.Module):
    r"""``y = x W^T + b`` with :math:`[W \,|\, b]` one parameter; see the module docstring.

    :param in_features: :math:`n`, the input size.
    :param out_features: :math:`m`, the output size.

    The initial values are torch's for ``nn.Linear(in_features, out_features)`` (drawn by one,
    so the random stream is the same as with that layer).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self._take(nn.Linear(in_features, out_features))

    @classmethod
    def from_linear(cls, dense: nn.Linear) -> PackedLinear:
        """A packed copy of ``dense`` (same values, dtype, device and ``requires_grad``).

        :raises ValueError: if ``dense`` has no bias.
        """
        if dense.bias is None:
            raise ValueError("PackedLinear.from_linear: the layer has no bias to pack (bias=False)")
        packed = cls.__new__(cls)
        nn.Module.__init__(packed)
        packed._take(dense)
        return packed

    def _take(self, dense: nn.Linear) -> None:
        """Sizes and ``[W | b]`` (a copy, ``requires_grad`` as ``dense``'s) from ``dense``."""
        self.in_features, self.out_features = dense.in_features, dense.out_features
        with torch.no_grad():
            values = _join([dense.weight.detach(), dense.bias.detach()])
        self.weight_and_bias = nn.Parameter(values, requires_grad=dense.weight.requires_grad)

    @property
    def weight(self) -> Tensor:
        """:math:`W`, shape ``(out_features, in_features)``: a view of ``weight_and_bias``."""
        return self.weight_and_bias[:, :-1]

    @property
    def bias(self) -> Tensor:
        """:math:`b`, shape ``(out_features,)``: a view of ``weight_and_bias``."""
        return self.weight_and_bias[:, -1]

    def forward(self, x: Tensor) -> Tensor:
        return packed_affine(x, self.weight_and_bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        """Also accept an ``nn.Linear``'s ``weight`` and ``bias`` (packed here)."""
        pack_split_entries(state_dict, prefix, "weight_and_bias", ("weight", "bias"), _join)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
