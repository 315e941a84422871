r"""NeuTra: Hamiltonian Monte Carlo in the base space of a flow trained by reverse KL.

Hoffman et al. (2019): if :math:`x = f(\varepsilon)` is a flow with :math:`q \approx p`, the
pulled-back density

.. math::

    \tilde p_f(\varepsilon) = \tilde p(f(\varepsilon))\,
        \Big|\det \frac{\partial f}{\partial \varepsilon}\Big|
    = \mathcal N(\varepsilon; 0, I)\, \frac{\tilde p(f(\varepsilon))}{q(f(\varepsilon))}

is close to a standard normal (exactly so when :math:`q = p / Z`), which NUTS samples with
short trajectories and large steps; draws :math:`\varepsilon_i` map back to :math:`x_i =
f(\varepsilon_i)`, exact draws from :math:`p` up to MCMC error, whatever the flow's bias. Both
normalisers agree: :math:`\int \tilde p_f = \int \tilde p = Z`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .mcmc import nuts, nuts_model
from .results import (
    SampleResult,
    TargetDensity,
    _check_int,
    _generator,
    _module_device_and_dtype,
    _same_device,
    as_target,
)

__all__ = ["flow_forward", "neutra", "neutra_log_prob", "neutra_model"]


def _check_base_points(flow: nn.Module, eps: object) -> None:
    """``flow`` a flow with ``transforms`` and ``eps`` a floating tensor ``(..., dim)`` in the
    flow's dtype and on its device, else a clear error."""
    if not hasattr(flow, "transforms"):
        raise TypeError(
            "flow must be a pyro_flows.Flow (a module with .transforms), got "
            f"{type(flow).__name__}"
        )
    if not isinstance(eps, Tensor):
        raise TypeError(
            f"eps must be a torch.Tensor of base points, shape (..., dim), got {type(eps).__name__}"
        )
    device, dtype = _module_device_and_dtype(flow)
    if not eps.is_floating_point() or (dtype is not None and eps.dtype != dtype):
        raise TypeError(
            f"eps must have the flow's dtype {dtype or 'floating point'}, got {eps.dtype}: pass "
            f"eps.to({dtype or torch.get_default_dtype()}) (or move the flow to eps' dtype)"
        )
    if device is not None and not _same_device(eps.device, device):
        raise ValueError(f"eps is on {eps.device} but the flow on {device}: move one of them")
    dim = getattr(flow, "input_dim", None)
    if eps.dim() == 0 or (isinstance(dim, int) and eps.shape[-1] != dim):
        raise ValueError(
            f"eps must have shape (..., {dim if isinstance(dim, int) else 'dim'}), got "
            f"{tuple(eps.shape)}"
        )


def flow_forward(flow: nn.Module, eps: Tensor) -> tuple[Tensor, Tensor]:
    r"""Push base points through the flow: ``(x, log|det df/deps|)`` for given ``eps``.

    Unlike :meth:`~pyro_flows.Flow.rsample_and_log_prob`, the base points are inputs, so the map
    can be differentiated in :math:`\varepsilon` (the NeuTra potential needs that):
    :math:`x = f_K \circ \dots \circ f_1(\varepsilon)`,
    :math:`\log|\det J| = \sum_k \log|\det J_{f_k}|`.

    ``eps`` must be a floating tensor of shape ``(..., dim)`` in the flow's dtype and on its
    device: it is not converted (a float64 ``eps`` through a float32 flow would silently lose
    precision, and its gradient would be the float32 one), so a mismatch is a ``TypeError``
    naming both dtypes (a non-tensor or non-floating ``eps`` too), and a wrong last dimension
    or device a ``ValueError``.

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.iaf(3, num_transforms=2)
    >>> eps = torch.randn(4, 3)
    >>> x, log_det = flow_forward(flow, eps)
    >>> base = torch.distributions.Normal(0, 1).log_prob(eps).sum(-1)
    >>> bool(torch.allclose(base - log_det, flow.log_prob(x), atol=1e-4))
    True

    References:

    - G. Papamakarios et al. *Normalizing Flows for Probabilistic Modeling and Inference.*
      JMLR 22, 2021, eq. (2)-(5). https://arxiv.org/abs/1912.02762
    """
    _check_base_points(flow, eps)
    x = eps
    log_det = eps.new_zeros(eps.shape[:-1])
    for t in flow.transforms:
        x, ld = t.forward_and_log_det(x)
        log_det = log_det + ld
    return x, log_det


def _flow_target(flow: nn.Module, target: Any) -> TargetDensity:
    """``target`` read by :func:`~pyro_flows.infer.results.as_target` at the flow's dimension,
    checked to live on the flow's device."""
    dim = getattr(flow, "input_dim", None)
    density = as_target(target, dim if isinstance(dim, int) else None)
    flow_device, _ = _module_device_and_dtype(flow)
    if (
        density.device is not None
        and flow_device is not None
        and not _same_device(density.device, flow_device)
    ):
        raise ValueError(
            f"the target lives on {density.device} but the flow on {flow_device}: move one of "
            f"them (e.g. target.to({str(flow_device)!r}))"
        )
    return density


