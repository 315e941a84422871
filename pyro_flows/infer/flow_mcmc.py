r"""Flow-assisted MCMC: the mass-covering way :func:`~pyro_flows.infer.fit_target` trains a flow
on a target with several modes (``method="flow_mcmc"``, chosen by ``method="auto"`` when
:func:`~pyro_flows.infer.mode_search.search_modes` finds more than one maximum).

Reverse KL, :math:`\mathrm{KL}(q\,\|\,p)`, is mode-seeking: a flow that has not yet put mass on
a mode gets no gradient towards it, and the diagnostics computed from its own draws cannot see
what it misses. Forward KL, :math:`\mathrm{KL}(p\,\|\,q)`, is mass-covering, but needs draws
from :math:`p`. Following Gabrié, Rotskoff and Vanden-Eijnden (2022), the draws come from
Markov chains that the flow itself helps to mix:

1. **Start** :math:`K \times C` chains at the local maxima found by the search, in turn
   (over-dispersed: every mode found gets chains).
2. **Local moves**: MALA on every chain, at the inverse temperatures of a geometric ladder
   :math:`1 = \beta_0 > \dots > \beta_{K-1} = \beta_{\min}`, with swaps between neighbouring
   levels (:class:`~pyro_flows.infer.tempered_mala.TemperedMALA`). Hot chains cross barriers;
   swaps move the crossings down, so the share of cold chains per mode converges to the
   modes' masses even where the search started them in the wrong proportions.
3. **Global move**: each cold chain proposes :math:`z' \sim q` (independence Metropolis-
   Hastings), accepted with

   .. math::

       \min\Big\{1,\ \frac{\tilde p(z')\,q(z)}{\tilde p(z)\,q(z')}\Big\},

   which jumps between modes in one step once :math:`q` covers them.
4. **Flow step**: one Adam step on the forward-KL loss
   :math:`-\frac1B\sum_b \log q(z_b)`, :math:`z_b` drawn from the cold chains' states of the
   last ``window`` rounds.

The ELBO recorded per step is that of the global proposals, :math:`\frac1C\sum_c
[\log\tilde p(z'_c) - \log q(z'_c)]`, which costs nothing extra.

**What the method returns.** The cold chains are MCMC draws from :math:`p`: the accept steps
(local, swap and global) leave :math:`p` invariant, so their share per mode converges to the
modes' masses whatever the flow's own share. ``fit_target`` keeps their states after the
burn-in (the first half of the steps, while the step sizes adapt) as ``history.samples``
``(chains, draws, D)``; mode masses and expectations come from them (or from the flow's draws
importance-weighted). The flow's own draws are the proposal; forward KL fits its mass per mode
only approximately (on gmm40 off by up to 0.02, against 0.003 for the chains).

Cost per step, against reverse KL's ``batch_size`` target gradients: about
``local_steps * levels * batch_size`` gradients, ``batch_size`` flow draws and log densities
(so a flow whose ``log_prob`` needs an inverse, IAF, pays it here), and one forward-KL step.

Example:

>>> import torch
>>> from pyro_flows import flows
>>> from pyro_flows.infer import fit_target
>>> def two_modes(z):   # 0.3 N((4, 0), 0.7^2) + 0.7 N((-4, 0), 0.7^2), log Z = 0
...     n = torch.distributions.Normal(0.0, 0.7)
...     a = n.log_prob(z - torch.tensor([4.0, 0.0])).sum(-1) + torch.tensor(0.3).log()
...     b = n.log_prob(z + torch.tensor([4.0, 0.0])).sum(-1) + torch.tensor(0.7).log()
...     return torch.logaddexp(a, b)
>>> flow = flows.realnvp(2, num_transforms=3, hidden_dims=(32, 32))
>>> history = fit_target(flow, two_modes, steps=300, progress=False)
>>> history.method, abs(history.log_Z[-1]) < 0.1
('flow_mcmc', True)

References:

- M. Gabrié, G. M. Rotskoff, E. Vanden-Eijnden. *Adaptive Monte Carlo augmented with
  normalizing flows.* PNAS 119, 2022. https://arxiv.org/abs/2105.12603
- K. W. K. Wong, M. Gabrié, D. Foreman-Mackey. *flowMC: Normalizing flow enhanced sampling
  package for probabilistic inference in JAX.* JOSS 8, 2023.
- L. I. Midgley et al. *Flow Annealed Importance Sampling Bootstrap.* ICLR 2023 (the
  mode-seeking failure of reverse KL on gmm40 and the many-well).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .tempered_mala import TemperedMALA, ladder, ladder_size

__all__ = ["FlowAssistedChains", "BETA_MIN", "WINDOW"]

LogDensity = Callable[[Tensor], Tensor]

#: the hottest level's inverse temperature: a 20-nat barrier costs 1 nat there
BETA_MIN = 0.05
#: rounds of cold-chain states the forward-KL batches are drawn from
WINDOW = 50


class FlowAssistedChains:
    r"""The chains behind ``fit_target(method="flow_mcmc")`` (see the module docstring).

    :param flow: the flow being trained (``rsample_and_log_prob`` and ``log_prob``).
    :param log_prob: the target's unnormalised log density.
    :param starts: ``(M, D)`` points the chains start at in turn (the local maxima of a
        :class:`~pyro_flows.infer.mode_search.ModeSearch`, or the flow's draws where it found
        none).
    :param chains: chains per level :math:`C` (the forward-KL batch is drawn from these).
    :param levels: temperature levels :math:`K` (``None``: :func:`ladder_size` of the
        dimension).
    :param beta_min: the hottest level's inverse temperature.
    :param local_steps: MALA moves per round.
    :param window: rounds of cold states kept for the forward-KL batches.
    :param seed: seeds the jitter of the starting points (the moves use torch's global RNG).
    """

    def __init__(
        self,
        flow: nn.Module,
        log_prob: LogDensity,
        starts: Tensor,
        *,
        chains: int,
        levels: int | None = None,
        beta_min: float = BETA_MIN,
        local_steps: int = 5,
        window: int = WINDOW,
        seed: int = 0,
    ) -> None:
        if starts.dim() != 2 or len(starts) == 0:
            raise ValueError(f"starts must be a non-empty (M, D) tensor, got shape "
                             f"{tuple(starts.shape)}")
        modes = starts.detach()
        dim = modes.shape[-1]
        levels = ladder_size(dim, beta_min) if levels is None else levels
        generator = torch.Generator().manual_seed(seed)
        count = levels * chains
        start = modes[torch.arange(count, device=modes.device) % len(modes)]
        jitter = torch.randn(count, dim, generator=generator, dtype=torch.float64,
                             device="cpu").to(start)
        self.flow, self.log_prob, self.window = flow, log_prob, window
        self.sampler = TemperedMALA(log_prob, start + 0.01 * jitter, ladder(levels, beta_min),
                                    local_steps=local_steps)
        self.buffer = self.sampler.cold[0].detach().clone()[None].repeat(window, 1, 1)
        self.filled = 1
        self.global_acceptance = math.nan

    @property
    def grad_evals(self) -> int:
        """Target gradients evaluated by the chains so far."""
        return self.sampler.grad_evals

    def advance(self) -> float:
        r"""One round: local moves and swaps, then the flow's independence proposal to every cold
        chain; the cold states join the window. Returns the proposals' mean
        :math:`\log\tilde p - \log q` (the ELBO of this round's flow draws)."""
        self.sampler.step()
        chains = self.sampler.chains
        with torch.no_grad():
            y, log_q_y = self.flow.rsample_and_log_prob((chains,))
            z, log_p_z = self.sampler.cold
            log_q_z = self.flow.log_prob(z)
            log_p_y = self.log_prob(y)
        log_ratio = (log_p_y - log_q_y) - (log_p_z - log_q_z)
        moved = self.sampler.propose_cold(y, log_ratio)
        self.global_acceptance = float(moved.float().mean())
        self.buffer[self.sampler.rounds % self.window] = self.sampler.cold[0]
        self.filled = min(self.window, self.filled + 1)
        weights = log_p_y - log_q_y
        finite = torch.isfinite(weights)
        return float(weights[finite].mean()) if bool(finite.any()) else -math.inf

    def batch(self, size: int) -> Tensor:
        """``size`` states drawn uniformly from the window (torch's global RNG)."""
        states = self.buffer[: self.filled].reshape(-1, self.buffer.shape[-1])
        return states[torch.randint(len(states), (size,), device=states.device)]

    def state_dict(self) -> dict[str, object]:
        """The chains and the window, for a checkpoint."""
        return {"sampler": self.sampler.state_dict(), "buffer": self.buffer,
                "filled": self.filled}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` (every entry checked and converted first; nothing changes
        on refusal).

        :raises ValueError: a window of another shape, a chain state that
            :meth:`~pyro_flows.infer.tempered_mala.TemperedMALA.load_state_dict` refuses, or
            ``filled`` not an int in ``[1, window]``.
        """
        buffer = state.get("buffer")
        if not isinstance(buffer, Tensor) or buffer.shape != self.buffer.shape:
            got = tuple(buffer.shape) if isinstance(buffer, Tensor) else type(buffer).__name__
            raise ValueError(f"chain window must have shape {tuple(self.buffer.shape)}, got {got}")
        sampler = self.sampler.checked_state(state.get("sampler"))
        filled = state.get("filled", 1)
        if (isinstance(filled, bool) or not isinstance(filled, numbers.Integral)
                or not 1 <= filled <= self.window):
            raise ValueError(f"chain state 'filled' must be an int in [1, {self.window}], got "
                             f"{filled!r}")
        buffer = buffer.to(self.buffer)
        self.sampler.load_state_dict(sampler)
        self.buffer, self.filled = buffer, int(filled)
