r"""The chain runner behind :func:`~pyro_flows.infer.mcmc.nuts`, :func:`~pyro_flows.infer.mcmc.hmc`
and :func:`~pyro_flows.infer.mcmc_model.nuts_model`: Pyro's ``MCMC``, one chain after another,
with the costs and per-draw statistics recorded.

A Pyro kernel (``NUTS``/``HMC``) samples :math:`p(z) \propto e^{-U(z)}` given the potential
:math:`U`. The potential is wrapped by :class:`_Counter`, which counts the calls that take a
gradient, so that the cost of the run is the number of points at which :math:`\nabla U` was
computed (warm-up and step-size search included: the cost unit of ESS per gradient evaluation,
Hoffman et al., 2019). A ``hook_fn`` (:class:`_Recorder`) records for every kept draw the
gradient evaluations (leapfrog steps) it took and its acceptance probability, recovered from
Pyro's running mean :math:`\bar a_i` of the acceptance as
:math:`a_i = \bar a_{i-1} + (i + 1)(\bar a_i - \bar a_{i-1})`.

Chains run **one after another in this process** (no multiprocessing): Pyro's parallel chains
spawn worker processes, which is fragile (pickling of closures, start-up cost) and buys nothing
on a machine with two cores. Each chain runs in a forked RNG seeded with ``seed + c``, so a
seeded run leaves the global RNG as it was.

References:

- E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019.
- M. D. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan.
  *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._progress import progress_bar
from .results import _forked_rng

__all__: list[str] = []


class _Counter:
    """Counts calls of a Pyro potential: all calls, and the calls made to take a gradient."""

    def __init__(self, potential_fn: Callable[[dict[str, Tensor]], Tensor]) -> None:
        self.potential_fn = potential_fn
        self.calls = 0
        self.grad_calls = 0

    def __call__(self, params: dict[str, Tensor]) -> Tensor:
        self.calls += 1
        if torch.is_grad_enabled() and any(v.requires_grad for v in params.values()):
            self.grad_calls += 1
        return self.potential_fn(params)


class _Recorder:
    """A Pyro ``hook_fn`` recording, per kept draw, the acceptance probability and the
    gradient evaluations (leapfrog steps) it took."""

    def __init__(self, grads: Callable[[], int], num_samples: int) -> None:
        self.grads = grads
        self.accept = torch.full((num_samples,), math.nan, dtype=torch.float64, device="cpu")
        self.num_steps = torch.zeros(num_samples, dtype=torch.long, device="cpu")
        self._last_grads = grads()  # the counter is shared by the chains
        self._last_mean = 0.0

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        g = self.grads()
        mean = getattr(kernel, "_mean_accept_prob", None)  # Pyro's running mean, reset after
        if stage.startswith("Sample"):  # warm-up; recover this draw's value from it
            self.num_steps[i] = g - self._last_grads
            if isinstance(mean, float):
                prev = self._last_mean if i > 0 else 0.0
                self.accept[i] = min(1.0, max(0.0, prev + (i + 1) * (mean - prev)))
        self._last_grads = g
        self._last_mean = mean if isinstance(mean, float) else 0.0


def _run_chains(
    method: str,
    make_kernel: Callable[[Callable], Any],
    potential: _Counter,
    inits: list[dict[str, Tensor]],
    *,
    num_samples: int,
    warmup: int,
    progress: bool,
    seed: int | None,
    device: torch.device,
) -> dict[str, Any]:
    """Run one Pyro ``MCMC`` per chain; Pyro's kernels draw from the global RNG, which is
    forked (CPU and ``device``) so that a seeded run leaves it as it was."""
    from pyro.infer.mcmc import MCMC

    draws: list[dict[str, Tensor]] = []
    accept, steps, diverging, step_sizes = [], [], [], []
    num_divergent = 0
    # our bar, fed by the hook: Pyro's own bar is drawn from log records of "pyro.infer.mcmc",
    # so it froze at 0% wherever the "pyro" logger was quieted (as the CLI does), and it is off
    # whenever a CI variable is set
    bar = progress_bar(
        total=len(inits) * (warmup + num_samples), desc=method, enabled=progress, leave=True
    )
    with bar:
        for c, init in enumerate(inits):
            kernel = make_kernel(potential)
            recorder = _Recorder(lambda: potential.grad_calls, num_samples)
            chain = f"{method}, chain {c + 1}/{len(inits)}" if len(inits) > 1 else method

            def hook(
                kernel: Any,
                params: Any,
                stage: str,
                i: int,
                recorder: _Recorder = recorder,
                label: list[str] = [chain, ""],  # noqa: B006 (one per chain)
            ) -> None:
                recorder(kernel, params, stage, i)
                if stage != label[1] or bar.n % 25 == 0:
                    label[1] = stage
                    bar.set_description(f"{label[0]} ({stage.lower()})", refresh=False)
                    step_size = getattr(kernel, "step_size", None)
                    if isinstance(step_size, float):
                        bar.set_postfix(step_size=f"{step_size:.3g}", refresh=False)
                bar.update(1)

            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup,
                initial_params=init,
                num_chains=1,
                disable_progbar=True,
                hook_fn=hook,
            )
            with _forked_rng(None if seed is None else seed + c, [device]):
                mcmc.run()
            draws.append({k: v.detach() for k, v in mcmc.get_samples().items()})
            div = torch.zeros(num_samples, dtype=torch.bool, device="cpu")
            # Pyro's per-chain sampler statistics; mcmc.diagnostics() would also compute split
            # R-hat, which asserts at least 4 draws (a single draw is a valid budget here)
            chain_diag = getattr(mcmc, "_diagnostics", None)
            if chain_diag:
                found = chain_diag[0].get("divergences", [])
            else:
                found = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
            div[torch.as_tensor(list(found), dtype=torch.long, device="cpu")] = True
            num_divergent += int(div.sum())
            accept.append(recorder.accept)
            steps.append(recorder.num_steps)
            diverging.append(div)
            step_sizes.append(float(kernel.step_size))
    return {  # the statistics on the draws' device, like the draws
        "draws": draws,
        "accept_prob": torch.stack(accept).to(device),
        "num_steps": torch.stack(steps).to(device),
        "diverging": torch.stack(diverging).to(device),
        "step_size": torch.tensor(step_sizes, dtype=torch.float64, device=device),
        "divergences": num_divergent,
    }
