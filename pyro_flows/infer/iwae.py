r"""Importance-weighted estimates of :math:`\log p(x)` per data point (the IWAE bound).

For a model :math:`p(x, z)` and a guide :math:`q(z \mid x)` whose local latents live in a data
plate, draw :math:`z_{n,1..K} \sim q(\cdot \mid x_n)` and weight them by
:math:`w_{n,k} = p(x_n, z_{n,k}) / q(z_{n,k} \mid x_n)`:

.. math::

    \mathcal{L}_K(x_n) = \log \frac{1}{K} \sum_{k=1}^{K} w_{n,k}
    \;\le\; \log p(x_n), \qquad
    \mathcal{L}_1 \le \mathcal{L}_K \le \mathcal{L}_{K+1}
    \ \text{(in expectation)}, \qquad \mathcal{L}_K \to \log p(x_n).

:math:`\mathcal{L}_1` is the ELBO; with the exact posterior as guide every
:math:`w_{n,k} = p(x_n)` and :math:`\mathcal{L}_K = \log p(x_n)` for any :math:`K`. The standard
held-out figure for VAEs is :math:`\mathcal{L}_{5000}` (Burda et al.) or
:math:`\mathcal{L}_{1000}`.

The :math:`K` samples are vectorised by an outer ``pyro.plate`` at dim
``-(max_plate_nesting + 1)`` (as Pyro's ``vectorize_particles`` does), in chunks of
``chunk_size`` to bound memory; the chunks are combined with ``logsumexp``. For training with
this bound as the objective, use Pyro's ``RenyiELBO(alpha=0, num_particles=K)``.

References:

* Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
  arXiv:1509.00519.
* D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling, "Improved
  Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016 (held-out
  :math:`\log p(x)` by importance sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from .._progress import progress_bar
from .._validation import check_positive_int

__all__ = ["iwae_log_likelihood", "log_importance_weights"]

_PARTICLES = "_iwae_particles"


def _vectorized(fn: Callable[..., Any], num_samples: int, dim: int) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(_PARTICLES, num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _sample_sites(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def _check_callables(model: object, guide: object) -> None:
    for name, fn in (("model", model), ("guide", guide)):
        if not callable(fn):
            raise TypeError(
                f"{name} must be a callable Pyro {name} (a function or a module), got "
                f"{type(fn).__name__}"
            )


def _plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    """The deepest vectorised plate of one (unvectorised) guide + replayed model run."""
    _check_callables(model, guide)
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    dims = [
        -frame.dim
        for trace in (guide_trace, model_trace)
        for site in _sample_sites(trace).values()
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def _site_log_prob(name: str, site: dict[str, Any], data_plate: str, rank: int) -> Tensor:
    """The site's unscaled, masked log-density summed over every batch dim except the
    particle dim (first) and the data plate's dim: shape ``(K or 1, N or 1)``."""
    frame = next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)
    if frame is None or not frame.vectorized:
        kind = "observed" if site["is_observed"] else "latent"
        raise ValueError(
            f"iwae_log_likelihood needs every sample site inside the vectorised plate "
            f"{data_plate!r} (the per-datapoint factorisation); {kind} site {name!r} is in plates "
            f"{[f.name for f in site['cond_indep_stack'] if f.name != _PARTICLES]}. Global "
            "latents have no per-datapoint bound: condition on them or integrate them out"
        )
    if frame.full_size is not None and frame.full_size != frame.size:
        raise ValueError(
            f"iwae_log_likelihood needs the whole plate {data_plate!r} in every pass, but it "
            f"subsamples {frame.size} of {frame.full_size} points: pass the data in batches "
            "without subsample_size"
        )
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    mask = site["mask"]
    if mask is not None and mask is not True:
        log_p = torch.where(torch.as_tensor(mask, device=log_p.device), log_p, 0.0)
    if log_p.dim() > rank:
        raise ValueError(
            f"site {name!r} has batch shape {tuple(log_p.shape)}, with more dims than the "
            f"{rank - 1} declared by plates: declare the extra dims with plates or .to_event()"
        )
    log_p = log_p.reshape((1,) * (rank - log_p.dim()) + log_p.shape)
    data_dim = rank + frame.dim
    others = [d for d in range(1, rank) if d != data_dim]
    return log_p.sum(others) if others else log_p


