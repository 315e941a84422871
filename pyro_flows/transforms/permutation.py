r"""Fixed permutations of the event coordinates (volume preserving, no parameters).

Stacked between coupling or autoregressive layers so that every coordinate gets transformed and
conditions the others. The permutation and its inverse are stored as buffers, so ``state_dict``
holds them and ``.to()`` moves them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import FlowTransform, zeros_log_det

__all__ = ["Permute", "Reverse", "permutation_sign"]


def _as_permutation(permutation: Tensor | Sequence[int]) -> Tensor:
    """Return ``permutation`` as a 1-D ``LongTensor``, or raise ``ValueError``/``TypeError``."""
    if isinstance(permutation, Tensor):
        if permutation.device.type == "meta":
            raise ValueError(
                "permutation must hold values to check, got a tensor on the 'meta' device; build "
                "it on the CPU (device='cpu'): the layer's buffers follow the default device"
            )
        perm = permutation.detach().cpu()
    else:
        try:
            perm = torch.as_tensor(permutation, device="cpu")
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                "permutation must be a 1-D LongTensor or a sequence of ints, got "
                f"{type(permutation).__name__} ({permutation!r})"
            ) from None
    given = perm.tolist() if perm.numel() <= 50 else f"a tensor of shape {tuple(perm.shape)}"
    if perm.dtype in (torch.bool,) or perm.is_floating_point() or perm.is_complex():
        raise ValueError(f"permutation must hold integers, got dtype {perm.dtype}: {given}")
    if perm.dim() != 1 or perm.numel() == 0:
        raise ValueError(f"permutation must be a non-empty 1-D sequence of ints, got {given}")
    perm = perm.long()
    n = perm.numel()
    if not torch.equal(torch.sort(perm).values, torch.arange(n, device="cpu")):
        values = perm.tolist()
        missing = sorted(set(range(n)) - set(values))[:10]
        repeated = sorted({v for v in values if values.count(v) > 1})[:10] if n <= 1000 else []
        detail = f"missing {missing}" + (f", repeated {repeated}" if repeated else "")
        raise ValueError(
            f"permutation must contain each of 0..{n - 1} exactly once (a permutation of "
            f"range({n})), got {given} ({detail})"
        )
    return perm


def permutation_sign(permutation: Tensor) -> int:
    r"""The sign :math:`(-1)^{D - c}` of a permutation of ``range(D)`` with :math:`c` cycles
    (``+1`` even, ``-1`` odd): the determinant of its permutation matrix.

    Cost: :math:`O(D)` Python steps (one walk over the cycles).

    Example:

    >>> import torch
    >>> permutation_sign(torch.tensor([1, 0, 2])), permutation_sign(torch.tensor([1, 2, 0]))
    (-1, 1)
    """
    perm = permutation.tolist()
    seen = [False] * len(perm)
    cycles = 0
    for start in range(len(perm)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i] = True
                i = perm[i]
    return -1 if (len(perm) - cycles) % 2 else 1


class Permute(FlowTransform):
    r"""A fixed permutation of the coordinates: :math:`y_i = x_{\pi(i)}`.

    .. math::

        y = x_{[\pi]}, \qquad x = y_{[\pi^{-1}]}, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = 0.

    Cost: forward and inverse are both one gather, :math:`O(D)` per sample; the log-determinant is
    zero (a tensor of zeros of shape ``x.shape[:-1]``). ``sign`` (the determinant itself, the
    permutation's parity) walks the permutation's cycles, :math:`O(D)`.

    :param permutation: a 1-D ``LongTensor`` or sequence of ints holding each of
        :math:`0, \dots, D-1` exactly once; ``input_dim`` is its length. ``ValueError`` otherwise.

    The permutation and its inverse are buffers (``permutation``, ``inverse_permutation``).

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.permutation import Permute
    >>> t = Permute([2, 0, 1])
    >>> x = torch.tensor([[10.0, 11.0, 12.0]])
    >>> t.forward_and_log_det(x)[0]
    tensor([[12., 10., 11.]])
    >>> t.inverse_and_log_det(torch.tensor([[12.0, 10.0, 11.0]]))[0]
    tensor([[10., 11., 12.]])

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    - G. Papamakarios, T. Pavlakou, I. Murray. *Masked Autoregressive Flow for Density
      Estimation.* NeurIPS, 2017. https://arxiv.org/abs/1705.07057
    """

    zero_log_det = True  # a permutation matrix has |det| = 1

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Tensor | Sequence[int]) -> None:
        perm = _as_permutation(permutation)  # checked on the CPU
        super().__init__(perm.numel())
        device = torch.get_default_device()  # e.g. 'meta' inside ``with torch.device("meta")``
        self.register_buffer("permutation", perm.to(device))
        self.register_buffer("inverse_permutation", torch.argsort(perm).to(device))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = x[..., permutation]``; log-det zeros."""
        x, context = self._prepare(x, context, "x")
        # index_select: a plain gather forward and backward (advanced indexing's backward is an
        # accumulating scatter, several times slower)
        return x.index_select(-1, self.permutation), zeros_log_det(x)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self._prepare(x, context, "x")[0].index_select(-1, self.permutation)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = y[..., inverse_permutation]``; log-det zeros."""
        y, context = self._prepare(y, context, "y")
        return y.index_select(-1, self.inverse_permutation), zeros_log_det(y)

    @property
    def sign(self) -> int:
        """The determinant of the permutation matrix: ``+1`` for an even permutation, ``-1``
        for an odd one."""
        return permutation_sign(self.permutation)

    def extra_repr(self) -> str:
        perm = self.permutation.tolist()
        shown = perm if len(perm) <= 10 else perm[:10] + ["..."]
        return f"input_dim={self.input_dim}, permutation={shown}"


class Reverse(Permute):
    r"""Reverse the order of the coordinates: :math:`y_i = x_{D-1-i}` (its own inverse).

    A :class:`Permute` with :math:`\pi = (D-1, \dots, 1, 0)`; the usual choice between MAF/IAF
    layers (Papamakarios et al., 2017). Cost: one ``flip`` each way, log-determinant zero.

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.permutation import Reverse
    >>> Reverse(3).forward_and_log_det(torch.tensor([1.0, 2.0, 3.0]))[0]
    tensor([3., 2., 1.])

    References:

    - G. Papamakarios, T. Pavlakou, I. Murray. *Masked Autoregressive Flow for Density
      Estimation.* NeurIPS, 2017. https://arxiv.org/abs/1705.07057
    """

    def __init__(self, input_dim: int) -> None:
        input_dim = check_positive_int(input_dim, "input_dim")
        super().__init__(torch.arange(input_dim - 1, -1, -1, device="cpu"))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = x.flip(-1)``; log-det zeros."""
        x, context = self._prepare(x, context, "x")
        return x.flip(-1), zeros_log_det(x)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self._prepare(x, context, "x")[0].flip(-1)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = y.flip(-1)``; log-det zeros."""
        y, context = self._prepare(y, context, "y")
        return y.flip(-1), zeros_log_det(y)

    @property
    def sign(self) -> int:
        r"""The determinant of the reversal, :math:`(-1)^{\lfloor D/2 \rfloor}` (one swap per
        pair of mirrored coordinates)."""
        return -1 if (self.input_dim // 2) % 2 else 1

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}"
