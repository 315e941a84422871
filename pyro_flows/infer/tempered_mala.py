r"""An ensemble of MALA chains at several temperatures with replica exchange (parallel tempering).

Level :math:`k` of :math:`K` targets :math:`\tilde p^{\beta_k}`, with a geometric ladder
:math:`\beta_k = \beta_{\min}^{k/(K-1)}` from :math:`\beta_0 = 1` (the target) down to
:math:`\beta_{\min}`; each level holds :math:`C` chains. One :meth:`TemperedMALA.step`:

1. ``local_steps`` Metropolis-adjusted Langevin moves on every chain,
   :math:`z' = z + h\,\beta\nabla\log\tilde p(z) + \sqrt{2h}\,\xi`, accepted with
   :math:`\min\{1, \tilde p^\beta(z')\,r(z\mid z') / (\tilde p^\beta(z)\,r(z'\mid z))\}`; each
   chain slot's step size :math:`h` follows its acceptance towards 0.574 (Roberts and
   Rosenthal's optimum) while ``adapt`` is on;
2. one round of swaps between neighbouring levels (even pairs on even rounds, odd on odd),
   chain :math:`c` of level :math:`k` with chain :math:`c` of level :math:`k+1`, accepted with
   :math:`\min\{1, \exp[(\beta_k - \beta_{k+1})(\log\tilde p(z_{k+1}) - \log\tilde p(z_k))]\}`.

At a small :math:`\beta` a barrier of :math:`b` nats costs only :math:`\beta b`, so hot chains
cross between modes and swaps carry the crossings down to the cold level in the right
proportions: unlike independent chains, the cold level's share of chains per mode converges to
the modes' masses. :meth:`TemperedMALA.propose_cold` lets an independence proposal (a flow)
move cold chains in one jump.

The number of levels for dimension :math:`D` is :func:`ladder_size`: swap acceptance between
:math:`\beta` and :math:`\beta'` falls like :math:`\exp(-c\,D(\log\beta/\beta')^2)` on
near-Gaussian levels, so the ratio between levels shrinks like :math:`1/\sqrt{D}`.

Example:

>>> import torch
>>> def two_modes(z):   # 0.3 N((4, 0), 0.7^2) + 0.7 N((-4, 0), 0.7^2), a 16-nat barrier
...     a = -0.5 * (((z - torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1) + torch.tensor(0.3).log()
...     b = -0.5 * (((z + torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1) + torch.tensor(0.7).log()
...     return torch.logaddexp(a, b)
>>> _ = torch.manual_seed(0)
>>> chains = TemperedMALA(two_modes, torch.tensor([[4.0, 0.0]]).repeat(4 * 200, 1),
...                       ladder(4, 0.05))
>>> for _ in range(300):
...     chains.step()
>>> right = float((chains.cold[0][:, 0] > 0).float().mean())   # started all at (4, 0)
>>> abs(right - 0.3) < 0.1
True

References:

- R. H. Swendsen, J.-S. Wang. *Replica Monte Carlo simulation of spin glasses.* PRL 57, 1986;
  C. J. Geyer. *Markov chain Monte Carlo maximum likelihood.* 1991 (parallel tempering).
- G. O. Roberts, J. S. Rosenthal. *Optimal scaling of discrete approximations to Langevin
  diffusions.* JRSS B 60, 1998 (MALA, acceptance 0.574).
- D. A. Kofke. *On the acceptance probability of replica-exchange Monte Carlo trials.*
  J. Chem. Phys. 117, 2002 (ladder spacing against dimension).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["TemperedMALA", "ladder", "ladder_size"]

LogDensity = Callable[[Tensor], Tensor]

#: the MALA acceptance the step sizes adapt towards
TARGET_ACCEPT = 0.574
#: the most levels :func:`ladder_size` gives
MAX_LEVELS = 16


def ladder_size(dim: int, beta_min: float) -> int:
    r""":math:`K = \lceil \log(1/\beta_{\min})\sqrt{D/2}\,\rceil + 1`, between 2 and
    :data:`MAX_LEVELS`: about one level per :math:`\sqrt{2/D}` of :math:`\log\beta`."""
    levels = math.ceil(math.log(1.0 / beta_min) * math.sqrt(dim / 2)) + 1
    return int(min(MAX_LEVELS, max(2, levels)))


def ladder(levels: int, beta_min: float) -> Tensor:
    r"""The geometric ladder :math:`\beta_k = \beta_{\min}^{k/(K-1)}`, ``(K,)``, from 1 down
    (float64; one level gives ``[1.0]``)."""
    if levels == 1:
        return torch.ones(1, dtype=torch.float64, device="cpu")
    return beta_min ** (torch.arange(levels, dtype=torch.float64, device="cpu") / (levels - 1))


def _value_and_grad(log_prob: LogDensity, z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_prob(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    value, grad = value.detach(), grad.detach()
    bad = ~torch.isfinite(value) | ~torch.isfinite(grad).all(-1)
    value = torch.where(bad, torch.full_like(value, -math.inf), value)
    grad = torch.where(bad[:, None], torch.zeros_like(grad), grad)
    return value, grad


class TemperedMALA:
    r"""``K`` levels of ``C`` MALA chains with swaps (see the module docstring).

    :param log_prob: the target's unnormalised log density, batched over the first dimension.
    :param z0: ``(K * C, D)`` starting points, level after level (level 0 is the target).
    :param betas: ``(K,)`` inverse temperatures, ``betas[0] == 1``, decreasing.
    :param local_steps: MALA moves per :meth:`step`.
    :param step_size: the initial MALA step size :math:`h` of every chain.

    Random numbers come from torch's global generator (so a training checkpoint that saves it
    resumes exactly). The state is ``z``, ``log_p``, ``grad`` (of :math:`\log\tilde p`, at
    :math:`\beta = 1`) and ``h``, each with the chains level after level.
    """

    def __init__(
        self,
        log_prob: LogDensity,
        z0: Tensor,
        betas: Tensor,
        *,
        local_steps: int = 5,
        step_size: float = 0.01,
    ) -> None:
        levels = len(betas)
        if z0.dim() != 2 or len(z0) % levels:
            raise ValueError(
                f"z0 must have shape (levels * chains, dim) = ({levels} * C, D), got "
                f"{tuple(z0.shape)}"
            )
        self.log_prob, self.local_steps = log_prob, local_steps
        self.levels, self.chains = levels, len(z0) // levels
        self.betas = betas.to(z0)
        self.beta = self.betas.repeat_interleave(self.chains)  # (K * C,)
        self.z = z0.detach().clone()
        self.log_p, self.grad = _value_and_grad(log_prob, self.z)
        self.h = torch.full((len(z0),), float(step_size), dtype=z0.dtype, device=z0.device)
        self.adapt = True
        self.rounds = 0
        self.local_acceptance = math.nan
        self.swap_acceptance = math.nan
        self.grad_evals = len(z0)

    @property
    def cold(self) -> tuple[Tensor, Tensor]:
        """The target level's chains: ``(z (C, D), log_p (C,))``."""
        return self.z[: self.chains], self.log_p[: self.chains]

    def _mala(self) -> None:
        accepted = torch.zeros_like(self.h)
        for _ in range(self.local_steps):
            h = self.h[:, None]
            drift = self.beta[:, None] * self.grad
            z = self.z + h * drift + (2 * h).sqrt() * torch.randn_like(self.z)
            log_p, grad = _value_and_grad(self.log_prob, z)
            self.grad_evals += len(z)
            back = self.beta[:, None] * grad
            forward = -((z - self.z - h * drift) ** 2).sum(-1) / (4 * self.h)
            backward = -((self.z - z - h * back) ** 2).sum(-1) / (4 * self.h)
            log_a = self.beta * (log_p - self.log_p) + backward - forward
            log_a = torch.where(torch.isnan(log_a), torch.full_like(log_a, -math.inf), log_a)
            a = torch.exp(log_a.clamp(max=0.0))
            move = torch.rand_like(a) < a
            self.z = torch.where(move[:, None], z, self.z)
            self.log_p = torch.where(move, log_p, self.log_p)
            self.grad = torch.where(move[:, None], grad, self.grad)
            accepted += a
            if self.adapt:
                self.h = self.h * torch.exp(0.3 * (a - TARGET_ACCEPT))
        self.local_acceptance = float(accepted.mean()) / self.local_steps

    def _swap(self) -> None:
        if self.levels < 2:
            return
        c = self.chains
        rates = []
        for k in range(self.rounds % 2, self.levels - 1, 2):
            lo, hi = slice(k * c, (k + 1) * c), slice((k + 1) * c, (k + 2) * c)
            log_a = (self.betas[k] - self.betas[k + 1]) * (self.log_p[hi] - self.log_p[lo])
            log_a = torch.where(torch.isnan(log_a), torch.full_like(log_a, -math.inf), log_a)
            swap = torch.rand_like(log_a).log() < log_a
            rates.append(float(swap.float().mean()))
            for name in ("z", "log_p", "grad"):
                state = getattr(self, name)
                a, b = state[lo].clone(), state[hi].clone()
                mask = swap[:, None] if state.dim() == 2 else swap
                state[lo] = torch.where(mask, b, a)
                state[hi] = torch.where(mask, a, b)
        self.swap_acceptance = sum(rates) / len(rates) if rates else math.nan

    def step(self) -> None:
        """``local_steps`` MALA moves on every chain, then one round of swaps."""
        self._mala()
        self._swap()
        self.rounds += 1

    def propose_cold(self, z: Tensor, log_ratio: Tensor) -> Tensor:
        r"""An independence Metropolis-Hastings move of the cold chains to ``z`` (``(C, D)``),
        accepted with :math:`\min(1, e^{r})`, where ``log_ratio`` :math:`r` must already hold
        :math:`\log\tilde p(z) - \log q(z) - \log\tilde p(z_{\rm now}) + \log q(z_{\rm now})`
        for the proposal density :math:`q`. Returns the bool mask of accepted moves."""
        log_ratio = torch.where(torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf),
                                log_ratio)
        move = torch.rand_like(log_ratio).log() < log_ratio
        if bool(move.any()):
            log_p, grad = _value_and_grad(self.log_prob, z[move])
            self.grad_evals += int(move.sum())
            index = move.nonzero().flatten()
            self.z[index] = z[move].detach().to(self.z)
            self.log_p[index] = log_p
            self.grad[index] = grad
        return move

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        """The chains' state, for a checkpoint."""
        return {"z": self.z, "log_p": self.log_p, "grad": self.grad, "h": self.h,
                "adapt": self.adapt, "rounds": self.rounds, "grad_evals": self.grad_evals}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` (every entry checked and converted first; nothing changes
        on refusal).

        :raises ValueError: a missing tensor or one of another shape, or ``adapt``, ``rounds``,
            ``grad_evals`` of the wrong kind (a bool, non-negative ints).
        """
        self._apply(self.checked_state(state))

    def checked_state(self, state: object) -> dict[str, object]:
        """``state`` (a :meth:`state_dict`) checked against these chains and converted to their
        dtype and device, ready for :meth:`load_state_dict`; changes nothing."""
        if not isinstance(state, dict):
            raise ValueError(f"chain state must be a dict, got {type(state).__name__}")
        checked: dict[str, object] = {}
        for name in ("z", "log_p", "grad", "h"):
            shape = getattr(self, name).shape
            value = state.get(name)
            if not isinstance(value, Tensor) or value.shape != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"chain state {name!r} must be a tensor of shape "
                                 f"{tuple(shape)}, got {got}")
            checked[name] = value.to(self.z)
        adapt = state.get("adapt", True)
        if not isinstance(adapt, bool):
            raise ValueError(f"chain state 'adapt' must be True or False, got {adapt!r}")
        checked["adapt"] = adapt
        for name in ("rounds", "grad_evals"):
            checked[name] = _count(state.get(name, 0), name)
        return checked

    def _apply(self, checked: dict[str, object]) -> None:
        """Assign a :meth:`checked_state` (cannot fail)."""
        for name, value in checked.items():
            setattr(self, name, value)


def _count(value: object, name: str) -> int:
    """``value`` as a non-negative int, else a ``ValueError`` naming the state entry."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"chain state {name!r} must be a non-negative int, got {value!r}")
    return int(value)