def log_importance_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 100,
    data_plate: str = "data",
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> Tensor:
    r"""Per-datapoint log importance weights :math:`\log p(x_n, z_{n,k}) - \log q(z_{n,k}\mid x_n)`.

    One vectorised pass: the guide runs inside a ``pyro.plate`` of ``num_samples`` particles at
    dim ``-(max_plate_nesting + 1)``, the model is replayed on its samples, and every sample
    site's log-density (model sites counted positively, guide sites negatively, auxiliary guide
    sites included, as in ``Trace_ELBO``) is summed over all batch dims except the particle dim
    and the dim of the plate named ``data_plate``.

    Scales (``poutine.scale``, subsampling) are ignored: the weights are those of the unscaled
    model; masks are applied.

    :param model: Pyro model; its local latents and observations inside ``pyro.plate(data_plate,
        N)``.
    :param guide: Pyro guide with the same latent sites (inside the same plate).
    :param args: positional arguments of ``model`` and ``guide``.
    :param num_samples: :math:`K`, the number of importance samples per data point.
    :param data_plate: name of the plate over data points.
    :param max_plate_nesting: the deepest plate dim of the model and guide (found by one
        unvectorised trial run when ``None``).
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :return: tensor of shape ``(num_samples, N)``.
    :raises ValueError: a sample site outside the data plate (a global latent or observation),
        a model latent the guide does not sample, a subsampled data plate, or a missing plate.

    Cost: one guide pass and one model pass on ``num_samples * N`` rows; memory proportional
    to ``num_samples * N`` (use :func:`iwae_log_likelihood` for large ``num_samples``).

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the exact posterior N(x/2, 1/2)
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
        >>> log_importance_weights(model, guide, torch.tensor([0.0, 1.0]), num_samples=3).shape
        torch.Size([3, 2])

    References: Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """
    check_positive_int(num_samples, "num_samples")
    _check_callables(model, guide)
    if not isinstance(data_plate, str):
        raise TypeError(f"data_plate must be a plate name (str), got {type(data_plate).__name__}")
    if max_plate_nesting is None:
        max_plate_nesting = _plate_nesting(model, guide, args, kwargs)
    check_positive_int(max_plate_nesting, "max_plate_nesting", minimum=0)
    rank = max_plate_nesting + 1
    guide_trace = poutine.trace(_vectorized(guide, num_samples, -rank)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(_vectorized(model, num_samples, -rank), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    guide_sites = _sample_sites(guide_trace)
    model_sites = _sample_sites(model_trace)
    missing = [
        name
        for name, site in model_sites.items()
        if not site["is_observed"] and name not in guide_sites
    ]
    if missing:
        raise ValueError(
            f"the model's latent sites {missing} are not sampled by the guide: the importance "
            "weights need q for every latent"
        )
    if not any(site["is_observed"] for site in model_sites.values()):
        raise ValueError("the model has no observed site: nothing to compute log p(x) of")
    log_w: Tensor | None = None
    for sign, sites in ((1.0, model_sites), (-1.0, guide_sites)):
        for name, site in sites.items():
            term = sign * _site_log_prob(name, site, data_plate, rank)
            log_w = term if log_w is None else log_w + term
    assert log_w is not None
    data_size = next(
        f.size for s in model_sites.values() for f in s["cond_indep_stack"] if f.name == data_plate
    )
    return log_w.expand(num_samples, data_size)


@torch.no_grad()
def iwae_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    chunk_size: int = 100,
    data_plate: str = "data",
    max_plate_nesting: int | None = None,
    return_elbo: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The :math:`K`-sample IWAE bound on :math:`\log p(x_n)` for every data point.

    .. math::

        \mathcal{L}_K(x_n) = \log\frac1K\sum_{k=1}^K
        \frac{p(x_n, z_{n,k})}{q(z_{n,k}\mid x_n)}, \qquad z_{n,k} \sim q(\cdot \mid x_n),

    computed from :func:`log_importance_weights` in chunks of ``chunk_size`` samples,
    :math:`\mathcal{L}_K = \mathrm{logsumexp}_c\,\mathrm{logsumexp}_{k \in c} \log w_{n,k}
    - \log K`, under ``torch.no_grad()``. It is a stochastic lower bound: fix the seed
    (``torch.manual_seed``) for reproducible numbers.

    :param model: Pyro model, local latents and observations inside
        ``pyro.plate(data_plate, N)``; no global latents (a site outside the plate raises).
    :param guide: Pyro guide sampling the model's latents inside the same plate.
    :param args: positional arguments of ``model`` and ``guide`` (e.g. the data batch).
    :param num_samples: :math:`K`.
    :param chunk_size: samples per vectorised pass (memory grows with ``chunk_size * N``).
    :param data_plate: name of the plate over data points.
    :param max_plate_nesting: deepest plate dim (found by a trial run when ``None``).
    :param return_elbo: also return the ELBO estimate :math:`\frac1K\sum_k \log w_{n,k}` from the
        same samples.
    :param progress: a progress bar over the chunks (off: ``False``).
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :return: :math:`\mathcal{L}_K(x_n)`, shape ``(N,)``; with ``return_elbo`` the pair
        ``(iwae, elbo)``.

    Cost: ``ceil(num_samples / chunk_size)`` vectorised guide + model passes of
    ``chunk_size * N`` rows (guides built on :class:`~pyro_flows.infer.amortized.AmortizedFlow`
    score their own samples with no inverse pass).

    Example::

        >>> import math, pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the exact posterior: every weight equals p(x)
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
        >>> x = torch.tensor([0.0, 1.0])
        >>> bound = iwae_log_likelihood(model, guide, x, num_samples=20, chunk_size=8,
        ...                             progress=False)
        >>> exact = dist.Normal(0.0, 2**0.5).log_prob(x)
        >>> torch.allclose(bound, exact, atol=1e-5)
        True

    References:

    * Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
      arXiv:1509.00519.
    * Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
      NeurIPS 2016.
    """
    check_positive_int(num_samples, "num_samples")
    check_positive_int(chunk_size, "chunk_size")
    if not isinstance(return_elbo, bool):
        raise TypeError(
            f"return_elbo must be a bool (True or False), got {type(return_elbo).__name__} "
            f"{return_elbo!r}"
        )
    if max_plate_nesting is None:
        max_plate_nesting = _plate_nesting(model, guide, args, kwargs)
    sizes = [min(chunk_size, num_samples - start) for start in range(0, num_samples, chunk_size)]
    chunks: list[Tensor] = []
    elbo_sum: Tensor | None = None
    for size in progress_bar(sizes, desc="IWAE", unit="chunk", enabled=progress):
        log_w = log_importance_weights(
            model,
            guide,
            *args,
            num_samples=size,
            data_plate=data_plate,
            max_plate_nesting=max_plate_nesting,
            **kwargs,
        )
        if torch.isnan(log_w).any():
            raise ValueError("a log importance weight is NaN: check the model and guide")
        chunks.append(torch.logsumexp(log_w, 0))
        total = log_w.double().sum(0)
        elbo_sum = total if elbo_sum is None else elbo_sum + total
    iwae = torch.logsumexp(torch.stack(chunks), 0) - math.log(num_samples)
    if not return_elbo:
        return iwae
    assert elbo_sum is not None
    return iwae, (elbo_sum / num_samples).to(iwae.dtype)
