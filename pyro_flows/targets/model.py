r"""Any Pyro model, with its data bound through its arguments, as a :class:`Target` on the
unconstrained space of all its latent sites.

Each latent site :math:`x_s` with support :math:`S_s` is written as :math:`x_s = T_s(u_s)`,
:math:`T_s = \texttt{biject\_to}(S_s)`, and the :math:`u_s` are flattened in the order the model
first samples them into one vector :math:`z \in \mathbb{R}^D`. The target is the log joint in
those coordinates,

.. math::

    \log \tilde p(z) = \sum_{s\ \mathrm{latent}} \log p\big(x_s \mid \mathrm{pa}(x_s)\big)
    + \sum_{o\ \mathrm{observed}} \log p\big(y_o \mid \mathrm{pa}(y_o)\big)
    + \sum_{s} \log\left|\det \frac{\partial T_s}{\partial u_s}\right|,

the same density as the potential of Pyro's HMC/NUTS (``initialize_model``), so its normaliser
is the model evidence :math:`Z = p(y)` (unknown: ``log_Z`` is ``None``). Each :math:`T_s` is
built from the support of the site *as the model runs*, so supports that depend on other latents
(``Uniform(0, a)`` with ``a`` latent) are handled exactly; scale and mask handlers
(``poutine.scale``, ``poutine.mask``, ``pyro.factor``) count as they do in Pyro's ELBOs.

Batches of points are evaluated in one model run: the model runs under an extra outer
``pyro.plate`` of size :math:`N` at dim :math:`-(\text{max\_plate\_nesting} + 1)`, with each
site's :math:`u_s` shaped ``(N, 1, ..., 1, *site_shape)``, the way Pyro vectorises ELBO
particles. Models whose code does not broadcast over that extra dim (e.g. ``X @ w`` on a latent
``w``) are detected at construction by comparing against a per-point loop on a few points; they
run once per point under ``torch.func.vmap`` (the model sees one point's values, as written, at
about the cost of one vectorised run; argument validation off inside it), or, where ``vmap``
cannot run them either (control flow on a latent's value), in the loop, with a warning that
says which (``run_mode``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median, init_to_uniform
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from .base import Target

__all__ = ["ModelTarget", "model_target"]

_BATCH_PLATE = "_pyro_flows_target_batch"


class _NotVectorizable(ValueError):
    """The model's log joint does not broadcast over an outer batch plate."""


