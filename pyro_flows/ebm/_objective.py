r"""The interface every EBM training objective implements, so one loop trains them all.

An objective is an ``nn.Module`` (it may own parameters: NCE's :math:`\log Z`, a noise flow, a
sampler) with

- ``energy_loss(energy, x)``: a scalar minimised over the energy's parameters and the
  objective's own *energy-side* parameters (:meth:`EBMObjective.energy_side_parameters`);
- ``sampler_loss(energy, x)``: for min-max objectives (flow contrastive, adversarial), a scalar
  minimised over :meth:`EBMObjective.sampler_parameters`; ``None`` otherwise.

References: Song & Kingma, "How to Train Your Energy-Based Models", arXiv:2101.03288, 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor, nn

Energy = Callable[[Tensor], Tensor]


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
