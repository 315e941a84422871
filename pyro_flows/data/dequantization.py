r"""Dequantization: continuous density models of discrete data, with an exact lower bound.

Pixels are integers :math:`x \in \{0, \dots, K-1\}^D`. A continuous density :math:`p` on
:math:`y \in [0, 1]^D` assigns the discrete point :math:`x` the probability of its cell
:math:`C(x) = [x/K, (x + 1)/K)^D`,

.. math::

    P(x) = \int_{C(x)} p(y)\, dy
         = \mathbb{E}_{q(y \mid x)}\left[\frac{p(y)}{q(y \mid x)}\right]
    \;\Rightarrow\;
    \log P(x) \ge \mathbb{E}_{q(y \mid x)}\left[\log p(y) - \log q(y \mid x)\right]

for any density :math:`q(\cdot \mid x)` on the cell (Jensen). With :math:`y = (x + u)/K`:

- **uniform** dequantization (Uria et al. 2013; Theis et al. 2016),
  :math:`u \sim U[0, 1)^D`, :math:`q(y \mid x) = K^D`: the bound is
  :math:`\log p(y) - D \log K`, the classical "continuous NLL + :math:`D \log K`" correction;
- **variational** dequantization (Ho et al. 2019, Flow++), :math:`u = \sigma(v)` with
  :math:`v \sim q(v \mid x)` a conditional flow, so
  :math:`\log q(y \mid x) = \log q(v \mid x) - \sum_i \log \sigma'(v_i) + D \log K` and the
  bound is tightened by training :math:`q` jointly with :math:`p`.

:class:`DequantizedModel` puts the pieces together: its ``log_prob(x)`` is a one-sample
estimate of the bound, in nats per example, directly comparable across dequantizers and
pre-processings (the :class:`~pyro_flows.transforms.logit.Logit` layer's log-det is counted), and
its expectation is a true lower bound on :math:`\log P(x)`. Averaging :math:`p/q` over
:math:`S` samples (``log_prob(x, num_samples=S)``) tightens it towards :math:`\log P(x)`
(importance weighting). Bits per dimension: :func:`nats_to_bits_per_dim`.

References:

- Uria, Murray, Larochelle, *RNADE: The real-valued neural autoregressive density-estimator*,
  NeurIPS 2013 (adding uniform noise to discrete data).
- Theis, van den Oord, Bethge, *A note on the evaluation of generative models*, ICLR 2016
  (the uniform-dequantization bound on the discrete log-likelihood).
- Ho, Chen, Srinivas, Duan, Abbeel, *Flow++: Improving flow-based generative models with
  variational dequantization and architecture design*, ICML 2019.
- Dinh, Sohl-Dickstein, Bengio, *Density estimation using Real NVP*, ICLR 2017 (logit
  pre-processing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import as_tensor, check_positive_int

__all__ = [
    "DequantizedModel",
    "UniformDequantization",
    "VariationalDequantization",
    "bits_per_dim_to_nats",
    "check_discrete",
    "nats_to_bits_per_dim",
]


def _check_nll(value: object, name: str) -> float | Tensor:
    """``value`` (a number, tensor or array) if it is real and has no NaN; arrays come back as
    tensors. ``inf`` is allowed (a zero probability has an infinite NLL)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if isinstance(value, int | float) and not isinstance(value, np.generic):
        if math.isnan(value):
            raise ValueError(f"{name} has NaN value(s) (got {value!r}): nothing to convert")
        return value
    try:
        t = value if isinstance(value, Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be a number or a tensor, got {type(value).__name__}"
        ) from None
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} has NaN value(s) (got {t!r}): nothing to convert")
    return value if isinstance(value, np.ndarray | np.generic) else t


def nats_to_bits_per_dim(nll_nats: float | Tensor, dim: int) -> float | Tensor:
    r"""Convert a negative log-likelihood in nats per example to bits per dimension,
    :math:`\mathrm{bpd} = \mathrm{NLL} / (D \ln 2)`.

    The NLL must already be the *discrete* one (e.g. ``-DequantizedModel.log_prob(x)``, which
    includes the :math:`D \log K` term), as in the literature's bits/dim.

    Example::

        >>> round(nats_to_bits_per_dim(64 * math.log(2.0), 64), 6)
        1.0
        >>> nats_to_bits_per_dim(torch.tensor([443.6]), 784)
        tensor([0.8163])
    """
    check_positive_int(dim, "dim")
    return _check_nll(nll_nats, "nll_nats") / (dim * math.log(2.0))


