r"""MADE: masked autoencoder for distribution estimation (Germain et al., 2015).

Each input dimension :math:`i` gets a degree :math:`m(i) \in \{1..D\}` (its position in the
autoregressive order), each hidden unit a degree :math:`m(k)`, and connections are masked so that
output :math:`i` depends only on inputs of strictly smaller degree:

.. math::

    M^{(l)}_{k' k} = [m(k') \ge m(k)] \ \text{(hidden)}, \qquad
    M^{\text{out}}_{i k} = [m(i) > m(k)] \ \text{(output)}.

A context vector (if any) feeds every first-layer hidden unit unmasked; with a context, hidden
degrees start at 0 so that the first dimension's parameters depend on the context too. Masks are
buffers (they follow ``.to()`` and ``state_dict``) and are built vectorised, so ``MADE(1000, ...)``
is built in milliseconds.

References: Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
Estimation", ICML 2015; Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density
Estimation", NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_hidden_dims, check_positive_int
from .packed_linear import PackedLinear, packed_affine

#: per layer, the masked ``(weight, bias)``, or ``([W | b] masked, None)`` for a packed layer
MaskedWeights = list[tuple[Tensor, Tensor | None]]


def _affine(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``h W^T + b``, or for a packed layer (``b`` None, ``w = [W | b]``) ``[h, 1] w^T``."""
    return packed_affine(h, w) if b is None else F.linear(h, w, b)


