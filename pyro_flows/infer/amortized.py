r"""``AmortizedFlow``: a flow posterior conditioned on an encoder's output (the IAF posterior).

In a variational autoencoder the encoder maps a data point :math:`x` to the location
:math:`\mu(x)`, the scale :math:`\sigma(x)` and a context vector :math:`h(x)`. The amortized
posterior draws :math:`\epsilon \sim \mathcal{N}(0, I)`, sets
:math:`z_0 = \mu(x) + \sigma(x) \odot \epsilon` and pushes :math:`z_0` through :math:`T` flow
layers conditioned on :math:`h(x)`. For IAF layers (Kingma et al. 2016),

.. math::

    z_t = \mu_t(z_{t-1}, h) + s_t(z_{t-1}, h) \odot z_{t-1}, \qquad
    \log q(z_T \mid x) = \log\mathcal{N}(\epsilon; 0, I) - \sum_i \log\sigma_i(x)
    - \sum_{t=1}^{T}\sum_i \log s_{t,i}(z_{t-1}, h).

:class:`AmortizedFlow` holds the flow (the encoder is the user's); calling it with
``(loc, scale, context)`` returns an :class:`AmortizedFlowDistribution`, a Pyro distribution with
batch shape ``loc.shape[:-1]`` for ``pyro.sample`` inside a data plate. Its ``rsample`` walks
base -> data once and remembers ``(z, log q(z | x))``, so the ELBO's scoring of the guide's own
sample needs no inverse pass (an IAF would need ``latent_dim`` MADE passes per layer for it);
any other point is scored exactly by the inverse pass.

References:

* D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling, "Improved
  Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934.
* D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
  arXiv:1505.05770.
* D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014, arXiv:1312.6114.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from .. import flows as _flows
from .._validation import (
    all_finite,
    check_finite,
    check_positive_int,
    check_sample_shape,
    checked_context,
)
from ..base import StandardNormal
from ..distribution import OwnSampleMemory
from ..flow import Flow, SampleShape

__all__ = ["AmortizedFlow", "AmortizedFlowDistribution"]

_DIAGONAL = (None, "diagonal")
FlowSpec = str | Callable[..., Flow] | Flow | None


def _check_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"AmortizedFlow expected {name} to be a torch.Tensor, got {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(f"AmortizedFlow expected a floating-point {name}, got dtype {value.dtype}")
    return value


class AmortizedFlowDistribution(dist.TransformedDistribution):
    r"""The amortized posterior :math:`q(z \mid x)` for one batch of encoder outputs.

    Built by :meth:`AmortizedFlow.forward`; a ``pyro.distributions.TransformedDistribution``
    whose base is :math:`\mathcal{N}(\mathrm{loc}, \mathrm{diag}(\mathrm{scale}^2))` and whose
    transforms are the flow's layers bound to ``context``. Batch shape: the broadcast of the
    batch shapes of ``loc``, ``scale`` and ``context``; event shape ``(latent_dim,)``.

    - :meth:`rsample` / :meth:`rsample_and_log_prob`: one base -> data pass that also sums the
      log-determinants; the pair ``(z, log q(z | x))`` is remembered.
    - :meth:`log_prob` of that very tensor returns the remembered value (no inverse pass) while
      the tensor, ``loc``, ``scale``, ``context`` and every parameter and buffer of the flow hold
      the values they had at sampling time (compared entry by entry against copies, see
      :class:`~pyro_flows.distribution.OwnSampleMemory`), so an in-place edit (``p.data``
      included), an optimiser step, ``load_state_dict`` or ``.to()`` invalidates it.
    - :meth:`log_prob` of any other point runs the inverse pass (data -> base), then
      :math:`\log\mathcal{N}(z_0; \mathrm{loc}, \mathrm{scale})`.
    - :meth:`expand` (Pyro plates, vectorised particles) expands ``loc``, ``scale`` and
      ``context`` as views; the draws for the new batch elements are independent.

    Cost: ``rsample`` and scoring one's own sample: one forward pass of each layer (one MADE
    pass per IAF layer); ``log_prob`` of an external point: one inverse pass of each layer
    (``latent_dim`` MADE passes per IAF layer, a scalar root solve per planar layer).

    Example::

        >>> amortized = AmortizedFlow(2, context_dim=3, flow="iaf", hidden_dims=(8,))
        >>> d = amortized(torch.zeros(4, 2), torch.ones(4, 2), torch.randn(4, 3))
        >>> z = d.rsample()
        >>> d.batch_shape, d.event_shape, d.log_prob(z).shape
        (torch.Size([4]), torch.Size([2]), torch.Size([4]))
        >>> d.expand((5, 4)).rsample().shape
        torch.Size([5, 4, 2])

    References: Kingma et al., "Improved Variational Inference with Inverse Autoregressive
    Flow", NeurIPS 2016.
    """

    arg_constraints: dict = {}

    def __init__(
        self, amortized: AmortizedFlow, loc: Tensor, scale: Tensor, context: Tensor | None
    ) -> None:
        self.amortized = amortized
        self.loc = loc
        self.scale = scale
        self.context = context
        base = dist.Normal(loc, scale, validate_args=False).to_event(1)
        layers = [] if amortized.flow is None else list(amortized.flow.transforms)
        transforms = [t.condition(context) if t.context_dim else t for t in layers]
        self._layers = layers
        self._memory = OwnSampleMemory()
        super().__init__(base, transforms, validate_args=False)

    def _inputs(self) -> tuple[Tensor | None, ...]:
        return (self.loc, self.scale, self.context)

    def _checked_context(self) -> Tensor | None:
        """The context, checked for NaN/inf once per call (the layers then skip the check)."""
        if self.context is not None:
            check_finite(self.context, "context", "AmortizedFlowDistribution")
        return self.context

    def _context_for(self, layer: nn.Module) -> Tensor | None:
        return self.context if getattr(layer, "context_dim", None) else None

    # -- base -> data ------------------------------------------------------------------------------
    def rsample_and_log_prob(self, sample_shape: SampleShape = ()) -> tuple[Tensor, Tensor]:
        r"""Reparametrised samples ``z`` of shape ``(*sample_shape, *batch_shape, latent_dim)``
        and :math:`\log q(z \mid x)` of shape ``(*sample_shape, *batch_shape)`` in one
        base -> data pass (no inverse); the pair is remembered for :meth:`log_prob`."""
        shape = check_sample_shape(sample_shape) + self.batch_shape + self.event_shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = torch.addcmul(self.loc, self.scale, eps)
        log_q = (
            eps.square().sum(-1).mul(-0.5)
            - 0.5 * self.amortized.latent_dim * math.log(2 * math.pi)
            - torch.log(self.scale).sum(-1)
        )
        with checked_context(self._checked_context()):
            for layer in self._layers:
                z, log_det = layer.forward_and_log_det(z, self._context_for(layer))
                log_q = log_q - log_det
        self._memory.remember(z, log_q, self._inputs(), self.amortized)
        return z, log_q

    def rsample(self, sample_shape: SampleShape = ()) -> Tensor:
        """Reparametrised samples (their log density is remembered, see the class docs)."""
        return self.rsample_and_log_prob(sample_shape)[0]

    @torch.no_grad()
    def sample(self, sample_shape: SampleShape = ()) -> Tensor:
        """Samples without gradient and without log-determinants."""
        shape = check_sample_shape(sample_shape) + self.batch_shape + self.event_shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = torch.addcmul(self.loc, self.scale, eps)
        with checked_context(self._checked_context()):
            for layer in self._layers:
                z = layer.forward_without_log_det(z, self._context_for(layer))
        return z

    # -- data -> base ------------------------------------------------------------------------------
    def log_prob(self, value: Tensor) -> Tensor:
        r""":math:`\log q(\mathrm{value} \mid x)`, shape ``value.shape[:-1]`` broadcast with the
        batch shape: the remembered value for the distribution's own last sample, else the
        inverse pass.

        :raises TypeError: a value that is not a floating-point tensor, or one of another dtype
            or device than ``loc`` (cast it with ``value.to(d.loc)``).
        :raises ValueError: a value whose last dimension is not ``latent_dim``, whose batch
            shape does not broadcast with the distribution's, or that is not finite (or lies so
            far out that its log density overflows)."""
        remembered = self._memory.recall(value, self._inputs(), self.amortized)
        if remembered is not None:
            return remembered
        value = _check_tensor(value, "value")
        d = self.amortized.latent_dim
        if value.dim() == 0 or value.shape[-1] != d:
            raise ValueError(
                f"AmortizedFlowDistribution.log_prob expected a value of shape (..., {d}), "
                f"got shape {tuple(value.shape)}"
            )
        try:
            batch = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"value of shape {tuple(value.shape)} does not broadcast with the batch shape "
                f"{tuple(self.batch_shape)}"
            ) from None
        if value.dtype != self.loc.dtype or value.device != self.loc.device:
            raise TypeError(
                f"AmortizedFlowDistribution.log_prob expected a value on {self.loc.device} with "
                f"dtype {self.loc.dtype} (those of loc), got {value.device} with dtype "
                f"{value.dtype}"
            )
        check_finite(value, "value", "AmortizedFlowDistribution.log_prob")
        z = value.expand(batch + self.event_shape)
        log_det = z.new_zeros(batch)
        with checked_context(self._checked_context()):
            for layer in reversed(self._layers):
                z, ld = layer.inverse_and_log_det(z, self._context_for(layer))
                log_det = log_det + ld
        eps = (z - self.loc) / self.scale
        log_base = (
            eps.square().sum(-1).mul(-0.5)
            - 0.5 * d * math.log(2 * math.pi)
            - torch.log(self.scale).sum(-1)
        )
        log_q = log_base + log_det
        if not all_finite(log_q):  # the Normal base is positive everywhere
            bad = (~torch.isfinite(log_q)).flatten().nonzero().flatten()
            raise ValueError(
                f"AmortizedFlowDistribution.log_prob: {bad.numel()} row(s) of value (flat row "
                f"indices {bad[:10].tolist()}{'...' if bad.numel() > 10 else ''}, largest |value| "
                f"{float(value.detach().abs().max()):.3g}) lie too far out for {value.dtype}: "
                "their log density overflows (the inverse pass reaches non-finite values, or "
                "|eps|^2 / 2 exceeds the dtype's range). Score them in float64 or bring them "
                "closer to loc"
            )
        return log_q

    def expand(self, batch_shape: Any, _instance: object = None) -> AmortizedFlowDistribution:
        """The same posterior with batch shape ``batch_shape`` (``loc``, ``scale`` and
        ``context`` expanded as views)."""
        batch_shape = torch.Size(batch_shape)
        try:
            loc = self.loc.expand(batch_shape + self.loc.shape[-1:])
            scale = self.scale.expand(batch_shape + self.scale.shape[-1:])
            context = (
                None
                if self.context is None
                else self.context.expand(batch_shape + self.context.shape[-1:])
            )
        except RuntimeError:
            raise ValueError(
                f"cannot expand AmortizedFlowDistribution of batch shape "
                f"{tuple(self.batch_shape)} to {tuple(batch_shape)}"
            ) from None
        return AmortizedFlowDistribution(self.amortized, loc, scale, context)


class AmortizedFlow(nn.Module):
    r"""A guide component: the posterior :math:`q(z \mid x)` of a VAE as an encoder-fed flow.

    .. math::

        z_0 = \mu(x) + \sigma(x)\odot\epsilon,\ \epsilon\sim\mathcal{N}(0, I), \qquad
        z_T = f_T(\cdot\,; h) \circ \dots \circ f_1(z_0; h),

    .. math::

        \log q(z_T \mid x) = \log\mathcal{N}(\epsilon; 0, I) - \sum_i \log\sigma_i(x)
        - \sum_{t=1}^{T} \log\left|\det\frac{\partial f_t(z_{t-1}; h)}{\partial z_{t-1}}\right|,

    with :math:`(\mu, \sigma, h)` from the user's encoder. For IAF layers the log-determinant of
    step :math:`t` is :math:`\sum_i \log s_{t,i}(z_{t-1}, h)` (Kingma et al. 2016).

    Use it inside a guide::

        def guide(x):
            pyro.module("encoder", encoder)
            pyro.module("posterior", posterior)          # the AmortizedFlow
            loc, scale, h = encoder(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", posterior(loc, scale, h))

    :param latent_dim: size :math:`D` of :math:`z`.
    :param context_dim: size of the context :math:`h` (``None``: an unconditional flow, whose
        parameters are shared by all data points, after the amortized Gaussian).
    :param flow: a builder name from :mod:`pyro_flows.flows` (``"iaf"``, ``"planar"``,
        ``"maf"``, ``"nsf"``, ...), ``None`` or ``"diagonal"`` for the plain diagonal Gaussian
        (no layers; a given ``context`` is then checked and unused), a builder function from
        :mod:`pyro_flows.flows` (called like a name), a ready :class:`~pyro_flows.Flow`, or any
        callable ``flow(latent_dim, context_dim) -> Flow``. The flow's base must be the standard
        Normal (it is replaced by :math:`\mathcal{N}(\mu, \sigma^2)`).
    :param num_transforms: number of flow layers (builders only).
    :param hidden_dims: hidden sizes of the layers' networks (builders only; ``None`` keeps the
        builder's default).
    :param flow_options: further keyword options for the builder (e.g. ``permutation``).

    Cost: calling it builds a distribution (no network pass). Sampling and scoring the sample:
    one forward pass per layer (1 MADE pass per IAF layer). Scoring an external point: one
    inverse pass per layer (``latent_dim`` MADE passes per IAF layer).

    Example::

        >>> import pyro
        >>> posterior = AmortizedFlow(2, context_dim=3, flow="iaf", num_transforms=2,
        ...                           hidden_dims=(16,))
        >>> loc, scale, h = torch.zeros(5, 2), torch.ones(5, 2), torch.randn(5, 3)
        >>> with pyro.plate("data", 5):
        ...     z = pyro.sample("z", posterior(loc, scale, h))
        >>> z.shape
        torch.Size([5, 2])
        >>> AmortizedFlow(2, None, flow="diagonal")(loc, scale).log_prob(z).shape
        torch.Size([5])

    References:

    * Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational Inference
      with Inverse Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934.
    * Rezende, Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int | None = None,
        flow: FlowSpec = "iaf",
        *,
        num_transforms: int = 2,
        hidden_dims: Any = None,
        **flow_options: Any,
    ) -> None:
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.context_dim = (
            None if context_dim is None else check_positive_int(context_dim, "context_dim")
        )
        check_positive_int(num_transforms, "num_transforms")
        self.flow: Flow | None = self._build(flow, num_transforms, hidden_dims, flow_options)
        if self.flow is not None:
            self._check_flow(self.flow)

    def _build(
        self, flow: FlowSpec, num_transforms: int, hidden_dims: Any, options: dict[str, Any]
    ) -> Flow | None:
        if isinstance(flow, str) and flow not in _DIAGONAL:
            if flow not in _flows.BUILDERS:
                raise ValueError(
                    f"flow must be 'diagonal', None, one of {_flows.builder_names()}, a "
                    f"builder, a Flow or a callable; got {flow!r}"
                )
            flow = _flows.get_builder(flow)
        if flow in _DIAGONAL:
            if options or hidden_dims is not None:
                raise TypeError(
                    "the diagonal posterior has no layers, so it takes no hidden_dims or flow "
                    f"options; got {sorted(options) + (['hidden_dims'] if hidden_dims else [])}"
                )
            return None
        if isinstance(flow, Flow):
            return flow
        if not callable(flow):
            raise TypeError(
                f"flow must be a builder name, a builder, a Flow or a callable, got "
                f"{type(flow).__name__}"
            )
        if any(flow is spec.build for spec in _flows.BUILDERS.values()):
            if hidden_dims is not None:
                options = {**options, "hidden_dims": hidden_dims}
            built = flow(
                self.latent_dim,
                num_transforms=num_transforms,
                context_dim=self.context_dim,
                **options,
            )
        else:
            built = flow(self.latent_dim, self.context_dim)
        if not isinstance(built, Flow):
            raise TypeError(
                f"flow callable must return a pyro_flows.Flow, got {type(built).__name__}"
            )
        return built

    def _check_flow(self, flow: Flow) -> None:
        if flow.input_dim != self.latent_dim:
            raise ValueError(
                f"the flow acts on input_dim={flow.input_dim}, expected latent_dim="
                f"{self.latent_dim}"
            )
        if flow.context_dim != self.context_dim:
            raise ValueError(
                f"the flow has context_dim={flow.context_dim}, expected context_dim="
                f"{self.context_dim}"
            )
        if not isinstance(flow.base, StandardNormal):
            raise ValueError(
                "AmortizedFlow replaces the flow's base by N(loc, scale): the flow must have the "
                f"standard Normal base, got {type(flow.base).__name__}"
            )

    def _reference(self) -> Tensor | None:
        return next(chain(self.parameters(), self.buffers()), None)

    def forward(
        self, loc: Tensor, scale: Tensor, context: Tensor | None = None
    ) -> AmortizedFlowDistribution:
        r"""The posterior for one batch of encoder outputs.

        :param loc: :math:`\mu(x)`, shape ``(*B, latent_dim)``.
        :param scale: :math:`\sigma(x) > 0`, shape broadcastable with ``loc``.
        :param context: :math:`h(x)`, shape ``(*B, context_dim)`` (``None`` if the flow is
            unconditional).
        :return: an :class:`AmortizedFlowDistribution` of batch shape ``B`` (the broadcast of
            the three batch shapes) and event shape ``(latent_dim,)``.
        :raises ValueError: wrong event sizes, batch shapes that do not broadcast, a
            non-positive or non-finite scale, a non-finite loc or context, or a
            missing/unexpected context.
        :raises TypeError: non-tensors, or a dtype/device other than the flow's.
        """
        D = self.latent_dim
        loc = _check_tensor(loc, "loc")
        scale = _check_tensor(scale, "scale")
        for name, t in (("loc", loc), ("scale", scale)):
            if t.dim() == 0 or t.shape[-1] != D:
                raise ValueError(
                    f"AmortizedFlow expected {name} of shape (..., {D}) (latent_dim={D}), got "
                    f"shape {tuple(t.shape)}"
                )
        if self.context_dim is None:
            if context is not None:
                raise ValueError(
                    "AmortizedFlow was built with context_dim=None but a context of shape "
                    f"{tuple(context.shape)} was given"
                )
        else:
            if context is None:
                raise ValueError(
                    f"AmortizedFlow was built with context_dim={self.context_dim} and needs a "
                    f"context of shape (..., {self.context_dim}), got None"
                )
            context = _check_tensor(context, "context")
            if context.dim() == 0 or context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"AmortizedFlow expected context of shape (..., {self.context_dim}) "
                    f"(context_dim={self.context_dim}), got shape {tuple(context.shape)}"
                )
        tensors = {"loc": loc, "scale": scale}
        if context is not None:
            tensors["context"] = context
        ref = self._reference()
        first = ref if ref is not None else loc
        for name, t in tensors.items():
            if t.dtype != first.dtype or t.device != first.device:
                raise TypeError(
                    f"AmortizedFlow lives on {first.device} with dtype {first.dtype}, but {name} "
                    f"is on {t.device} with dtype {t.dtype}"
                )
        try:
            batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors.values()))
        except RuntimeError:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
            raise ValueError(
                f"AmortizedFlow: the batch shapes of loc, scale and context do not broadcast "
                f"({shapes})"
            ) from None
        if not bool((scale > 0).all()) or not all_finite(scale):
            raise ValueError(
                "AmortizedFlow expected a positive, finite scale; got min "
                f"{float(scale.min()):.3g} and {int((~torch.isfinite(scale)).sum())} non-finite "
                "entries (map the encoder output through softplus or exp)"
            )
        if not all_finite(loc):
            raise ValueError(
                f"AmortizedFlow expected a finite loc; got "
                f"{int((~torch.isfinite(loc)).sum())} non-finite entries"
            )
        if context is not None:
            check_finite(context, "context", "AmortizedFlow")
        loc = loc.expand(batch + (D,))
        scale = scale.expand(batch + (D,))
        if context is not None:
            context = context.expand(batch + context.shape[-1:])
        return AmortizedFlowDistribution(self, loc, scale, context)

    def extra_repr(self) -> str:
        kind = "diagonal" if self.flow is None else f"{len(self.flow.transforms)} layers"
        return f"latent_dim={self.latent_dim}, context_dim={self.context_dim}, {kind}"