def bits_per_dim_to_nats(bits_per_dim: float | Tensor, dim: int) -> float | Tensor:
    r"""Inverse of :func:`nats_to_bits_per_dim`: :math:`\mathrm{NLL} = \mathrm{bpd}\, D \ln 2`.

    Example::

        >>> round(bits_per_dim_to_nats(1.0, 64) / math.log(2.0), 6)
        64.0
    """
    check_positive_int(dim, "dim")
    return _check_nll(bits_per_dim, "bits_per_dim") * dim * math.log(2.0)


def check_discrete(
    x: Tensor, num_levels: int, input_dim: int | None = None, owner: str = "dequantizer"
) -> Tensor:
    """Check that ``x`` holds integers in ``[0, num_levels - 1]`` (shape ``(..., input_dim)``)
    and return it as a floating tensor.

    ``x`` may be a tensor or a NumPy array (converted with ``torch.from_numpy``).

    :raises ValueError: naming the expected and the given shape, the offending values, or a
        bool or complex dtype.
    :raises TypeError: for data that is neither a tensor nor an array.

    Example::

        >>> check_discrete(torch.tensor([[0, 3]]), num_levels=4)
        tensor([[0., 3.]])
    """
    check_positive_int(num_levels, "num_levels", minimum=2)
    if input_dim is not None:
        check_positive_int(input_dim, "input_dim")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{owner} expected a torch.Tensor or NumPy array of integer levels, got "
            f"{type(x).__name__}"
        )
    if x.dim() == 0 or (input_dim is not None and x.shape[-1] != input_dim):
        expected = f"(..., {input_dim})" if input_dim is not None else "(..., D)"
        raise ValueError(
            f"{owner} expected discrete data of shape {expected}, got shape {tuple(x.shape)}"
            + (" (flatten images to rows first)" if x.dim() >= 3 else "")
        )
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{owner} expected integer-valued data, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    with torch.no_grad():
        not_integer = ~torch.isfinite(x) | (x != torch.round(x))
        if bool(not_integer.any()):
            bad = x[not_integer]
            raise ValueError(
                f"{owner} expected integer-valued data (levels 0..{num_levels - 1}), got "
                f"{bad.numel()} non-integer value(s), e.g. {bad[:3].tolist()}; pass the raw "
                "levels, not data already scaled to [0, 1]"
            )
        if x.numel() and (x.min() < 0 or x.max() > num_levels - 1):
            raise ValueError(
                f"{owner} expected levels in [0, {num_levels - 1}] (num_levels={num_levels}), "
                f"got values in [{x.min().item():g}, {x.max().item():g}]"
            )
    return x


class UniformDequantization(nn.Module):
    r"""Uniform dequantization: :math:`y = (x + u)/K`, :math:`u \sim U[0, 1)^D`.

    Calling it returns ``(y, log_q)`` with :math:`\log q(y \mid x) = D \log K` (the uniform
    density on the cell :math:`[x/K, (x+1)/K)^D`), so for any continuous density :math:`p` on
    :math:`[0, 1]^D`,

    .. math::

        \log P(x) \ge \mathbb{E}_u[\log p(y)] - D \log K

    (Uria et al. 2013; Theis et al. 2016). No parameters.

    :param num_levels: number of levels :math:`K \ge 2` (17 for sklearn digits, 256 for 8-bit
        images).
    :param input_dim: optional event size :math:`D`, checked when given.

    Example::

        >>> deq = UniformDequantization(num_levels=4)
        >>> x = torch.tensor([[0.0, 3.0]])
        >>> y, log_q = deq(x, generator=torch.Generator().manual_seed(0))
        >>> bool(((y >= x / 4) & (y < (x + 1) / 4)).all()), round(log_q.item(), 4)
        (True, 2.7726)
    """

    def __init__(self, num_levels: int, input_dim: int | None = None) -> None:
        super().__init__()
        self.num_levels = check_positive_int(num_levels, "num_levels", minimum=2)
        self.input_dim = None if input_dim is None else check_positive_int(input_dim, "input_dim")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Dequantize integer ``x`` of shape ``(..., D)``: ``(y, log q(y | x))``, shapes
        ``(..., D)`` and ``(...)``."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        x = check_discrete(x, self.num_levels, self.input_dim, type(self).__name__)
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = (x + u) / self.num_levels
        log_q = x.new_full(x.shape[:-1], x.shape[-1] * math.log(self.num_levels))
        return y, log_q

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}"


