r"""The interface every EBM training objective implements, so one loop trains them all.

An objective is an ``nn.Module`` (it may own parameters: NCE's :math:`\log Z`, a noise flow, a
sampler) with

- ``energy_loss(energy, x)``: a scalar minimised over the energy's parameters and the
  objective's own *energy-side* parameters (:meth:`EBMObjective.energy_side_parameters`);
- ``sampler_loss(energy, x)``: for min-max objectives (flow contrastive, adversarial), a scalar
  minimised over :meth:`EBMObjective.sampler_parameters`; ``None`` otherwise.

Every objective evaluates the energy through :func:`energy_values`: an energy returns one value
per row, :math:`E_\theta(x_{1..N}) \in \mathbb{R}^N` of shape ``(N,)``; a trailing axis of size
1 (``(N, 1)``, what ``nn.Linear(D, 1)`` returns) is squeezed away, anything else is refused.

References: Song & Kingma, "How to Train Your Energy-Based Models", arXiv:2101.03288, 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

Energy = Callable[[Tensor], Tensor]


class NonFiniteSamples(FloatingPointError):
    """Samples drawn during a training step (Langevin negatives, a sampler's or a noise's draws)
    are NaN/inf; the message names the likely cause. ``train_ebm`` turns it into a
    :class:`~pyro_flows.infer.fit.NonFiniteLossError` with the state from before the step."""


def per_row(values: Tensor, rows: tuple[int, ...], what: str, x_shape: tuple[int, ...]) -> Tensor:
    """``values`` with shape ``rows`` (one value per row of a batch ``x`` of shape ``x_shape``);
    one more trailing axis of size 1 is squeezed, any other shape is a ``ValueError`` naming
    ``what``, the shape expected and the shape got."""
    if not isinstance(values, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(values).__name__}")
    if tuple(values.shape) == (*rows, 1):
        return values.squeeze(-1)
    if tuple(values.shape) != rows:
        raise ValueError(
            f"{what} must have one value per row of x: shape {rows} (or {(*rows, 1)}) for x of "
            f"shape {x_shape}, got {tuple(values.shape)}"
        )
    return values


def energy_values(energy: Energy, x: Tensor) -> Tensor:
    """``energy(x)`` for a batch ``x`` of shape ``(..., D)``, with shape ``x.shape[:-1]`` (one
    value per row); an output with one more trailing axis of size 1 (``nn.Linear(D, 1)``) is
    squeezed, any other shape is a ``ValueError`` naming the shape expected and the shape got."""
    return per_row(energy(x), tuple(x.shape[:-1]), "the energy's output", tuple(x.shape))


def check_finite_samples(samples: Tensor, what: str, cause: str) -> None:
    """:class:`NonFiniteSamples` (naming ``what`` and the likely ``cause``) unless every entry
    of ``samples`` is finite."""
    if not bool(torch.isfinite(samples.detach()).all()):
        raise NonFiniteSamples(f"{what} are not finite (NaN/inf); {cause}")


class EBMObjective(nn.Module):
    """Base class of the EBM objectives (see the module docstring)."""

    #: the name :func:`~pyro_flows.ebm.train.train_ebm` knows it by
    name = "objective"

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sampler_loss(self, energy: Energy, x: Tensor) -> Tensor | None:
        return None

    def energy_side_parameters(self) -> Iterator[nn.Parameter]:
        """Own parameters trained together with the energy (default: none)."""
        return iter(())

    def sampler_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained by ``sampler_loss`` (default: none)."""
        return iter(())

    def setup(self, data: Tensor) -> None:
        """Called once by the training loop with all training rows (e.g. to fit a noise)."""

    def snapshot_extra(self) -> object:
        """A copy of the state a training step changes that ``state_dict`` does not hold (e.g.
        persistent chains, a private generator), for :meth:`restore_extra` after a failed step
        (default: none)."""
        return None

    def restore_extra(self, snapshot: object) -> None:
        """Put back the state saved by :meth:`snapshot_extra` (default: nothing to do)."""