class MADE(nn.Module):
    """Autoregressive network ``x -> params`` with ``params_i = f(x_{<i}, context)``.

    :param input_dim: number of autoregressive inputs ``D``.
    :param hidden_dims: hidden layer sizes.
    :param param_dims: number of parameters per dimension for each output, e.g. ``(1, 1)`` for
        (shift, scale). The forward pass returns one tensor per entry, of shape ``(..., D)`` for
        an entry of 1 and ``(..., D, p)`` otherwise.
    :param context_dim: size of an optional context vector.
    :param input_order: the autoregressive order: a permutation of ``0..D-1`` listing the inputs
        from first to last (default: natural order, so the Jacobian is lower triangular).
    :param activation: activation function between layers.
    :param out_scale: scale of the output layer's initial weights (near-identity flows).

    Cost: one pass is ``O(B (D + C) H_1 + sum_l B H_l H_{l+1} + B H_L D P)`` flops.

    Example::

        >>> made = MADE(3, (16,), param_dims=(1, 1))
        >>> shift, scale = made(torch.randn(10, 3))
        >>> shift.shape
        torch.Size([10, 3])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        context_dim: int | None = None,
        input_order: Sequence[int] | Tensor | None = None,
        activation: Callable[[Tensor], Tensor] = F.relu,
        out_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.context_dim = (
            None if context_dim is None else check_positive_int(context_dim, "context_dim")
        )
        hidden = check_hidden_dims(hidden_dims)
        self.param_dims = tuple(check_positive_int(p, "param_dims entry") for p in param_dims)
        if not self.param_dims:
            raise ValueError("param_dims must not be empty")
        # ReLU is applied in place on each layer's fresh output (saves an allocation per layer)
        self.activation = torch.relu_ if activation is F.relu else activation
        self._in_place = activation is F.relu
        num_params = sum(self.param_dims)
        D = self.input_dim

        order = self._check_order(input_order, D)
        in_degrees = torch.empty(D, dtype=torch.long)
        in_degrees[order] = torch.arange(1, D + 1)
        low = 0 if (self.context_dim is not None or D == 1) else 1
        high = max(D - 1, low)

        degrees = [in_degrees]
        for h in hidden:
            degrees.append(low + torch.arange(h) % (high - low + 1))
        out_degrees = in_degrees.repeat(num_params)  # parameter-major: (P, D) blocks

        masks = [
            d_out[:, None] >= d_in[None, :]
            for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=False)
        ]
        masks.append(out_degrees[:, None] > degrees[-1][None, :])
        if self.context_dim is not None:
            masks[0] = torch.cat([masks[0], masks[0].new_ones(hidden[0], self.context_dim)], 1)

        if D == 1 and self.context_dim is None:
            # nothing can feed the single output: the network is a learnable constant
            hidden, masks = (), [torch.zeros(num_params, 1, dtype=torch.bool)]
        sizes_in = [D + (self.context_dim or 0), *hidden]
        sizes_out = [*hidden, D * num_params]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes_in, sizes_out, strict=False)
        )
        if not hidden and D == 1 and self.context_dim is None:
            # the fully masked weight would never get a gradient: keep it as a zero buffer
            layer = self.layers[0]
            del layer.weight
            layer.register_buffer("weight", torch.zeros(D * num_params, 1))
        for i, mask in enumerate(masks):
            # bool: ``where`` selects with it directly, and ``.to(dtype)`` leaves it alone
            self.register_buffer(f"mask{i}", mask)
        self.register_buffer("input_order", order)
        with torch.no_grad():
            for layer, mask in zip(self.layers, masks, strict=False):
                # rescale so masked layers keep the variance of a dense layer of the same fan-in
                fan_in = mask.sum(1, keepdim=True).clamp_min(1).to(layer.weight.dtype)
                layer.weight.mul_(torch.sqrt(layer.in_features / fan_in))
            self.layers[-1].weight.mul_(out_scale)
            self.layers[-1].bias.zero_()

    def _out_of_place_relu(self, h: Tensor) -> bool:
        """Whether the in-place ReLU must give way to ``torch.relu`` for ``h``: under a JIT trace
        (``JitTrace_ELBO`` rejects in-place ops) or ``torch.compile`` (which fuses it anyway),
        or when ``h`` is a view (``F.linear`` of an
        input without a batch dimension returns one), where an in-place op would put a
        ``CopySlices`` node and a copy of the base into the backward pass."""
        if not self._in_place:
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return True  # (and ``_is_view`` would break a torch.compile graph)
        return h._is_view()

    @staticmethod
    def _check_order(order: Sequence[int] | Tensor | None, D: int) -> Tensor:
        if order is None:
            return torch.arange(D)
        order_t = torch.as_tensor(order, dtype=torch.long).flatten()
        if order_t.numel() != D or not torch.equal(order_t.sort().values, torch.arange(D)):
            raise ValueError(
                f"input_order must be a permutation of 0..{D - 1}, got {order_t.tolist()}"
            )
        return order_t

    def input_rank(self) -> Tensor:
        """The position of each input in the autoregressive order (``rank[input_order[j]] = j``):
        output ``i`` reads exactly the inputs of lower rank."""
        return torch.argsort(self.input_order)

    @property
    def masks(self) -> list[Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.layers))]

    def masked_weights(self) -> MaskedWeights:
        """The masked ``(weight, bias)`` of every layer; compute once, reuse for many passes.
        A layer packed by :meth:`pack_parameters_` gives ``([W | b] masked, None)`` instead
        (its bias column unmasked), which :meth:`forward` applies to the input with a column
        of ones appended.

        Masked entries are selected to zero (``where``), not multiplied by it: their gradient is
        then exactly 0 even where the unmasked product's gradient overflows (far from the data
        in float32), where ``weight * mask`` would turn ``inf * 0`` into NaN.
        """
        weights: MaskedWeights = []
        for i, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=False)):
            if isinstance(layer, PackedLinear):
                packed_mask = self._mask_and_bias(i, mask)
                weights.append((torch.where(packed_mask, layer.weight_and_bias, 0.0), None))
            else:
                weights.append((torch.where(mask, layer.weight, 0.0), layer.bias))
        return weights

    def pack_parameters_(self) -> MADE:
        """Keep each layer's weight and bias in one parameter tensor
        (:class:`~pyro_flows.nn.packed_linear.PackedLinear`, same values), in place; returns
        ``self``.

        For optimisers that step each tensor on its own, such as Pyro's ``pyro.optim``: half
        as many tensors to step and to register per SVI step, about 0.1 ms each on a CPU
        (:class:`~pyro_flows.infer.AutoFlow` packs its MADEs). The forward pass costs a little
        more (the input gets a column of ones, ``F.pad``): about 10% of a MADE's forward and
        backward at 8 rows, which is why it is not the default. State dicts then have
        ``layers.i.weight_and_bias``; one saved with separate keys still loads. A layer whose
        weight is a fixed zero buffer (``input_dim = 1`` without hidden layers) stays as it is.
        The masks stay fixed, as they are by construction (the packed path keeps its own copy
        with the bias column).

        Example:

        >>> made = MADE(3, (16,), param_dims=(1, 1))
        >>> x = torch.randn(4, 3)
        >>> before = made(x)
        >>> len(list(made.parameters())), len(list(made.pack_parameters_().parameters()))
        (4, 2)
        >>> all(torch.allclose(a, b, atol=1e-6) for a, b in zip(made(x), before, strict=True))
        True
        """
        for i, layer in enumerate(self.layers):
            if isinstance(layer, PackedLinear) or not isinstance(layer.weight, nn.Parameter):
                continue
            self.layers[i] = PackedLinear.from_linear(layer)
        return self

    def _mask_and_bias(self, i: int, mask: Tensor) -> Tensor:
        """Layer ``i``'s mask with an unmasked bias column, built once per mask tensor (kept as
        a plain attribute, not a buffer: it follows ``mask`` to another device or dtype by being
        rebuilt when the buffer object changes, and adds nothing to the state dict or to the
        tensors :class:`~pyro_flows.distribution.OwnSampleMemory` compares). The masks are
        fixed by construction; one edited in place after packing would not be seen here."""
        cache: dict[int, tuple[Tensor, Tensor]] = self.__dict__.setdefault("_packed_masks", {})
        entry = cache.get(i)
        if entry is None or entry[0] is not mask:
            entry = (mask, torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1))
            cache[i] = entry
        return entry[1]

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        weights: MaskedWeights | None = None,
    ) -> tuple[Tensor, ...]:
        """Return the parameters for every dimension (see ``param_dims``).

        :param x: inputs of shape ``(..., D)``.
        :param context: context of shape ``(..., C)`` whose batch shape broadcasts with
            ``x``'s: its share of the first layer is computed once per context row.
        :param weights: pre-computed :meth:`masked_weights` (for repeated sequential passes).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"MADE expected x to be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"MADE expected x of shape (..., {self.input_dim}) (input_dim={self.input_dim}), "
                f"got shape {tuple(x.shape)}"
            )
        if context is not None and (
            not isinstance(context, Tensor)
            or context.dim() == 0
            or context.shape[-1] != self.context_dim
        ):
            got = (
                f"shape {tuple(context.shape)}"
                if isinstance(context, Tensor)
                else type(context).__name__
            )
            if self.context_dim is None:
                raise ValueError(
                    f"this MADE takes no context (context_dim=None), got a context of {got}"
                )
            raise ValueError(
                f"MADE expected context of shape (..., {self.context_dim}) "
                f"(context_dim={self.context_dim}), got {got}"
            )
        if weights is None:
            weights = self.masked_weights()
        last = len(weights) - 1
        h = x
        for i, (w, b) in enumerate(weights):
            if i == 0 and context is not None:
                # [x, context] @ W^T = x @ W_x^T + context @ W_c^T, the second broadcast
                d = x.shape[-1]
                h, shared = F.linear(x, w[:, :d]), _affine(context, w[:, d:], b)
                h = h + shared if torch.jit.is_tracing() else h.add_(shared)
            else:
                h = _affine(h, w, b)
            if i < last:
                # in place saves an allocation, but not on a view or under a JIT trace
                h = torch.relu(h) if self._out_of_place_relu(h) else self.activation(h)
        # parameter-major layout: each parameter is a contiguous block of D outputs
        h = h.unflatten(-1, (sum(self.param_dims), self.input_dim))
        if all(d == 1 for d in self.param_dims):
            return h.unbind(-2)
        parts = h.split(list(self.param_dims), dim=-2)
        return tuple(
            p.squeeze(-2) if d == 1 else p.movedim(-2, -1)
            for p, d in zip(parts, self.param_dims, strict=True)
        )