def neutra_log_prob(flow: nn.Module, target: Any) -> Callable[[Tensor], Tensor]:
    r"""The pulled-back log density :math:`\log\tilde p(f(\varepsilon)) + \log|\det J_f|`.

    ``target`` is a callable log density or an object with ``.log_prob``, read by
    :func:`~pyro_flows.infer.results.as_target` at the flow's ``input_dim`` (a target of
    another dimension, or on another device than the flow, is a ``ValueError``; its outputs
    are checked). The flow's parameters are used as they are (call
    ``flow.requires_grad_(False)`` to keep MCMC from building graphs through them).

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.realnvp(2, num_transforms=1)
    >>> log_p = lambda x: -0.5 * (x**2).sum(-1)
    >>> eps = torch.randn(3, 2)
    >>> pulled = neutra_log_prob(flow, log_p)(eps)
    >>> x, log_q = flow_forward(flow, eps)[0], flow.log_prob(flow_forward(flow, eps)[0])
    >>> base = torch.distributions.Normal(0, 1).log_prob(eps).sum(-1)
    >>> bool(torch.allclose(pulled, base + log_p(x) - log_q, atol=1e-5))
    True

    References:

    - M. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
      Transport.* 2019, eq. (2). https://arxiv.org/abs/1903.03704
    """
    density = _flow_target(flow, target)

    def log_prob(eps: Tensor) -> Tensor:
        x, log_det = flow_forward(flow, eps)
        return density(x) + log_det

    return log_prob


def neutra(
    flow: nn.Module,
    target: Any,
    *,
    training_grad_evals: int = 0,
    num_samples: int = 1000,
    warmup: int = 500,
    num_chains: int = 2,
    progress: bool = True,
    seed: int | None = 0,
    **nuts_options: Any,
) -> SampleResult:
    r"""NUTS on the flow's pulled-back density, draws mapped back to the target's space.

    .. math::

        \varepsilon \sim \tilde p_f(\varepsilon) \propto \tilde p(f(\varepsilon))
            |\det J_f(\varepsilon)|, \qquad x = f(\varepsilon) \sim p.

    The chains start at base points drawn from :math:`\mathcal N(0, I)` (the flow's guess of
    the typical set). The flow is frozen (no gradients, eval mode) during sampling and left
    as it was after, ``requires_grad`` and ``training`` flags included.

    Cost: every leapfrog step is one flow forward pass plus one target gradient. The result's
    ``num_grad_evals`` counts the target gradients of sampling *plus* ``training_grad_evals``
    (pass :attr:`~pyro_flows.infer.TargetFitHistory.grad_evals` of the reverse-KL fit), so ESS
    per gradient compares honestly with plain NUTS; ``extra`` keeps both parts, the base-space
    draws and the sampling-only counts.

    :param flow: a trained :class:`~pyro_flows.Flow` (unconditional).
    :param target: a callable log density or an object with ``.log_prob`` and ``dim``.
    :param training_grad_evals: target gradients spent training the flow.
    :param num_samples: draws kept per chain.
    :param warmup: NUTS adaptation iterations per chain.
    :param num_chains: chains (run one after another), an int >= 1.
    :param progress: progress bars.
    :param seed: an int or ``None``: seeds the chains' starts and the chains (see
        :func:`~pyro_flows.infer.mcmc.nuts`; ``None``: a seed drawn from the global RNG).
    :param nuts_options: more keyword arguments for :func:`~pyro_flows.infer.mcmc.nuts`.
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` with ``method="neutra"``.
    :raises TypeError: a ``num_chains`` or ``seed`` that is not an int.
    :raises ValueError: ``num_chains < 1``, a negative ``training_grad_evals``, a flow without
        an int ``input_dim``, or what :func:`~pyro_flows.infer.mcmc.nuts` raises.

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.realnvp(2, num_transforms=1)
    >>> log_p = lambda x: -0.5 * (x**2).sum(-1)
    >>> r = neutra(flow, log_p, num_samples=30, warmup=30, num_chains=1, progress=False)
    >>> r.samples.shape, r.method
    (torch.Size([1, 30, 2]), 'neutra')

    References:

    - M. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan. *NeuTra-lizing
      Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
      https://arxiv.org/abs/1903.03704
    """
    if not isinstance(training_grad_evals, int) or training_grad_evals < 0:
        raise ValueError(
            f"training_grad_evals must be a non-negative int, got {training_grad_evals!r}"
        )
    if not isinstance(getattr(flow, "input_dim", None), int):
        raise ValueError(
            "cannot tell the dimension: neutra needs a flow with an int input_dim (a "
            f"pyro_flows.Flow), got {type(flow).__name__}"
        )
    dim = int(flow.input_dim)
    _check_int(num_chains, "num_chains", 1)
    # drawn on the CPU, so a seed gives the same chains' starts on every device; None: a seed
    # drawn from the global RNG, then used for the starts and the chains alike
    generator, seed = _generator(seed)
    pulled_back = neutra_log_prob(flow, target)  # checks the target against the flow
    device, dtype = _module_device_and_dtype(flow)
    was = [p.requires_grad for p in flow.parameters()]
    modes = [(m, m.training) for m in flow.modules()]
    flow.requires_grad_(False)
    flow.eval()
    try:
        init = torch.randn(num_chains, dim, generator=generator, device="cpu").to(
            device=device, dtype=dtype or torch.get_default_dtype()
        )
        base = nuts(
            pulled_back,
            dim=dim,
            device=init.device,
            num_samples=num_samples,
            warmup=warmup,
            num_chains=num_chains,
            init=init,
            progress=progress,
            seed=seed,
            **nuts_options,
        )
        started = time.perf_counter()
        with torch.no_grad():
            x, _ = flow_forward(flow, base.samples)
        mapping_time = time.perf_counter() - started
    finally:  # the flow as it was: trainability and train/eval mode, module by module
        for p, flag in zip(flow.parameters(), was, strict=True):
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training
    extra = dict(base.extra)
    extra.update(
        base_samples=base.samples,
        sampling_grad_evals=base.num_grad_evals,
        training_grad_evals=training_grad_evals,
    )
    return SampleResult(
        method="neutra",
        samples=x,
        wall_time=base.wall_time + mapping_time,
        num_log_prob_evals=base.num_log_prob_evals,
        num_grad_evals=base.num_grad_evals + training_grad_evals,
        divergences=base.divergences,
        accept_rate=base.accept_rate,
        step_size=base.step_size,
        extra=extra,
    )