class VariationalDequantization(nn.Module):
    r"""Variational dequantization (Ho et al. 2019, Flow++): learned noise
    :math:`u = \sigma(v)`, :math:`v \sim q(v \mid x)` a conditional flow.

    .. math::

        y = \frac{x + \sigma(v)}{K}, \qquad
        \log q(y \mid x) = \log q(v \mid c(x))
            - \sum_{i=1}^{D} \left[\log\sigma(v_i) + \log\sigma(-v_i)\right] + D \log K,

    with context :math:`c(x) = 2x/(K - 1) - 1 \in [-1, 1]^D`. Trained jointly with the model by
    maximising :math:`\log p(y) - \log q(y \mid x)`, it tightens the bound of uniform
    dequantization (which it contains: any :math:`q(u \mid x)` is allowed).

    :param input_dim: event size :math:`D`.
    :param num_levels: number of levels :math:`K \ge 2`.
    :param flow: a conditional :class:`~pyro_flows.Flow` on :math:`\mathbb{R}^D` with
        ``context_dim == input_dim``; default ``flows.realnvp(D, num_transforms,
        hidden_dims, context_dim=D)`` (``flows.maf`` when :math:`D = 1`).
    :param num_transforms: layers of the default flow.
    :param hidden_dims: hidden sizes of the default flow's conditioners.

    Cost: one base -> data pass of ``flow`` per call (``rsample_and_log_prob``, no inverse).

    Example::

        >>> deq = VariationalDequantization(4, num_levels=17, num_transforms=2, hidden_dims=(16,))
        >>> x = torch.randint(0, 17, (5, 4)).float()
        >>> y, log_q = deq(x)
        >>> y.shape, log_q.shape
        (torch.Size([5, 4]), torch.Size([5]))
        >>> bool(((y >= x / 17) & (y <= (x + 1) / 17)).all())
        True
    """

    def __init__(
        self,
        input_dim: int,
        num_levels: int,
        flow: nn.Module | None = None,
        *,
        num_transforms: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.num_levels = check_positive_int(num_levels, "num_levels", minimum=2)
        if flow is None:
            from .. import flows

            builder = flows.realnvp if input_dim >= 2 else flows.maf
            flow = builder(
                input_dim, num_transforms, hidden_dims=hidden_dims, context_dim=input_dim
            )
        flow_dim = getattr(flow, "input_dim", None)
        flow_context = getattr(flow, "context_dim", None)
        if flow_dim != input_dim or flow_context != input_dim:
            raise ValueError(
                f"VariationalDequantization needs a conditional flow with input_dim={input_dim} "
                f"and context_dim={input_dim}, got input_dim={flow_dim}, "
                f"context_dim={flow_context}"
            )
        self.flow = flow

    def context(self, x: Tensor) -> Tensor:
        """The flow's context :math:`c(x) = 2x/(K-1) - 1`."""
        return 2.0 * x / (self.num_levels - 1) - 1.0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Dequantize integer ``x`` of shape ``(..., D)``: ``(y, log q(y | x))``, shapes
        ``(..., D)`` and ``(...)``; reparametrised (gradients reach the flow)."""
        x = check_discrete(x, self.num_levels, self.input_dim, type(self).__name__)
        v, log_qv = self.flow.rsample_and_log_prob((), context=self.context(x))
        u = torch.sigmoid(v)
        log_q = log_qv - (F.logsigmoid(v) + F.logsigmoid(-v)).sum(-1)
        y = (x + u) / self.num_levels
        return y, log_q + self.input_dim * math.log(self.num_levels)

    def noise_log_prob(self, u: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log q(u \mid x)` of noise :math:`u \in (0, 1)^D` (density on the unit cube),
        by the flow's inverse pass: :math:`v = \operatorname{logit}(u)`.

        :raises ValueError: if ``u`` is outside :math:`(0, 1)` or not of ``x``'s shape.
        """
        x = check_discrete(x, self.num_levels, self.input_dim, type(self).__name__)
        ref = next(self.flow.parameters(), None)
        u = as_tensor(u, "u", ref)
        if u.shape != x.shape:
            raise ValueError(
                f"noise_log_prob expects u of the shape of x {tuple(x.shape)} (one noise value "
                f"per level), got {tuple(u.shape)}"
            )
        if not bool(((u > 0) & (u < 1)).all()):
            raise ValueError(
                "noise_log_prob expects u in the open interval (0, 1), got values in "
                f"[{u.min().item():g}, {u.max().item():g}]"
            )
        v = torch.log(u) - torch.log1p(-u)
        log_qv = self.flow.log_prob(v, context=self.context(x))
        return log_qv - (F.logsigmoid(v) + F.logsigmoid(-v)).sum(-1)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, num_levels={self.num_levels}"


class DequantizedModel(nn.Module):
    r"""A continuous flow as a model of discrete data: ``log_prob(x)`` is a lower bound on
    :math:`\log P(x)`, in nats per example.

    .. math::

        \log P(x) \ge \log p(y) - \log q(y \mid x), \qquad y \sim q(\cdot \mid x),
        \qquad \log p(y) = \log p_{\mathrm{flow}}(z) + \log\left|\det\frac{\partial z}{\partial
        y}\right|,\ z = \operatorname{logit}(\alpha + (1 - 2\alpha) y),

    a single-sample estimate whose expectation is the bound (Theis et al. 2016; Ho et al. 2019).
    The parameters are those of the flow and of the dequantizer (a variational one is trained
    jointly by maximising the same objective), so a generic trainer that only calls
    ``model.log_prob(batch).mean()`` and ``model.parameters()`` trains it.

    :param flow: a :class:`~pyro_flows.Flow` on :math:`\mathbb{R}^D` (or on :math:`[0, 1]^D`
        when ``logit=None``), optionally conditional (``context=`` is passed to it).
    :param dequantizer: :class:`UniformDequantization`, :class:`VariationalDequantization` or
        any module with ``num_levels`` whose call ``dequantizer(x)`` returns
        ``(y, log q(y | x))``.
    :param logit: :math:`\alpha` of the :class:`~pyro_flows.transforms.logit.Logit`
        pre-processing (default 0.05, RealNVP's), a ``Logit`` instance, or ``None`` for none.

    Example::

        >>> from pyro_flows import flows
        >>> model = DequantizedModel(
        ...     flows.realnvp(4, num_transforms=2, hidden_dims=(16,)), UniformDequantization(17)
        ... )
        >>> x = torch.randint(0, 17, (8, 4)).float()
        >>> model.log_prob(x).shape
        torch.Size([8])
        >>> model.sample((3,)).shape
        torch.Size([3, 4])
        >>> bpd = nats_to_bits_per_dim(-model.log_prob(x).mean(), 4)
    """

    def __init__(
        self,
        flow: nn.Module,
        dequantizer: nn.Module,
        logit: float | nn.Module | None = 0.05,
    ) -> None:
        super().__init__()
        from ..transforms.logit import Logit

        input_dim = getattr(flow, "input_dim", None)
        if not isinstance(input_dim, int):
            raise TypeError(
                f"flow must be a pyro_flows Flow (with input_dim), got {type(flow).__name__}"
            )
        num_levels = getattr(dequantizer, "num_levels", None)
        if not isinstance(num_levels, int):
            raise TypeError(
                "dequantizer must be a module with num_levels, e.g. UniformDequantization(K), "
                f"got {type(dequantizer).__name__}"
            )
        deq_dim = getattr(dequantizer, "input_dim", None)
        if deq_dim is not None and deq_dim != input_dim:
            raise ValueError(
                f"the dequantizer has input_dim={deq_dim} but the flow has input_dim={input_dim}"
            )
        if logit is None or isinstance(logit, Logit):
            pre = logit
        elif isinstance(logit, int | float) and not isinstance(logit, bool):
            if not 0.0 < logit < 0.5:
                raise ValueError(
                    f"logit (alpha) must be in (0, 0.5) so that y = 0 and y = 1 stay finite, "
                    f"got {logit}"
                )
            pre = Logit(input_dim, alpha=float(logit))
        else:
            raise TypeError(f"logit must be a float, a Logit or None, got {type(logit).__name__}")
        if pre is not None and pre.input_dim != input_dim:
            raise ValueError(
                f"the Logit layer has input_dim={pre.input_dim} but the flow has "
                f"input_dim={input_dim}"
            )
        self.flow = flow
        self.dequantizer = dequantizer
        self.logit = pre
        self.input_dim = input_dim
        self.num_levels = num_levels
        shape = getattr(flow, "event_shape", None)
        #: the flow's event shape: ``(input_dim,)``, or ``(C, H, W)`` for image flows, whose
        #: data may be passed as images ``(..., C, H, W)`` or as rows ``(..., C*H*W)``
        self.event_shape = torch.Size(shape) if shape is not None else torch.Size([input_dim])

    @property
    def _is_image(self) -> bool:
        return len(self.event_shape) > 1

    def _rows(self, x: Tensor) -> Tensor:
        """Images ``(..., *event_shape)`` of an image flow as rows ``(..., D)``; NumPy arrays
        become tensors of the flow's dtype and device first."""
        if isinstance(x, np.ndarray):
            ref = next(self.flow.parameters(), None)
            x = torch.as_tensor(x).to(
                dtype=ref.dtype if ref is not None else torch.get_default_dtype(),
                device=ref.device if ref is not None else None,
            )
        if self._is_image and isinstance(x, Tensor) and x.dim() >= len(self.event_shape):
            if x.shape[-len(self.event_shape) :] == self.event_shape:
                return x.flatten(-len(self.event_shape))
        return x

    def _check_image_shape(self, x: object) -> None:
        """For image flows: ``ValueError`` naming both accepted layouts when ``x`` (already
        through :meth:`_rows`) is neither images nor rows."""
        if not (self._is_image and isinstance(x, Tensor)):
            return
        if x.dim() >= 1 and x.shape[-1] == self.input_dim:
            return
        dims = ", ".join(map(str, self.event_shape))
        raise ValueError(
            f"{type(self).__name__} expected images of shape (..., {dims}) or rows of shape "
            f"(..., {self.input_dim}), got shape {tuple(x.shape)}"
        )

    def _flow_events(self, z: Tensor) -> Tensor:
        """Rows ``(..., D)`` in the flow's event shape."""
        return z.reshape(*z.shape[:-1], *self.event_shape) if self._is_image else z

    def data_log_prob(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The continuous density :math:`\log p(y)` on :math:`[0, 1]^D` (the data space), the
        :class:`~pyro_flows.transforms.logit.Logit` log-det included. For image flows ``y``
        may be images or rows."""
        y = self._rows(y)
        if self.logit is None:
            return self.flow.log_prob(self._flow_events(y), context)
        z, log_det = self.logit.inverse_and_log_det(y)
        return self.flow.log_prob(self._flow_events(z), context) + log_det

    def log_prob(self, x: Tensor, context: Tensor | None = None, num_samples: int = 1) -> Tensor:
        r"""Lower bound on :math:`\log P(x)` (nats) for integer ``x`` of shape ``(..., D)``
        (or ``(..., C, H, W)`` for an image flow).

        With ``num_samples = S > 1``: :math:`\log \frac1S \sum_s p(y_s)/q(y_s \mid x)`, a
        tighter bound (importance weighted), exact as :math:`S \to \infty`.
        """
        check_positive_int(num_samples, "num_samples")
        x = self._rows(x)
        self._check_image_shape(x)
        x = check_discrete(x, self.num_levels, self.input_dim, type(self).__name__)
        if num_samples > 1:
            x = x.expand(num_samples, *x.shape)
            if context is not None:
                context = context.expand(num_samples, *context.shape)
        y, log_q = self.dequantizer(x)
        bound = self.data_log_prob(y, context) - log_q
        if num_samples > 1:
            bound = torch.logsumexp(bound, 0) - math.log(num_samples)
        return bound

    def bits_per_dim(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Upper bound on :math:`-\\log_2 P(x) / D` per example (one dequantization sample)."""
        return nats_to_bits_per_dim(-self.log_prob(x, context), self.input_dim)

    @torch.no_grad()
    def sample(
        self, sample_shape: Sequence[int] | int = (), context: Tensor | None = None
    ) -> Tensor:
        r"""Discrete samples: :math:`y` from the flow (and the Logit layer), then
        :math:`x = \min(\lfloor K y \rfloor, K - 1)` clamped at 0; in the flow's event shape
        (images for image flows)."""
        z = self._rows(self.flow.sample(sample_shape, context))
        y = z if self.logit is None else self.logit.forward_without_log_det(z)
        return self._flow_events(torch.floor(y * self.num_levels).clamp(0, self.num_levels - 1))

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, num_levels={self.num_levels}"
