r"""NUTS on a Pyro model's posterior: :func:`nuts_model`, through the model's unconstrained
potential.

``pyro.infer.mcmc.util.initialize_model`` maps every latent site to :math:`\mathbb R^{d_s}`
by a bijection :math:`T_s` (e.g. :math:`\log` for a positive site) and gives the potential

.. math::

    U(u) = -\log p\bigl(x, T^{-1}(u)\bigr) - \log\left|\det J_{T^{-1}}(u)\right|,

which Pyro's NUTS samples with the chain runner of :mod:`~pyro_flows.infer.mcmc_chains`
(chains one after another, gradient evaluations counted).

References:

- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
- E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .mcmc_chains import _Counter, _run_chains
from .results import SampleResult, _check_int, _forked_rng, _generator
from .samplers import _check_accept

__all__ = ["nuts_model"]


def _model_devices(*values: Any) -> list[torch.device]:
    """Devices a Pyro model may draw on: those of its tensor arguments and, when CUDA is in
    use, the current CUDA device."""
    devices = [v.device for v in values if isinstance(v, Tensor)]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    return devices


def nuts_model(
    model: Callable,
    *model_args: Any,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 2,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init_strategy: Callable | None = None,
    jit_compile: bool = False,
    progress: bool = True,
    seed: int | None = None,
    **model_kwargs: Any,
) -> SampleResult:
    r"""NUTS on a Pyro model's posterior, through its unconstrained potential.

    ``pyro.infer.mcmc.util.initialize_model`` gives the potential of the latent sites mapped
    to :math:`\mathbb R^D` by bijections :math:`T_s` (e.g. :math:`\log` for a positive site),

    .. math::

        U(u) = -\log p\bigl(x, T^{-1}(u)\bigr) - \log\left|\det J_{T^{-1}}(u)\right|,

    which :func:`nuts` samples. ``samples`` holds the unconstrained draws :math:`u`, flattened
    and concatenated site by site (``extra["sites"]`` maps each site to its shape, in that
    order); ``extra["constrained"]`` holds :math:`T_s^{-1}(u_s)` per site with shape
    ``(chains, draws, *site_shape)``, and :meth:`SampleResult.to_inference_data` uses these site
    names. Deterministic sites are not recorded (recompute them with
    ``pyro.infer.Predictive``).

    Cost: as :func:`nuts`; each gradient is one model evaluation and its backward pass.

    :param model: a Pyro model with continuous latent sites.
    :param model_args: positional arguments of the model.
    :param num_samples: draws kept per chain.
    :param warmup: adaptation iterations per chain.
    :param num_chains: chains, run sequentially.
    :param target_accept: the NUTS step-size target.
    :param max_tree_depth: the largest number of trajectory doublings.
    :param dense_mass: adapt a dense mass matrix.
    :param init_strategy: Pyro's per-site initialisation (default ``init_to_uniform``).
    :param jit_compile: trace the potential with the PyTorch JIT (Pyro's ``jit_compile``):
        for models with static structure it makes each gradient about 2-3 times cheaper.
    :param progress: show Pyro's progress bar per chain.
    :param seed: seeds the initialisation and chain :math:`c` (with ``seed + c``) in a forked RNG.
    :param model_kwargs: keyword arguments of the model.
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` (``method="nuts"``).

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     scale = pyro.sample("scale", dist.HalfNormal(1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(0.0, scale), obs=y)
    >>> r = nuts_model(model, torch.tensor([0.3, -0.5]), num_samples=30, warmup=30,
    ...                num_chains=1, progress=False, seed=0)
    >>> r.samples.shape, bool((r.extra["constrained"]["scale"] > 0).all())
    (torch.Size([1, 30, 1]), True)

    References:

    - M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
    - E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019.
    """
    _check_int(num_samples, "num_samples", 1)
    _check_int(warmup, "warmup", 0)
    _check_int(num_chains, "num_chains", 1)
    _check_int(max_tree_depth, "max_tree_depth", 1)
    if not isinstance(dense_mass, bool | list):  # Pyro also takes a list of site-name tuples
        raise TypeError(
            "dense_mass must be a bool or a list of tuples of site names, got "
            f"{type(dense_mass).__name__} {dense_mass!r}"
        )
    target_accept = _check_accept(target_accept)
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    _, seed = _generator(seed)
    with warnings.catch_warnings():
        # Pyro's jit_compile uses torch.jit.trace, which torch now marks as deprecated
        warnings.filterwarnings("ignore", ".*torch.jit.trace.*", DeprecationWarning)
        return _nuts_model(
            model,
            model_args,
            model_kwargs,
            num_samples=num_samples,
            warmup=warmup,
            num_chains=num_chains,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
            init_strategy=init_strategy,
            jit_compile=jit_compile,
            progress=progress,
            seed=seed,
        )


def _nuts_model(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    *,
    num_samples: int,
    warmup: int,
    num_chains: int,
    target_accept: float,
    max_tree_depth: int,
    dense_mass: bool,
    init_strategy: Callable | None,
    jit_compile: bool,
    progress: bool,
    seed: int,
) -> SampleResult:
    from pyro.infer.autoguide.initialization import init_to_uniform
    from pyro.infer.mcmc import NUTS
    from pyro.infer.mcmc.util import initialize_model

    start = time.perf_counter()
    with _forked_rng(seed, _model_devices(*model_args, *model_kwargs.values())):
        init_params, potential_fn, transforms, _ = initialize_model(
            model,
            model_args=model_args,
            model_kwargs=model_kwargs,
            num_chains=num_chains,
            init_strategy=init_strategy or init_to_uniform,
            jit_compile=jit_compile,
            skip_jit_warnings=True,
        )
    if num_chains == 1:
        init_params = {k: v.unsqueeze(0) for k, v in init_params.items()}
    sites = {name: tuple(v.shape[1:]) for name, v in init_params.items()}
    if not sites:
        raise ValueError("the model has no continuous latent sites to sample")
    potential = _Counter(potential_fn)

    def make_kernel(counted: Callable) -> Any:
        return NUTS(
            potential_fn=counted,
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            full_mass=dense_mass,
            adapt_step_size=True,
            adapt_mass_matrix=warmup > 0,
        )

    run = _run_chains(
        "nuts",
        make_kernel,
        potential,
        [{k: v[c] for k, v in init_params.items()} for c in range(num_chains)],
        num_samples=num_samples,
        warmup=warmup,
        progress=progress,
        seed=seed,
        device=next(iter(init_params.values())).device,
    )
    wall = time.perf_counter() - start
    flat, constrained = [], {}
    for name in sites:
        u = torch.stack([d[name] for d in run["draws"]])  # (chains, draws, *shape)
        flat.append(u.reshape(num_chains, num_samples, -1))
        t = transforms.get(name)
        constrained[name] = (t.inv(u) if t is not None else u).detach()
    samples = torch.cat(flat, dim=-1)
    return SampleResult(
        method="nuts",
        samples=samples,
        wall_time=wall,
        num_log_prob_evals=potential.calls,
        num_grad_evals=potential.grad_calls,
        divergences=run["divergences"],
        accept_rate=float(run["accept_prob"].nanmean()),
        step_size=run["step_size"],
        extra={
            "accept_prob": run["accept_prob"].to(samples.dtype),
            "num_steps": run["num_steps"],
            "diverging": run["diverging"],
            "constrained": constrained,
            "sites": sites,
            "warmup": warmup,
            "seed": seed,
        },
    )
