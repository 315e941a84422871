r"""``AutoFlow``: a Pyro autoguide whose posterior is a normalizing flow over all latent sites.

The guide follows ADVI (Kucukelbir et al., 2017): every continuous latent site is mapped to
:math:`\mathbb R^{d}` with ``biject_to(support).inv``, the pieces are concatenated into one vector
:math:`\zeta \in \mathbb R^D`, and the variational family lives on :math:`\zeta`. Where Pyro's
:class:`~pyro.infer.autoguide.AutoNormal` uses a diagonal Gaussian and
:class:`~pyro.infer.autoguide.AutoIAFNormal` an IAF whose ``init_loc_fn`` has no effect, here

.. math::

    \varepsilon \sim \mathcal N(0, I_D), \qquad
    \zeta = \mu + \sigma \odot f_K \circ \dots \circ f_1(\varepsilon),

with flow layers :math:`f_k` that start at the identity and a location-scale stage
:math:`(\mu, \sigma)` initialised at ``init_loc_fn``'s point and ``init_scale``, so the untrained
guide is exactly :math:`\mathcal N(\mu_{\mathrm{init}}, \mathrm{init\_scale}^2 I)` and training
only adds shape. The location-scale stage comes last (on the flow's output) so that the flow
layers work in standardised coordinates, and so that the start is exact even when the flow
contains permutations or rotations (they leave :math:`\mathcal N(0, I)` unchanged). Constrained
values are :math:`\theta = T(\zeta)` with ``T = biject_to(support)`` per site, and
:math:`\log q(\theta) = \log q(\zeta) - \log|\det J_T(\zeta)|`.

This module holds the guide class; its machinery lives in
:mod:`~pyro_flows.infer.autoflow_layers` (the flow layers and the stages around them),
:mod:`~pyro_flows.infer.autoflow_start` (the Gaussian start: multi-start search and Laplace
rounds) and :mod:`~pyro_flows.infer.autoflow_checks` (what the guide refuses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.params.param_store import param_with_module_name
from torch import Tensor
from torch.distributions import biject_to

from ..distribution import FlowDistribution
from ..flow import Flow
from ..transforms.affine import ElementwiseAffine as ElementwiseAffine
from ..transforms.identity_init import identity_init_
from ..transforms.rescale import softplus_inverse as softplus_inverse
from ..transforms.sinh_arcsinh import SinhArcsinh as SinhArcsinh
from ..transforms.unit_lower import UnitLowerTriangular as UnitLowerTriangular
from ._masked_latents import masked_out_log_density, masked_out_positions
from .autoflow_checks import (
    check_options,
    check_param_store,
    check_sites,
    check_subsampled_locals,
)
from .autoflow_layers import FLOW_BUILDERS, FlowSpec, build_layers, guide_flow
from .autoflow_layers import WHITEN_MAX_DIM as WHITEN_MAX_DIM
from .autoflow_start import LAPLACE_ROUNDS as LAPLACE_ROUNDS
from .autoflow_start import LAPLACE_SETTLED as LAPLACE_SETTLED
from .autoflow_start import SECOND_MODE_NATS as SECOND_MODE_NATS
from .autoflow_start import (
    START_POINTS,
    fit_gaussian_start,
    kept_start,
    outside_enclosing_plates,
)
from .gaussian_start import GaussianStart
from .gaussian_start import fit_deterministic as fit_deterministic
from .gaussian_start import fit_from_starts as fit_from_starts
from .gaussian_start import gradient_and_hessian as gradient_and_hessian
from .gaussian_start import newton_step as newton_step
from .gaussian_start import scale_and_unit_lower as scale_and_unit_lower
from .initialization import improper_safe
from .results import _forked_rng, _module_device_and_dtype

# the ``name as name`` imports keep importable from here what was before the guide's
# machinery moved to its own modules
__all__ = ["AutoFlow", "FLOW_BUILDERS", "SECOND_MODE_NATS", "START_POINTS", "WHITEN_MAX_DIM"]


class AutoFlow(AutoContinuous):
    r"""A Pyro autoguide whose posterior is a normalizing flow over all continuous latent sites.

    The posterior over the concatenated unconstrained latents :math:`\zeta \in \mathbb R^D` is

    .. math::

        q(\zeta) = \mathcal N(\varepsilon; 0, I)\,
            \Big|\det \frac{\partial \zeta}{\partial \varepsilon}\Big|^{-1}, \qquad
        \zeta = \mu + \sigma \odot f_K \circ \dots \circ f_1(\varepsilon),

    where the flow layers :math:`f_k` start at the identity and the location-scale stage
    :math:`(\mu, \sigma)` starts at ``init_loc_fn``'s point (mapped to unconstrained space) and
    ``init_scale``. A unit lower-triangular :math:`L` can sit before the location-scale stage,
    :math:`\zeta = \mu + \sigma \odot L f_K \circ \dots \circ f_1(\varepsilon)`: trained
    with ``full_rank=True`` (the family then contains every Gaussian), or, by default up to
    :data:`WHITEN_MAX_DIM` latent dimensions, fixed by the Gaussian start's Laplace step
    (``whiten``), so that the flow layers work in coordinates where the posterior is roughly
    uncorrelated. By default (with the Gaussian start) an elementwise tail stage :math:`t` sits
    between the flow layers and the location-scale stage,
    :math:`\zeta = \mu + \sigma \odot t(f_K \circ \dots \circ f_1(\varepsilon))`: a
    sinh-arcsinh map (tail power and skew per coordinate) then Tukey's h map (power-law tails,
    one weight per side and coordinate), both the identity at the start (see
    :func:`~pyro_flows.infer.autoflow_layers.tail_stages`). With ``learn_tails=True`` a
    sinh-arcsinh map is also :math:`f_1`.

    **The Gaussian start** (``gaussian_start=True``, the default): at the first call, before any
    SVI step, the Gaussian stages :math:`(\mu, \sigma, L)` are fitted by L-BFGS on the
    deterministic ELBO of ``start_draws`` fixed base draws (Giordano et al.'s DADVI; see
    :mod:`pyro_flows.infer.gaussian_start`), starting from ``init_loc_fn``'s point. SVI then
    starts from (about) the best Gaussian, and the flow layers learn only the non-Gaussian
    shape. Without it a far-off start (a regression intercept near 88 from 0, an initial loss
    of :math:`10^6`) costs Adam thousands of steps, and the huge consistent gradients drive the
    flow layers' shifts to overflow within tens of steps. The start is seeded (the global RNG is
    left untouched) and recorded in :attr:`start_result`; models whose sites cannot be sampled
    (``ImproperUniform``, Stan's implicit flat priors) start at the origin of their
    unconstrained space (:func:`~pyro_flows.infer.initialization.improper_safe`).

    Each site's value is
    :math:`\theta = \mathrm{biject\_to}(\mathrm{support})(\zeta_s)`; its ``Delta`` site carries
    :math:`-\log|\det J|` so Pyro's ELBOs see the density of :math:`\theta`. The ELBO
    maximised by SVI is
    :math:`\mathbb E_q[\log p(x, \theta) - \log q(\theta)] \le \log p(x)`.

    Works with :class:`~pyro.infer.SVI` and every Pyro ELBO (``num_particles`` and
    ``vectorize_particles=True`` included), :class:`~pyro.infer.Predictive`, plates and data
    subsampling of observed sites (global latents), :meth:`median`, :meth:`quantiles`,
    :meth:`get_posterior` and the param store (``pyro.get_param_store().save/load``).

    Cost: one guide draw is one base -> data pass of the flow; the ELBO scores the guide's own
    sample from that pass (no inverse, also for IAF, whose inverse costs ``D`` passes). The
    default ``flow="iaf"`` samples in ``num_transforms`` MADE passes.

    :param model: a Pyro model whose latent sites are all continuous.
    :param flow: a builder name (one of :data:`FLOW_BUILDERS`: ``"iaf"``, ``"maf"``, ``"nsf"``,
        ``"realnvp"``, ``"nice"``, ``"planar"``, ``"radial"``), a builder such as
        :func:`pyro_flows.flows.iaf`, or any callable ``latent_dim -> Flow``.
    :param num_transforms: number of flow layers (passed to the builder; its default if ``None``).
    :param hidden_dims: hidden widths of each layer's network; default for named builders
        ``(w, w)`` with ``w = max(32, 2 D + 2)``.
    :param init_loc_fn: per-site initialisation (Pyro's ``init_to_*``); the Gaussian start (or,
        without it, the guide) starts there. Sites that cannot be sampled start at the origin of
        their unconstrained space whatever the strategy.
    :param init_scale: initial posterior scale :math:`\sigma` in unconstrained space (> 0).
    :param num_quantile_samples: Monte Carlo draws behind :meth:`median` and :meth:`quantiles`.
    :param learn_tails: put a :class:`~pyro_flows.transforms.SinhArcsinh` layer next to the base
        (identity at the start), so the guide learns each coordinate's tail power and skew.
        For posteriors with heavier-than-Gaussian tails, such as a hierarchical model's
        log-scale: on non-centred eight schools it cut PSIS :math:`\hat k`
        from 0.57-0.78 to 0.47-0.53 (seeds 0-3, 900 steps, 100,000 draws). Measured with
        :func:`~pyro_flows.infer.fit_guide`'s defaults, off -> on, on posteriors with exact
        answers (seeds 0 and 1): a normal scale from four points (``HalfCauchy`` prior), its sd
        ratio 0.76/0.77 -> 0.92/0.93; eight schools with the thetas integrated out,
        :math:`\tau`'s 1.24/1.36 -> 1.02/1.04; a 3-D Student-t (5 dof) 0.90/0.89 -> 0.92/0.94.
        On posteriordb (seed 0) momhs, kilpisjarvi, mesquite, nes, arma, gp_regr and the HMM
        met the targets both ways (the HMM's sds 0.94-1.10 -> 0.95-1.03, kilpisjarvi's
        :math:`\hat k` 0.88 -> 0.38, arma's 0.72 -> 0.42); wall time on/off 0.90-1.49, median
        1.08 (13 pairs run side by side on a shared 2-core machine). It stays off by default
        because it hurts the 10-D funnel of ``examples/bayesian``: sd ratios 0.72-1.08 and
        0.88-1.00 (seeds 0 and 1) against 0.90-0.99 and 0.94-1.02 without, with :math:`\hat k`
        0.44 and 0.37, so the miss would be silent.
    :param tail_stage: put the elementwise tail stage
        (:func:`~pyro_flows.infer.autoflow_layers.tail_stages`: a sinh-arcsinh map, then Tukey's
        h map with one power-law tail weight per side) between the flow layers and the
        location-scale stage, the identity at the start; ``None`` (the default): on with
        ``gaussian_start``, whose standardised coordinates the stage's parameters assume
        (without the start, a 3-D funnel's fit went to NaN).
        Affine flow layers on a Gaussian base
        keep Gaussian tails, and in one dimension the guide is otherwise exactly Gaussian.
        Measured with :func:`~pyro_flows.infer.fit_guide`'s defaults, off -> on (sd ratios,
        seeds 0 / 1): a 3-D Student-t with 4 dof 0.83-0.86 -> 0.98-1.02; a ``HalfCauchy``-prior
        normal scale 0.84 / 0.85 -> 1.00 / 0.98; the eight schools' :math:`\tau` with the thetas
        integrated out 1.29 / 1.34 -> 1.02 / 0.99; a ``LogNormal``-prior scale 0.89 / 0.92 ->
        0.96 / 1.00; the 13 non-ODE posteriordb posteriors met the targets both ways (seed 0),
        fit wall time on/off median 1.22. ``docs/guides.rst`` has the full table.
    :param full_rank: put a unit lower-triangular linear map
        (:class:`~pyro_flows.transforms.UnitLowerTriangular`, the identity at the start) between
        the flow layers and the location-scale stage, so the guide's family contains
        AutoMultivariateNormal's (:math:`\mu + \sigma \odot L\varepsilon`): for posteriors
        with strong linear correlations, such as a regression's coefficients. It adds
        :math:`D(D-1)/2` parameters and a :math:`D \times D` product per draw.
    :param whiten: a *fixed* :math:`L` set by the Gaussian start's Laplace step (the Cholesky
        factor of the inverse Hessian of the deterministic ELBO at its smoothed mode, with the
        scales moved to :math:`\sigma`), stored in the param store but never trained. ``None``
        (the default): on with ``gaussian_start`` when :math:`D \le` :data:`WHITEN_MAX_DIM`.
        Measured: a trainable :math:`L` fitted regressions as well but made the funnel's sd
        ratios 0.66-0.85 (from 0.96-1.06 fixed), its entries random-walking under Adam; with
        :math:`L` next to the base instead, the flow layers' noise moved a flat-prior
        regression's means by up to 0.14 sd (0.03-0.05 here).
    :param gaussian_start: fit the Gaussian stages on a deterministic ELBO before training
        (see above); ``False`` starts exactly at ``init_loc_fn``'s point with ``init_scale``.
    :param start_draws: the number :math:`M \ge 2` of fixed base draws of the Gaussian start
        (with one draw its objective is unbounded: :math:`\mu` can follow :math:`\sigma`).
    :param start_points: the start searches the location from ``init_loc_fn``'s point and
        from ``start_points - 1`` more points drawn from :math:`U(-2, 2)^D` in the
        unconstrained space (seeded), and keeps the best optimum found. When a second distinct
        optimum is within :data:`SECOND_MODE_NATS` nats of the best, a ``UserWarning`` says the
        posterior probably has several modes; the losses are in ``start_result.optima``.
    :param path_gradient: take the ELBO's gradient through the guide's own samples only
        (Roeder et al.'s "sticking the landing" estimator, see
        :class:`~pyro_flows.distribution.FlowDistribution`): the same ELBO value and an
        unbiased gradient whose variance vanishes where the guide equals the posterior, so the
        fit settles closer to it; the price is one inverse pass per step (``D`` MADE passes per
        IAF layer). A public attribute: set ``guide.path_gradient = True`` part-way through
        training to pay for it only at the end (a JIT-compiled ELBO must then be rebuilt).
    :param flow_options: further keyword arguments for the builder (e.g. ``num_bins=``).
    :raises ValueError: a discrete latent site (named, with the enumeration recipe), a model
        with no latent sites, an unknown builder name, a non-positive ``init_scale``, or a
        callable that does not return a ``Flow`` on ``D`` dimensions.

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro_flows.infer import AutoFlow
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> pyro.clear_param_store()
    >>> guide = AutoFlow(model, num_transforms=2, hidden_dims=(16,))
    >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    >>> y = torch.randn(20) + 3.0
    >>> losses = [svi.step(y) for _ in range(20)]
    >>> sorted(guide.median(y))
    ['mu', 'sigma']

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017. https://arxiv.org/abs/1603.00788
    - D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. *Improved
      Variational Inference with Inverse Autoregressive Flow.* NeurIPS, 2016.
      https://arxiv.org/abs/1606.04934
    - D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML, 2015.
      https://arxiv.org/abs/1505.05770
    - R. Giordano, M. Ingram, T. Broderick. *Black Box Variational Inference with a
      Deterministic Objective.* JMLR 25, 2024. https://arxiv.org/abs/2304.05527
    - G. Roeder, Y. Wu, D. Duvenaud. *Sticking the Landing: Simple, Lower-Variance Gradient
      Estimators for Variational Inference.* NeurIPS, 2017. https://arxiv.org/abs/1703.09194
    """

    def __init__(
        self,
        model: Callable[..., Any],
        flow: FlowSpec = "iaf",
        *,
        num_transforms: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        init_loc_fn: Callable[..., Any] = init_to_median,
        init_scale: float = 0.1,
        num_quantile_samples: int = 10_000,
        learn_tails: bool = False,
        tail_stage: bool | None = None,
        full_rank: bool = False,
        whiten: bool | None = None,
        path_gradient: bool = False,
        gaussian_start: bool = True,
        start_draws: int = 32,
        start_points: int = START_POINTS,
        **flow_options: Any,
    ) -> None:
        check_options(
            flow,
            init_scale=init_scale,
            num_quantile_samples=num_quantile_samples,
            whiten=whiten,
            learn_tails=learn_tails,
            tail_stage=tail_stage,
            full_rank=full_rank,
            path_gradient=path_gradient,
            gaussian_start=gaussian_start,
            start_draws=start_draws,
            start_points=start_points,
            hidden_dims=hidden_dims,
        )
        self._flow_spec = flow
        self._learn_tails = learn_tails
        self._tail_stage = tail_stage
        self._full_rank = full_rank
        self._whiten = whiten
        self.path_gradient = path_gradient
        self._gaussian_start = gaussian_start
        self._start_draws = start_draws
        self._num_start_points = start_points
        #: what the deterministic Gaussian start did (``None`` before the first call or when off)
        self.start_result: GaussianStart | None = None
        self._num_transforms = num_transforms
        self._hidden_dims = None if hidden_dims is None else tuple(hidden_dims)
        self._flow_options = flow_options
        self._init_scale = float(init_scale)
        self.num_quantile_samples = num_quantile_samples
        super().__init__(model, init_loc_fn=improper_safe(init_loc_fn))

    # -- set-up ---------------------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._setup_prototype(*args, **kwargs)
        except (NotImplementedError, RuntimeError, ValueError):
            check_sites(getattr(self, "prototype_trace", None))
            raise
        check_sites(getattr(self, "prototype_trace", None))
        check_subsampled_locals(self.prototype_trace)
        # entries the model masks out of its density (obs_mask): see sample_latent
        self._masked_out = masked_out_positions(self.prototype_trace, self._unconstrained_shapes)
        init_loc = self._init_loc().detach()
        layers = identity_init_(
            build_layers(
                self._flow_spec,
                self.latent_dim,
                num_transforms=self._num_transforms,
                hidden_dims=self._hidden_dims,
                flow_options=self._flow_options,
            )
        )
        tail_stage = self._gaussian_start if self._tail_stage is None else self._tail_stage
        flow = self._build_flow(layers, init_loc, tail_stage)
        loaded = self._store_holds(flow)
        self.flow = flow
        self._store_checked = False
        if self._gaussian_start and not torch.jit.is_tracing():
            self.start_result = (
                kept_start(self._start_draws)
                if loaded
                else self._fit_start(flow, args, kwargs)
            )
            refused = not loaded and not self.start_result.accepted
            if self._tail_stage is None and tail_stage and refused:
                # the default tail stage assumes the start's standardised coordinates: on
                # unstandardised ones (a start refused, init_scale 0.1) it wrecked fits that
                # the flow layers alone got right (eight schools' ELBO -39.9 against -31.5)
                self.flow = self._build_flow(layers, init_loc, False)

    def _build_flow(self, layers: Flow, init_loc: Tensor, tail_stage: bool) -> Flow:
        """The guide's flow around ``layers`` (see
        :func:`~pyro_flows.infer.autoflow_layers.guide_flow`)."""
        # _has_linear_stage is not the module: an attribute would register it
        flow, self._has_linear_stage = guide_flow(
            layers,
            init_loc,
            self._init_scale,
            learn_tails=self._learn_tails,
            tail_stage=tail_stage,
            full_rank=self._full_rank,
            whiten=self._whiten,
            gaussian_start=self._gaussian_start,
        )
        return flow

    def _fit_start(self, flow: Flow, args: tuple, kwargs: dict) -> GaussianStart:
        """The Gaussian start, run as if outside the caller's plates (see
        :func:`~pyro_flows.infer.autoflow_start.outside_enclosing_plates`)."""
        with outside_enclosing_plates():
            return fit_gaussian_start(
                self.model,
                self,
                flow,
                linear_stage=self._has_linear_stage,
                num_draws=self._start_draws,
                num_points=self._num_start_points,
                args=args,
                kwargs=kwargs,
            )

    def _store_holds(self, flow: Flow) -> bool:
        """Whether Pyro's param store holds parameters under this guide's flow names (after
        ``pyro.get_param_store().load``: binding them replaces the fresh flow's values)."""
        with self._pyro_context:
            name = self._pyro_get_fullname("flow")
        store = pyro.get_param_store()
        return any(
            param_with_module_name(name, param_name) in store
            for param_name, _ in flow.named_parameters()
        )

    # -- the posterior --------------------------------------------------------------------------
    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        r"""The flat unconstrained latent vector, drawn from the flow. Entries the model masks
        out of its own density (Pyro's ``obs_mask`` makes a latent ``<name>_unobserved`` whose
        observed entries are masked) get the fixed density :math:`\mathcal N(0, 1)`, through
        a factor in the guide (:mod:`~pyro_flows.infer._masked_latents`): without it the
        ELBO has no maximum along them."""
        latent = super().sample_latent(*args, **kwargs)
        positions = getattr(self, "_masked_out", None)
        if positions is not None:
            pyro.factor(f"_{self._pyro_name}_masked_out",
                        -masked_out_log_density(latent, positions), has_rsample=True)
        return latent

    def get_base_dist(self) -> pyro.distributions.Distribution:
        """The standard-normal base :math:`\\mathcal N(0, I_D)` (before the flow layers)."""
        return self.flow.base_dist()

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        """The base -> unconstrained-latent map (the flow layers, then the location-scale stage)."""
        return torch.distributions.ComposeTransform(list(self.flow.transforms))

    def get_posterior(self, *args: Any, **kwargs: Any) -> pyro.distributions.Distribution:
        """The flow's distribution over the unconstrained latent vector (a fresh
        :class:`~pyro_flows.distribution.FlowDistribution`; it scores its own samples without an
        inverse pass, unless ``path_gradient`` is set)."""
        return FlowDistribution(
            self._bound_flow(*args, **kwargs), None, path_gradient=self.path_gradient
        )

    def _bound_flow(self, *args: Any, **kwargs: Any) -> Flow:
        """The posterior flow with its parameters registered in (and, after
        ``pyro.get_param_store().load``, re-bound to) Pyro's param store."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        flow = self._modules["flow"]
        with self._pyro_context:
            name = self._pyro_get_fullname("flow")
        if not self._store_checked:
            check_param_store(name, flow)
            self._store_checked = True
        pyro.module(name, flow, update_module_params=True)
        return flow  # type: ignore[return-value]

    # -- summaries --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_posterior(self, num_samples: int, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """``num_samples`` posterior draws per site in constrained space, shape
        ``(num_samples, *site_shape)``, without gradients (and without running the model, so
        the model's ``pyro.deterministic`` sites are not among them: ``pyro.infer.Predictive(
        model, guide=guide, num_samples=n)`` gives those too)."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        latent = self._bound_flow(*args, **kwargs).sample((num_samples,))
        draws: dict[str, Tensor] = {}
        pos = 0
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._unconstrained_shapes[name]
            size = math.prod(shape)
            value = latent[:, pos : pos + size].reshape((num_samples, *shape))
            draws[name] = biject_to(site["fn"].support)(value)
            pos += size
        return draws

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Posterior quantiles of every site, elementwise in constrained space, estimated from
        ``num_quantile_samples`` draws (seeded, so repeated calls agree; the global RNG is left
        untouched). Returns ``{site: tensor of shape (len(quantiles), *site_shape)}``."""
        if isinstance(quantiles, str | bytes):
            raise TypeError(
                "quantiles must be a sequence or tensor of numbers in [0, 1], got "
                f"{type(quantiles).__name__} {quantiles!r}"
            )
        try:
            q = torch.as_tensor(
                quantiles if isinstance(quantiles, Tensor) else np.asarray(quantiles, np.float64),
                dtype=torch.get_default_dtype(),
                device="cpu",
            ).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                "quantiles must be a sequence or tensor of numbers in [0, 1], got "
                f"{type(quantiles).__name__} {quantiles!r}"
            ) from None
        if q.numel() == 0 or not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles must lie in [0, 1], got {q.tolist()}")
        with _forked_rng(0, [self._flow_device(*args, **kwargs)]):
            draws = self.sample_posterior(self.num_quantile_samples, *args, **kwargs)
        return {
            name: torch.quantile(value.reshape(value.shape[0], -1), q.to(value), dim=0).reshape(
                (q.numel(),) + value.shape[1:]
            )
            for name, value in draws.items()
        }

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Posterior medians of every site (elementwise, constrained space; see
        :meth:`quantiles`)."""
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Monte Carlo mean and standard deviation of the unconstrained latent vector."""
        flow = self._bound_flow(*args, **kwargs)
        with torch.no_grad(), _forked_rng(0, [_module_device_and_dtype(flow)[0]]):
            latent = flow.sample((self.num_quantile_samples,))
        return latent.mean(0), latent.std(0)

    def _flow_device(self, *args: Any, **kwargs: Any) -> torch.device | None:
        """The device of the posterior flow (so seeded draws fork that device's RNG too)."""
        return _module_device_and_dtype(self._bound_flow(*args, **kwargs))[0]