class _UnconstrainedValues(Messenger):
    """Sets every latent site to ``biject_to(fn.support)(u)`` and records the log-determinants."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        super().__init__()
        self.values = values
        self.log_dets: dict[str, Tensor] = {}
        self.constrained: dict[str, Tensor] = {}

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        name = msg["name"]
        if name not in self.values:
            raise ValueError(
                f"the model sampled a latent site {name!r} that its first run did not have; "
                "ModelTarget needs a fixed set of latent sites (no stochastic control flow)"
            )
        u = self.values[name]
        t = biject_to(msg["fn"].support)
        x = t(u)
        msg["value"] = x
        self.log_dets[name] = t.log_abs_det_jacobian(u, x)
        self.constrained[name] = x


def _latent_sites(trace: poutine.Trace) -> list[dict[str, Any]]:
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _site_log_prob(site: dict[str, Any]) -> Tensor:
    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(lp, site["scale"], site["mask"])


class ModelTarget(Target):
    r"""A Pyro model (data bound through its arguments) as a target on :math:`\mathbb{R}^D`, the
    unconstrained space of its latent sites.

    .. math::

        \log \tilde p(z) = \log p\big(y, x = T(z)\big) + \log|\det J_T(z)|, \qquad
        Z = p(y) \ \ (\text{unknown, } \texttt{log\_Z = None}).

    :math:`z` stacks the flattened unconstrained values :math:`u_s` of the latent sites in
    ``site_names`` order (the order of the model's first run); ``site_shapes`` and
    ``unconstrained_shapes`` give each site's shape (they differ for e.g. a simplex, whose
    :math:`K` coordinates come from :math:`K - 1` unconstrained ones). :meth:`unpack` maps
    :math:`z` (with any batch dims) to the constrained site values, :meth:`pack` back.
    ``log_prob`` equals minus the potential of ``pyro.infer.mcmc.util.initialize_model`` at the
    same point (tested), and is evaluated for a whole batch in one vectorised model run when the
    model allows (``vectorized``), else point by point.

    Discrete latent sites are refused (marginalise them out first, or use Pyro's own
    enumeration with MCMC), as are plates that subsample (their log joint is random) and models
    without latent sites.

    Cost: ``log_prob`` of :math:`N` points is one model run (vectorised) or :math:`N` runs.

    :param model: a Pyro model (callable).
    :param model_args: positional arguments of the model (e.g. the data).
    :param model_kwargs: keyword arguments of the model.
    :param max_plate_nesting: the number of nested plates; guessed from one run by default.
    :param vectorize: ``True`` always vectorise, ``False`` always loop, ``None`` (default) check
        the vectorised run, then the ``vmap`` one, against the loop on three points and take
        the first that agrees (``run_mode`` says which).

    Example:

    >>> import pyro, pyro.distributions as dist
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> target = ModelTarget(model, (torch.tensor([1.0, 2.0, 3.0]),))
    >>> target.dim, target.site_names, target.vectorized
    (2, ('mu', 'sigma'), True)
    >>> target.log_prob(torch.zeros(5, 2)).shape
    torch.Size([5])
    >>> target.unpack(torch.tensor([2.0, 0.0]))["sigma"]
    tensor(1.)

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017 (the unconstrained joint density).
    - E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019.
    """

    name = "model"
    has_exact_samples = False

    def __init__(
        self,
        model: Callable[..., Any],
        model_args: tuple[Any, ...] = (),
        model_kwargs: dict[str, Any] | None = None,
        max_plate_nesting: int | None = None,
        vectorize: bool | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if not isinstance(model_args, tuple):
            raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
        if vectorize is not None and not isinstance(vectorize, bool):
            raise TypeError(f"vectorize must be None, True or False, got {vectorize!r}")
        model_kwargs = dict(model_kwargs or {})
        with poutine.block():
            trace = poutine.trace(model).get_trace(*model_args, **model_kwargs)
        sites = _latent_sites(trace)
        self._check_sites(trace, sites)
        guessed = max(
            (
                -frame.dim
                for site in trace.nodes.values()
                if site["type"] == "sample"
                for frame in site["cond_indep_stack"]
                if frame.vectorized
            ),
            default=0,
        )
        if max_plate_nesting is None:
            max_plate_nesting = guessed
        elif isinstance(max_plate_nesting, bool) or not isinstance(max_plate_nesting, int):
            raise TypeError(
                f"max_plate_nesting must be an int, got {type(max_plate_nesting).__name__}"
            )
        elif max_plate_nesting < guessed:
            raise ValueError(
                f"max_plate_nesting={max_plate_nesting} is smaller than the model's plate "
                f"nesting ({guessed})"
            )
        names, shapes, u_shapes, batch_dims = [], {}, {}, {}
        for site in sites:
            u = biject_to(site["fn"].support).inv(site["value"])
            names.append(site["name"])
            shapes[site["name"]] = tuple(site["value"].shape)
            u_shapes[site["name"]] = tuple(u.shape)
            batch_dims[site["name"]] = len(site["fn"].batch_shape)
        sizes = [math.prod(u_shapes[n]) for n in names]
        if sum(sizes) == 0:
            raise ValueError("the model's latent sites are all empty (size 0): nothing to target")
        super().__init__(sum(sizes))
        self.model = model
        self.model_args, self.model_kwargs = model_args, model_kwargs
        self.max_plate_nesting = max_plate_nesting
        self.name = getattr(model, "__name__", type(model).__name__)
        self.site_names: tuple[str, ...] = tuple(names)
        self.site_shapes: dict[str, tuple[int, ...]] = shapes
        self.unconstrained_shapes: dict[str, tuple[int, ...]] = u_shapes
        self._batch_dims = batch_dims
        self._sizes = sizes
        #: how a batch of points runs: ``"vectorised"``, ``"vmap"`` or ``"loop"``
        self.run_mode = self._choose_run_mode(vectorize, trace)
        self.vectorized = self.run_mode == "vectorised"

    # -- where it lives ------------------------------------------------------------------------
    def _data_tensors(self) -> list[Tensor]:
        values = (*self.model_args, *self.model_kwargs.values())
        return [v for v in values if isinstance(v, Tensor)]

    @property
    def device(self) -> torch.device:
        """The device of the model's tensor arguments (its data), else of the target's buffers:
        a model whose data lives on a GPU is sampled there."""
        data = self._data_tensors()
        return data[0].device if data else super().device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's first floating tensor argument, else of the buffers."""
        floating = [t for t in self._data_tensors() if t.is_floating_point()]
        return floating[0].dtype if floating else super().dtype

    # -- construction checks -----------------------------------------------------------------
    @staticmethod
    def _check_sites(trace: poutine.Trace, sites: list[dict[str, Any]]) -> None:
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            for frame in site["cond_indep_stack"]:
                if frame.full_size is not None and frame.full_size != frame.size:
                    raise ValueError(
                        f"plate {frame.name!r} subsamples {frame.size} of {frame.full_size} "
                        "elements, which makes the log joint random; ModelTarget needs the "
                        "full data (drop subsample_size)"
                    )
        for site in sites:
            support = site["fn"].support
            if support.is_discrete or site["infer"].get("enumerate"):
                raise ValueError(
                    f"latent site {site['name']!r} is discrete (support {support}); ModelTarget "
                    "needs continuous latent sites: marginalise it out of the model, or use "
                    "Pyro's enumeration in an MCMC kernel instead"
                )
        if not sites:
            raise ValueError(
                "the model has no latent sample sites (every site is observed): "
                "there is nothing to sample"
            )

    def _choose_run_mode(self, vectorize: bool | None, trace: poutine.Trace) -> str:
        """``"vectorised"`` (one model run with a batch plate), ``"vmap"`` (the model once per
        point under ``torch.func.vmap``) or ``"loop"``: the first that agrees with the loop on
        three points, unless ``vectorize`` says."""
        if vectorize is not None:
            return "vectorised" if vectorize else "loop"
        z0 = self._pack_trace(trace).detach()
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(2, self.dim, generator=generator, device="cpu")
        points = torch.stack([z0, z0 + 0.1 * noise[0].to(z0), z0 - 0.1 * noise[1].to(z0)])
        with torch.no_grad():
            slow = self._run_loop(points)[0]  # errors here are the model's own: raise them
        tries: list[tuple[str, Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]]] = [
            ("vmap", self._run_vmapped)
        ]
        if any(b > self.max_plate_nesting for b in self._batch_dims.values()):
            reason = "a latent site has more batch dims than plates"
        else:
            tries.insert(0, ("vectorised", self._run_vectorized))
        for mode, run in tries:
            try:
                with torch.no_grad():
                    fast = run(points)[0]
                ok = fast.shape == slow.shape and torch.allclose(
                    fast, slow, rtol=1e-4, atol=1e-4, equal_nan=True
                )
                why = "vectorised and per-point log densities differ"
            except Exception as e:  # noqa: BLE001 - any failure means: not this way
                ok, why = False, f"{type(e).__name__}: {e}".splitlines()[0]
            if ok and mode == "vectorised":
                return mode
            if mode == "vectorised":
                reason = why
            elif ok:
                self._warn_unbroadcast(reason, "once per point under torch.func.vmap (about "
                                       "the cost of one vectorised run)")
                return mode
        self._warn_unbroadcast(reason, "once per point in a loop")
        return "loop"

    def _warn_unbroadcast(self, reason: str, how: str) -> None:
        warnings.warn(
            f"ModelTarget: the model {self.name!r} does not broadcast over an outer batch plate "
            f"({reason}); log_prob runs the model {how}",
            UserWarning,
            stacklevel=4,
        )

    # -- z <-> sites -------------------------------------------------------------------------
    def _split(self, flat: Tensor, batched: bool) -> dict[str, Tensor]:
        values, offset = {}, 0
        for name, size in zip(self.site_names, self._sizes, strict=True):
            part = flat[..., offset : offset + size]
            offset += size
            shape = self.unconstrained_shapes[name]
            if batched:
                pad = (1,) * (self.max_plate_nesting - self._batch_dims[name])
                values[name] = part.reshape((flat.shape[0],) + pad + shape)
            else:
                values[name] = part.reshape(shape)
        return values

    def _pack_trace(self, trace: poutine.Trace) -> Tensor:
        parts = []
        for name in self.site_names:
            if name not in trace.nodes:
                raise ValueError(f"the model's run has no site {name!r}")
            site = trace.nodes[name]
            parts.append(biject_to(site["fn"].support).inv(site["value"]).reshape(-1))
        return torch.cat(parts)

    # -- running the model -------------------------------------------------------------------
    def _run_single(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        messenger = _UnconstrainedValues(self._split(z, batched=False))
        with poutine.block():
            trace = poutine.trace(messenger(self.model)).get_trace(
                *self.model_args, **self.model_kwargs
            )
        total = z.new_zeros(())
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                total = total + _site_log_prob(site).sum()
        for log_det in messenger.log_dets.values():
            total = total + log_det.sum()
        return total, messenger.constrained

    def _run_loop(self, flat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        runs = [self._run_single(point) for point in flat]
        values = {n: torch.stack([r[1][n] for r in runs]) for n in self.site_names}
        return torch.stack([r[0] for r in runs]), values

    def _run_vmapped(self, flat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        def one(z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            # argument checks branch on values, which vmap cannot: off inside it
            with pyro.validation_enabled(False):
                return self._run_single(z)

        return torch.func.vmap(one, randomness="different")(flat)  # type: ignore[no-any-return]

    def _run_vectorized(self, flat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        n, depth = flat.shape[0], self.max_plate_nesting + 1
        messenger = _UnconstrainedValues(self._split(flat, batched=True))

        def batched_model(*args: Any, **kwargs: Any) -> Any:
            with pyro.plate(_BATCH_PLATE, n, dim=-depth):
                return self.model(*args, **kwargs)

        with poutine.block():
            trace = poutine.trace(messenger(batched_model)).get_trace(
                *self.model_args, **self.model_kwargs
            )

        def per_point(t: Tensor, name: str, event_dims_left: bool = False) -> Tensor:
            # a log-density has the batch shape (n, *plates); a log-det may keep event dims
            if t.dim() < depth:
                t = t.reshape((1,) * (depth - t.dim()) + t.shape)
            if t.shape[0] not in (1, n) or (t.dim() > depth and not event_dims_left):
                raise _NotVectorizable(
                    f"site {name!r} has log-density shape {tuple(t.shape)}, expected its batch "
                    f"plate of size {n} at dim {-depth}"
                )
            return t.reshape(t.shape[0], -1).sum(-1).expand(n)

        total = flat.new_zeros(n)
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                total = total + per_point(_site_log_prob(site), site["name"])
        for name, log_det in messenger.log_dets.items():
            total = total + per_point(log_det, name, event_dims_left=True)
        values = {
            name: messenger.constrained[name].reshape((n,) + self.site_shapes[name])
            for name in self.site_names
        }
        return total, values

    def _run(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        batch = z.shape[:-1]
        if not batch:
            return self._run_single(z)
        flat = z.reshape(-1, self.dim)
        if flat.shape[0] == 0:
            return z.new_zeros(batch), {
                n: z.new_zeros(batch + self.site_shapes[n]) for n in self.site_names
            }
        run = {"vectorised": self._run_vectorized, "vmap": self._run_vmapped,
               "loop": self._run_loop}[self.run_mode]
        total, values = run(flat)
        return total.reshape(batch), {
            n: v.reshape(batch + self.site_shapes[n]) for n, v in values.items()
        }

    # -- the Target interface ----------------------------------------------------------------
    def _log_prob(self, z: Tensor) -> Tensor:
        if z.device.type != "meta" and bool(z.isnan().any()):
            # Pyro's distributions would refuse the NaN deep inside the model's trace
            rows = z.isnan().reshape(-1, self.dim).any(-1).nonzero().flatten()
            raise ValueError(
                f"{type(self).__name__}.log_prob got NaN in {rows.numel()} row(s) of z of shape "
                f"{tuple(z.shape)} (flat row indices {rows[:10].tolist()}); the model cannot be "
                "evaluated at NaN"
            )
        return self._run(z)[0]

    def unpack(self, z: Tensor) -> dict[str, Tensor]:
        """The constrained site values at ``z`` (shape ``(..., dim)``): a dict of tensors of shape
        ``(*z.shape[:-1], *site_shapes[name])``, differentiable in ``z``."""
        return self._run(self._check(z))[1]

    def pack(self, values: dict[str, Tensor]) -> Tensor:
        """The unconstrained point ``z`` of constrained site ``values`` (the inverse of
        :meth:`unpack`); leading batch dims, shared by all sites, are kept."""
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict of site tensors, got {type(values).__name__}")
        missing = [n for n in self.site_names if n not in values]
        if missing:
            raise ValueError(f"values lacks the latent sites {missing}; expected {self.site_names}")
        first = self.site_names[0]
        v0 = torch.as_tensor(values[first])
        batch = v0.shape[: v0.dim() - len(self.site_shapes[first])]
        flat: dict[str, Tensor] = {}
        for name in self.site_names:
            v = torch.as_tensor(values[name])
            if tuple(v.shape) != tuple(batch) + self.site_shapes[name]:
                raise ValueError(
                    f"site {name!r}: expected shape {tuple(batch) + self.site_shapes[name]} "
                    f"(batch {tuple(batch)} + site shape {self.site_shapes[name]}), "
                    f"got {tuple(v.shape)}"
                )
            flat[name] = v.reshape((-1,) + self.site_shapes[name])
        points = []
        for i in range(math.prod(batch)):
            data = {name: flat[name][i] for name in self.site_names}
            with poutine.block():
                trace = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                    *self.model_args, **self.model_kwargs
                )
            points.append(self._pack_trace(trace))
        if not points:
            return torch.zeros(*batch, self.dim, dtype=self.dtype, device=self.device)
        return torch.stack(points).reshape(*batch, self.dim)

    def initial_params(
        self, init_strategy: Callable[..., Any] | None = None, num_attempts: int = 100
    ) -> dict[str, Tensor]:
        """A starting point ``{"z": tensor of shape (dim,)}`` with a finite log density.

        Tries ``init_strategy`` (default Pyro's ``init_to_median(num_samples=15)``), then up to
        ``num_attempts`` draws of ``init_to_uniform`` (uniform in :math:`[-2, 2]` on the
        unconstrained scale), as ``pyro.infer.mcmc.util.initialize_model`` does. Draws from
        torch's global RNG.
        """
        strategies = [init_strategy or init_to_median(num_samples=15)]
        strategies += [init_to_uniform] * num_attempts
        for strategy in strategies:
            with poutine.block():
                trace = poutine.trace(InitMessenger(strategy)(self.model)).get_trace(
                    *self.model_args, **self.model_kwargs
                )
            z = self._pack_trace(trace).detach()
            with torch.no_grad():
                if torch.isfinite(self.log_prob(z)):
                    return {"z": z}
        raise ValueError(
            f"found no initial point with a finite log density in {num_attempts + 1} attempts"
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, sites={list(self.site_names)}, "
            f"max_plate_nesting={self.max_plate_nesting}, vectorized={self.vectorized}"
        )


def model_target(model: Callable[..., Any], *model_args: Any, **model_kwargs: Any) -> ModelTarget:
    r"""``ModelTarget(model, model_args, model_kwargs)``: the model's posterior on its
    unconstrained space, :math:`\log\tilde p(z) = \log p(y, T(z)) + \log|\det J_T(z)|`.

    Every argument after ``model`` goes to the model; use :class:`ModelTarget` itself for the
    options (``max_plate_nesting``, ``vectorize``).

    Example:

    >>> import pyro, pyro.distributions as dist
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> target = model_target(model, torch.tensor([0.5, 1.5]))
    >>> target.dim, target.log_Z
    (1, None)

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017.
    """
    return ModelTarget(model, model_args, model_kwargs)
