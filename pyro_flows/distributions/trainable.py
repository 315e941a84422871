r"""Trainable base distributions for vector flows: a diagonal Normal, a Gaussian mixture and a
Student-t with learnable degrees of freedom.

Each is an ``nn.Module`` base (see :mod:`pyro_flows.base`): ``base(context)`` returns a Pyro
distribution with event shape ``(D,)`` (the context is ignored: these bases are unconditional,
and :class:`~pyro_flows.Flow` expands them to the context's batch shape), and
``base.log_prob(z, context)`` is a fast path that :class:`~pyro_flows.Flow` calls instead of
building the distribution. Their parameters are ``nn.Parameter`` s, so ``flow.parameters()``,
:func:`~pyro_flows.infer.fit`, ``.double()``, ``.to()`` and ``state_dict`` all carry them.

Densities (all diagonal, :math:`z \in \mathbb{R}^D`):

.. math::

    \text{DiagonalNormal:}\quad \log p(z) = -\sum_d \Big(\tfrac12 t_d^2 + \log\sigma_d\Big)
        - \tfrac D2 \log 2\pi, \qquad t_d = (z_d - \mu_d)/\sigma_d,

    \text{GaussianMixture:}\quad \log p(z) = \operatorname{logsumexp}_k \Big(\log\pi_k
        - \sum_d \big(\tfrac12 t_{kd}^2 + \log\sigma_{kd}\big) - \tfrac D2 \log 2\pi\Big),
        \qquad \pi = \operatorname{softmax}(a),

    \text{StudentT:}\quad \log p(z) = \sum_d \Big(\log\Gamma\big(\tfrac{\nu_d+1}{2}\big)
        - \log\Gamma\big(\tfrac{\nu_d}{2}\big) - \tfrac12\log(\nu_d\pi)
        - \tfrac{\nu_d+1}{2}\log\big(1 + z_d^2/\nu_d\big)\Big).

Scales are stored as logs (:math:`\sigma = e^{s}`), mixture weights as logits, and degrees of
freedom as :math:`\nu = \nu_{\min} + \operatorname{softplus}(r)`, so every parameter is
unconstrained. All three log densities are finite for every finite ``z`` in float32 and float64
(the Student-t uses :math:`\log(1 + u^2) = 2\log|u| + \log(1 + u^{-2})` for :math:`|u| > 1`, so
it never overflows, and computes its normaliser in float64, with Stirling's series for large
:math:`\nu`, so it stays normalised up to :math:`\nu = 10^8` and beyond). Flows built on a
Student-t base inherit its tails: a Lipschitz flow cannot turn light tails into heavy ones
(Jaini et al.), which is why the base carries them.

Cost: ``log_prob`` is :math:`O(D)` per point (:math:`O(KD)` for a :math:`K`-component
mixture); sampling the same, plus one Gamma draw per entry for the Student-t.

References:

- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018 (a learned diagonal Gaussian base). https://arxiv.org/abs/1807.03039
- V. Stimper, D. Liu, A. Campbell, V. Berenz, L. Ryll, B. Schölkopf, J. M. Hernández-Lobato.
  *normflows: A PyTorch Package for Normalizing Flows.* JOSS, 2023 (``DiagGaussian``,
  ``GaussianMixture`` bases). https://arxiv.org/abs/2302.12014
- P. Jaini, I. Kobyzev, Y. Yu, M. Brubaker. *Tails of Lipschitz Triangular Flows.* ICML, 2020
  (Student-t bases with learned degrees of freedom). https://arxiv.org/abs/1907.04481
- M. Laszkiewicz, J. Lederer, A. Fischer. *Marginal Tail-Adaptive Normalizing Flows.* ICML,
  2022. https://arxiv.org/abs/2206.10311
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from .._numbers import check_bool, check_finite_number, has_values
from .._validation import check_event, check_positive_int, check_sample_shape

__all__ = ["DiagonalNormal", "GaussianMixture", "StudentT", "NormalMixture"]

_LOG_2PI = math.log(2 * math.pi)


def _tensor(
    value: object,
    name: str,
    owner: str,
    shape: Sequence[int],
    positive: bool = False,
    exact: bool = False,
) -> Tensor:
    """``value`` (a number, array or tensor broadcastable to ``shape``, or of exactly ``shape``
    if ``exact``) as a detached tensor of ``shape`` in torch's default dtype;
    ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a number or a tensor, got bool ({value!r})")
    try:
        t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{owner}: {name} must be a number, array or tensor, got {type(value).__name__}"
        ) from None
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be real, got dtype {t.dtype}")
    target = torch.Size(shape)
    try:
        ok = torch.broadcast_shapes(t.shape, target) == target
    except RuntimeError:
        ok = False
    if not ok or (exact and t.shape != target):
        also = "" if exact else " (or broadcast to it)"
        raise ValueError(
            f"{owner}: {name} must have shape {tuple(target)}{also}, got shape {tuple(t.shape)}"
        )
    t = t.to(device="cpu", dtype=torch.get_default_dtype()).expand(target).clone()
    if has_values(t):
        bad = ~torch.isfinite(t) | (t <= 0) if positive else ~torch.isfinite(t)
        if bool(bad.any()):
            need = "finite and > 0" if positive else "finite"
            raise ValueError(f"{owner}: {name} must be {need}, got {t[bad][:3].tolist()}")
    return t


