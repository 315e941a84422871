r"""The distributions of pyro_flows, all importable from here: look here first.

The code lives in three places, by role (this package re-exports the first two, so
``from pyro_flows.distributions import StandardNormal`` works as well as the old paths do):

- :mod:`pyro_flows.base`: the *base protocol* and the fixed bases. A base is an ``nn.Module``
  whose call ``base(context)`` returns a ``torch.distributions.Distribution`` of the flow's event
  shape. :class:`~pyro_flows.base.StandardNormal` (the default base, :math:`\mathcal N(0, I_D)`),
  :class:`~pyro_flows.base.DistributionBase` (wraps any fixed torch distribution as a base) and
  :func:`~pyro_flows.base.as_base` (turns a builder's ``base=`` argument into a base module).
- :mod:`pyro_flows.distribution` (singular):
  :class:`~pyro_flows.distribution.FlowDistribution`, the Pyro distribution a
  :class:`~pyro_flows.Flow` *returns* per call (base pushed through the transforms, with the
  own-sample ``log_prob`` cache). Not a base; users rarely build one.
- this package, :mod:`pyro_flows.distributions` (plural): the *trainable and special bases*,
  one module per family. :mod:`~pyro_flows.distributions.trainable`:
  :class:`~.trainable.DiagonalNormal`, :class:`~.trainable.GaussianMixture` (its distribution
  per call is a :class:`~.trainable.NormalMixture`), :class:`~.trainable.StudentT` with learnt
  degrees of freedom, and :func:`~.trainable.student_t_log_prob`;
  :mod:`~pyro_flows.distributions.discretized_logistic`:
  :class:`~.discretized_logistic.DiscretizedLogistic` and its base
  :class:`~.discretized_logistic.DiscretizedLogisticBase`, for integer discrete flows.

Pass any base (or a plain torch distribution) as a builder's ``base=``. Dependencies point one
way: this package imports :mod:`pyro_flows.base` and :mod:`pyro_flows.distribution`, neither of
which imports it (nor :mod:`pyro_flows.flow`).

Example:

>>> import torch
>>> from pyro_flows.distributions import DiagonalNormal, StandardNormal, as_base
>>> StandardNormal(3)().sample((2,)).shape
torch.Size([2, 3])
>>> isinstance(as_base(None, 3), StandardNormal), DiagonalNormal(3)().event_shape
(True, torch.Size([3]))
"""

from ..base import DistributionBase, StandardNormal, as_base
from ..distribution import FlowDistribution
from .discretized_logistic import DiscretizedLogistic, DiscretizedLogisticBase
from .trainable import DiagonalNormal, GaussianMixture, NormalMixture, StudentT, student_t_log_prob

__all__ = [
    "DiagonalNormal",
    "DiscretizedLogistic",
    "DiscretizedLogisticBase",
    "DistributionBase",
    "FlowDistribution",
    "GaussianMixture",
    "NormalMixture",
    "StandardNormal",
    "StudentT",
    "as_base",
    "student_t_log_prob",
]