def neutra_model(
    model: Callable[..., Any],
    guide: Any,
    *model_args: Any,
    training_grad_evals: int = 0,
    num_samples: int = 1000,
    warmup: int = 500,
    num_chains: int = 2,
    progress: bool = True,
    seed: int | None = 0,
    **model_kwargs: Any,
) -> SampleResult:
    r"""NeuTra for a Pyro model through Pyro's :class:`~pyro.infer.reparam.NeuTraReparam`.

    ``guide`` is a trained :class:`~pyro_flows.infer.AutoFlow` (any ``AutoContinuous``
    works); the model is reparametrised so that NUTS runs on the flow's base variable
    :math:`\varepsilon` with the pulled-back density, and every latent site is recovered from
    :math:`\theta = T(f(\varepsilon))`.

    :returns: a :class:`~pyro_flows.infer.results.SampleResult` (``method="neutra"``) whose
        ``samples`` are the base-space draws and whose ``extra["constrained"]`` holds every
        site's draws, ``{site: (chains, draws, *shape)}``; ``num_grad_evals`` includes
        ``training_grad_evals``.

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro_flows.infer import AutoFlow
    >>> def model():
    ...     pyro.sample("x", dist.LogNormal(0.0, 1.0))
    >>> pyro.clear_param_store()
    >>> guide = AutoFlow(model, num_transforms=1, hidden_dims=(8,))
    >>> r = neutra_model(model, guide, num_samples=20, warmup=20, num_chains=1, progress=False)
    >>> r.extra["constrained"]["x"].shape[:2], bool((r.extra["constrained"]["x"] > 0).all())
    (torch.Size([1, 20]), True)

    References:

    - M. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
      Transport.* 2019. https://arxiv.org/abs/1903.03704
    """
    from pyro.infer.reparam import NeuTraReparam

    if getattr(guide, "prototype_trace", None) is None:
        guide(*model_args, **model_kwargs)
    guide.requires_grad_(False)
    reparam = NeuTraReparam(guide)
    reparam_model = reparam.reparam(model)
    result = nuts_model(
        reparam_model,
        *model_args,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        progress=progress,
        seed=seed,
        **model_kwargs,
    )
    constrained = result.extra.get("constrained", {})
    shared = [name for name in constrained if name.endswith("_shared_latent")]
    if len(shared) != 1:
        raise RuntimeError(
            f"NeuTra run should record one '<site>_shared_latent' site, got {sorted(constrained)}"
        )
    base = constrained[shared[0]]
    with torch.no_grad():
        flat = base.reshape(-1, base.shape[-1])
        sites = reparam.transform_sample(flat)
    chains, draws = base.shape[:2]
    site_draws = {
        name: value.reshape(chains, draws, *value.shape[1:]) for name, value in sites.items()
    }
    extra = dict(result.extra)
    extra.update(
        constrained=site_draws,
        sampling_grad_evals=result.num_grad_evals,
        training_grad_evals=training_grad_evals,
    )
    return SampleResult(
        method="neutra",
        samples=base,
        wall_time=result.wall_time,
        num_log_prob_evals=result.num_log_prob_evals,
        num_grad_evals=result.num_grad_evals + training_grad_evals,
        divergences=result.divergences,
        accept_rate=result.accept_rate,
        step_size=result.step_size,
        extra=extra,
    )