def _check_event(z: object, input_dim: int, owner: str) -> None:
    """``z`` is a tensor of shape ``(..., input_dim)``; else ``TypeError``/``ValueError``
    naming the expected and the given shape (a shape comparison only: no host sync), not a
    silent broadcast or a deep torch error."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{owner}.log_prob expected z as a tensor, got {type(z).__name__}")
    check_event(z, input_dim, "z", owner)


def _store(module: nn.Module, name: str, value: Tensor, trainable: bool) -> None:
    """``value`` as a parameter (trainable) or a buffer of ``module``."""
    if trainable:
        module.register_parameter(name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


class DiagonalNormal(nn.Module):
    r"""A diagonal Normal :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2)` with trainable
    :math:`\mu` and :math:`\log\sigma` (normflows' ``DiagGaussian``).

    Sampling is reparametrised (:math:`z = \mu + \sigma\varepsilon`); gradients reach ``loc``
    and ``log_scale`` from samples and densities alike. Cost: :math:`O(D)` per point.

    :param input_dim: the event size ``D``.
    :param loc: initial mean, a number or a ``(D,)`` tensor (default 0).
    :param scale: initial standard deviations, ``> 0`` (default 1).
    :param trainable: ``loc`` and ``log_scale`` as parameters (else buffers: a fixed base).

    Example::

        >>> from pyro_flows import flows
        >>> flow = flows.realnvp(2, num_transforms=2, hidden_dims=(8,), base=DiagonalNormal(2))
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample((4,)).shape
        (torch.Size([3]), torch.Size([4, 2]))
        >>> sorted(n for n, _ in flow.base.named_parameters())
        ['loc', 'log_scale']
    """

    positive_everywhere = True  # a -inf log density at finite z is a float overflow

    def __init__(
        self,
        input_dim: int,
        loc: object = None,
        scale: object = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_dim = check_positive_int(input_dim, "input_dim")
        check_bool(trainable, "trainable")
        shape = (self.input_dim,)
        loc_t = torch.zeros(shape) if loc is None else _tensor(loc, "loc", owner, shape)
        scale_t = (
            torch.ones(shape) if scale is None else _tensor(scale, "scale", owner, shape, True)
        )
        _store(self, "loc", loc_t, trainable)
        _store(self, "log_scale", scale_t.log(), trainable)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.input_dim])

    @property
    def scale(self) -> Tensor:
        r""":math:`\sigma = e^{\log\sigma}`."""
        return self.log_scale.exp()

    def forward(self, context: Tensor | None = None) -> Distribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Fast path: :math:`-\sum_d (\tfrac12 t_d^2 + \log\sigma_d) - \tfrac D2\log 2\pi`;
        ``ValueError`` unless ``z`` has shape ``(..., D)``."""
        _check_event(z, self.input_dim, type(self).__name__)
        t = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * t.square().sum(-1) - self.log_scale.sum() - 0.5 * self.input_dim * _LOG_2PI

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}"


class NormalMixture(dist.MixtureSameFamily):
    r"""A mixture of diagonal Normals whose ``rsample`` is reparametrised *given the
    component*: the component index :math:`k \sim \operatorname{Cat}(\pi)` is drawn without
    gradient, then :math:`z = \mu_k + \sigma_k \odot \varepsilon`. Gradients therefore reach the
    means and scales through samples, but not the weights (a discrete choice has no pathwise
    derivative); :meth:`log_prob` is the exact mixture density and is differentiable in all.

    Built by :class:`GaussianMixture` from ``Categorical(logits)`` and
    ``Normal(loc, scale).to_event(1)`` components; ``expand`` works as for
    ``MixtureSameFamily``. Cost: :math:`O(KD)` per sample (a gather) and per density.

    Example::

        >>> d = NormalMixture(
        ...     dist.Categorical(logits=torch.zeros(2)),
        ...     dist.Normal(torch.tensor([[-3.0], [3.0]]), torch.ones(2, 1)).to_event(1),
        ... )
        >>> d.rsample((5,)).shape, d.has_rsample
        (torch.Size([5, 1]), True)
    """

    has_rsample = True

    def rsample(self, sample_shape: Sequence[int] | torch.Size = ()) -> Tensor:
        sample_shape = check_sample_shape(sample_shape)
        normal = self.component_distribution.base_dist
        loc, scale = normal.loc, normal.scale  # (*B, K, D), possibly expanded
        with torch.no_grad():
            k = self.mixture_distribution.sample(sample_shape)  # (*S, *B)
        shape = k.shape + loc.shape[-2:]
        index = k[..., None, None].expand(*k.shape, 1, loc.shape[-1])
        loc_k = torch.gather(loc.expand(shape), -2, index).squeeze(-2)
        scale_k = torch.gather(scale.expand(shape), -2, index).squeeze(-2)
        eps = torch.randn(loc_k.shape, dtype=loc.dtype, device=loc.device)
        return loc_k + scale_k * eps


class GaussianMixture(nn.Module):
    r"""A trainable mixture of :math:`K` diagonal Gaussians (normflows' ``GaussianMixture``):
    a multimodal base for data with separated modes, so the flow need not tear one Gaussian
    blob apart.

    .. math::

        p(z) = \sum_{k=1}^K \pi_k\, \mathcal N(z; \mu_k, \operatorname{diag}\sigma_k^2),
        \qquad \pi = \operatorname{softmax}(a),

    evaluated by ``logsumexp`` over the components (stable in float32 for ``|z|`` up to far
    beyond 1e3). Parameters: ``loc`` :math:`(K, D)`, ``log_scale`` :math:`(K, D)`, ``logits``
    :math:`(K,)`.

    Initialisation: unless ``loc`` is given, the means are drawn i.i.d. from
    :math:`\mathcal N(0, 1)` with a generator seeded by ``seed`` (default 0, so every build with
    the same arguments starts the same; ``seed=None`` draws from torch's global RNG), which
    spreads them around the origin at the scale of a standard Normal; scales start at 1 and the
    weights uniform unless given.

    Gradients: :meth:`log_prob` is differentiable in every parameter (maximum-likelihood
    training, :func:`~pyro_flows.infer.fit`, trains all of them). Sampling is reparametrised
    given the component (see :class:`NormalMixture`): ``rsample`` passes gradients to the means
    and scales but not to the weights, so a reverse-KL/ELBO objective sees only the weights'
    part through ``log q``, not through the sample path (the score term of the discrete choice
    is dropped and the weights' gradient is biased). For variational inference freeze them:
    ``base.logits.requires_grad_(False)``.

    Cost: :math:`O(KD)` per density and per sample.

    :param input_dim: the event size ``D``.
    :param num_components: the number of components ``K >= 1``.
    :param loc: initial means, shape ``(K, D)`` (default: random, see above).
    :param scale: initial standard deviations ``> 0``, broadcastable to ``(K, D)`` (default 1).
    :param weights: initial weights ``> 0``, shape ``(K,)``, normalised here (default uniform).
    :param trainable: parameters (else buffers: a fixed mixture).
    :param seed: seed of the random initial means (an int, or ``None`` for the global RNG).

    Example::

        >>> from pyro_flows import flows
        >>> base = GaussianMixture(2, num_components=3)
        >>> flow = flows.maf(2, num_transforms=2, hidden_dims=(8,), base=base)
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.rsample((4,)).shape
        (torch.Size([3]), torch.Size([4, 2]))
        >>> tuple(base.loc.shape), round(float(base.weights.detach().sum()), 6)
        ((3, 2), 1.0)
    """

    positive_everywhere = True  # a -inf log density at finite z is a float overflow

    def __init__(
        self,
        input_dim: int,
        num_components: int = 8,
        loc: object = None,
        scale: object = None,
        weights: object = None,
        trainable: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.num_components = check_positive_int(num_components, "num_components")
        check_bool(trainable, "trainable")
        if seed is not None:
            check_positive_int(seed, "seed", minimum=0)
        shape = (self.num_components, self.input_dim)
        if loc is None:
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            loc_t = torch.randn(shape, generator=generator)
        else:
            loc_t = _tensor(loc, "loc", owner, shape, exact=True)
        scale_t = (
            torch.ones(shape) if scale is None else _tensor(scale, "scale", owner, shape, True)
        )
        if weights is None:
            logits = torch.zeros(self.num_components)
        else:
            w = _tensor(weights, "weights", owner, (self.num_components,), True)
            logits = (w / w.sum()).log()
        _store(self, "loc", loc_t, trainable)
        _store(self, "log_scale", scale_t.log(), trainable)
        _store(self, "logits", logits, trainable)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.input_dim])

    @property
    def scale(self) -> Tensor:
        r""":math:`\sigma_{kd} = e^{\log\sigma_{kd}}`, shape ``(K, D)``."""
        return self.log_scale.exp()

    @property
    def weights(self) -> Tensor:
        r""":math:`\pi = \operatorname{softmax}(a)`, shape ``(K,)``."""
        return torch.softmax(self.logits, -1)

    def forward(self, context: Tensor | None = None) -> Distribution:
        components = dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)
        mixing = dist.Categorical(logits=self.logits, validate_args=False)
        return NormalMixture(mixing, components, validate_args=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Fast path: ``logsumexp`` over components of
        :math:`\log\pi_k - \sum_d(\tfrac12 t_{kd}^2 + \log\sigma_{kd}) - \tfrac D2\log 2\pi`;
        ``ValueError`` unless ``z`` has shape ``(..., D)``."""
        _check_event(z, self.input_dim, type(self).__name__)
        t = (z.unsqueeze(-2) - self.loc) * torch.exp(-self.log_scale)  # (..., K, D)
        per_component = -0.5 * t.square().sum(-1) - self.log_scale.sum(-1)
        log_pi = torch.log_softmax(self.logits, -1)
        return torch.logsumexp(log_pi + per_component, -1) - 0.5 * self.input_dim * _LOG_2PI

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, num_components={self.num_components}"


def _inverse_softplus(y: Tensor) -> Tensor:
    """:math:`\\log(e^y - 1)` for ``y > 0``, stably (``y + log(1 - e^{-y})``)."""
    y64 = y.double()
    return (y64 + torch.log(-torch.expm1(-y64))).to(y.dtype)


def _log1p_square(u: Tensor) -> Tensor:
    r""":math:`\log(1 + u^2)`, finite for every finite ``u``: ``log1p(u^2)`` for
    :math:`|u| \le 1`, else :math:`2\log|u| + \log(1 + u^{-2})` (no overflow of :math:`u^2`).
    Both branches see clamped inputs, so neither produces an inf/NaN gradient."""
    a = u.abs()
    small = a.clamp(max=1.0)
    big = a.clamp(min=1.0)
    return torch.where(
        a <= 1.0, torch.log1p(small.square()), 2 * big.log() + torch.log1p(big.pow(-2))
    )


_ASYMPTOTIC_DF = 30.0  # from here on the series below is exact to float64 (error < 5e-16)


def _log_normaliser_series(df: Tensor) -> Tensor:
    r"""The large-:math:`\nu` expansion of :func:`student_t_log_normaliser`,

    .. math::

        -\tfrac12\log 2\pi - \frac1{4\nu} + \frac1{24\nu^3} - \frac1{20\nu^5}
        + \frac{17}{112\nu^7} - \frac{31}{36\nu^9} + O(\nu^{-11})

    (from Stirling's series for :math:`\log\Gamma(x + \frac12) - \log\Gamma(x)`,
    :math:`x = \nu/2`): no cancellation, and it tends to the standard Normal's
    :math:`-\frac12\log 2\pi`."""
    w = df.reciprocal().square()
    poly = -1 / 4 + w * (1 / 24 + w * (-1 / 20 + w * (17 / 112 - w * (31 / 36))))
    return -0.5 * _LOG_2PI + poly / df


def student_t_log_normaliser(df: Tensor) -> Tensor:
    r""":math:`\log\Gamma(\frac{\nu+1}2) - \log\Gamma(\frac\nu2) - \frac12\log(\nu\pi)`, the log
    density of the standard Student-t at 0, computed in float64 and returned in the dtype of
    ``df``: the two ``lgamma`` below :math:`\nu = 30`, the series of
    :func:`_log_normaliser_series` from there on (in float32 the ``lgamma`` difference cancels
    catastrophically: at :math:`\nu = 10^6` it is off by 0.06). Differentiable in ``df``.

    Example::

        >>> [round(v, 5) for v in student_t_log_normaliser(torch.tensor([1.0, 1e8])).tolist()]
        [-1.14473, -0.91894]
    """
    v = df.double()
    low = v.clamp(max=_ASYMPTOTIC_DF)  # each branch sees only its own range: finite gradients
    exact = torch.lgamma(0.5 * (low + 1)) - torch.lgamma(0.5 * low) - 0.5 * torch.log(math.pi * low)
    series = _log_normaliser_series(v.clamp(min=_ASYMPTOTIC_DF))
    return torch.where(v < _ASYMPTOTIC_DF, exact, series).to(df.dtype)


def student_t_log_prob(z: Tensor, df: Tensor) -> Tensor:
    r"""Elementwise log density of the standard Student-t with ``df`` degrees of freedom:
    :math:`\log\Gamma(\frac{\nu+1}2) - \log\Gamma(\frac\nu2) - \frac12\log(\nu\pi)
    - \frac{\nu+1}2\log(1 + z^2/\nu)`, finite for every finite ``z``.

    Example::

        >>> z = torch.tensor([0.0, 1e30])
        >>> [round(v, 2) for v in student_t_log_prob(z, torch.tensor(1.0)).tolist()]  # Cauchy
        [-1.14, -139.3]
    """
    half = 0.5 * (df + 1)
    return student_t_log_normaliser(df) - half * _log1p_square(z * torch.rsqrt(df))


class StudentT(nn.Module):
    r"""Independent standard Student-t marginals with learnable degrees of freedom
    :math:`\nu_d`, one per dimension: a heavy-tailed base (tail-adaptive flows).

    .. math::

        p(z) = \prod_d \frac{\Gamma(\frac{\nu_d+1}2)}{\Gamma(\frac{\nu_d}2)\sqrt{\nu_d\pi}}
            \Big(1 + \frac{z_d^2}{\nu_d}\Big)^{-\frac{\nu_d+1}2}, \qquad
            \nu_d = \nu_{\min} + \operatorname{softplus}(r_d) > \nu_{\min}.

    Location 0 and scale 1: the flow's layers supply location and scale, the base supplies the
    tails (:math:`p(z_d) \sim |z_d|^{-(\nu_d+1)}`). The floor ``min_df`` (default 1: the base
    has a finite mean and its samples stay moderate) bounds how heavy the tails can become;
    lower it (any ``>= 0``) for data heavier-tailed than a Cauchy. As :math:`\nu \to \infty`
    the base tends to the standard Normal.

    Sampling is reparametrised (torch's Student-t: :math:`z = \varepsilon\sqrt{\nu / G}`,
    :math:`G \sim \chi^2_\nu` with implicit Gamma gradients), so gradients reach ``df`` through
    samples and through :meth:`log_prob`, which is finite for every finite ``z``.

    Cost: :math:`O(D)` per density (the normaliser, :func:`student_t_log_normaliser`, once per
    dimension in float64, shared by the batch); per sample one Normal and one Gamma draw per
    entry.

    :param input_dim: the event size ``D``.
    :param df: initial degrees of freedom ``> min_df``, a number or a ``(D,)`` tensor
        (default 5).
    :param learn_df: ``df`` as a parameter (else a buffer: a fixed Student-t).
    :param min_df: the floor :math:`\nu_{\min} \ge 0` (default 1).

    Example::

        >>> from pyro_flows import flows
        >>> flow = flows.maf(1, num_transforms=1, hidden_dims=(8,), base=StudentT(1, df=3.0))
        >>> flow.log_prob(torch.tensor([[1e3]])).isfinite().item(), flow.sample((4,)).shape
        (True, torch.Size([4, 1]))
        >>> flow.base.df.detach()
        tensor([3.])
    """

    positive_everywhere = True  # a -inf log density at finite z is a float overflow

    def __init__(
        self, input_dim: int, df: object = 5.0, learn_df: bool = True, min_df: float = 1.0
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_dim = check_positive_int(input_dim, "input_dim")
        check_bool(learn_df, "learn_df")
        self.min_df = check_finite_number(min_df, "min_df")
        if self.min_df < 0:
            raise ValueError(f"{owner}: min_df must be >= 0, got {self.min_df}")
        df_t = _tensor(df, "df", owner, (self.input_dim,), positive=True)
        low = df_t <= self.min_df
        if bool(low.any()):
            raise ValueError(
                f"{owner}: df must be > min_df={self.min_df}, got {df_t[low][:3].tolist()}"
            )
        _store(self, "raw_df", _inverse_softplus(df_t - self.min_df), learn_df)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.input_dim])

    @property
    def df(self) -> Tensor:
        r""":math:`\nu = \nu_{\min} + \operatorname{softplus}(r)`, shape ``(D,)``."""
        return self.min_df + F.softplus(self.raw_df)

    def forward(self, context: Tensor | None = None) -> Distribution:
        df = self.df
        zero = torch.zeros_like(df)
        return dist.StudentT(df, zero, zero + 1, validate_args=False).to_event(1)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Fast path: the sum over dimensions of :func:`student_t_log_prob`; ``ValueError``
        unless ``z`` has shape ``(..., D)``."""
        _check_event(z, self.input_dim, type(self).__name__)
        return student_t_log_prob(z, self.df).sum(-1)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, min_df={self.min_df}"
