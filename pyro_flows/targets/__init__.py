r"""Unnormalised target densities with known facts, for reverse-KL training, MCMC and NeuTra.

Every target is a :class:`Target`: ``log_prob(z)`` (:math:`\log \tilde p(z)`, any batch shape,
differentiable), ``dim``, ``log_Z`` (:math:`\log \int \tilde p`, or ``None``), exact ``mean`` and
``std`` where known, ``sample(shape)`` where an exact sampler exists, ``support`` (a
``torch.distributions`` constraint), ``bounds`` for plots, and ``potential_fn`` /
``initial_params`` in the form of Pyro's ``HMC``/``NUTS(potential_fn=...)``.

- :mod:`~pyro_flows.targets.energy`: Rezende & Mohamed's :class:`U1`, :class:`U2`,
  :class:`U3`, :class:`U4` (U2-U4 on the box :math:`[-4, 4]^2` or with a Gaussian prior on
  :math:`z_1`).
- :class:`Funnel` (Neal), :class:`Banana` (Haario et al.), :class:`Ring`,
  :class:`GaussianMixture` (separated modes, :meth:`~GaussianMixture.mode_masses`),
  :class:`IllConditionedGaussian` (100-D, condition number :math:`10^4`).
- Multimodal benchmarks of Midgley et al. (FAB): :class:`GMM40` (40 equal modes in
  :math:`[-40, 40]^2`, :meth:`~GMM40.mode_masses`) and :class:`ManyWell` (32-D, :math:`2^{16}`
  modes, exact :math:`\log Z`, well masses per pair).
- :class:`ModelTarget` / :func:`model_target`: any Pyro model on its unconstrained space.
- :class:`UnconstrainedTarget` (``target.unconstrained()``): a box target pushed to
  :math:`\mathbb{R}^D`.
- :data:`TARGETS`, :func:`get_target`: the targets by their command-line names.

Example::

    >>> from pyro_flows.targets import get_target
    >>> target = get_target("u1")
    >>> z = target.sample((1000,))
    >>> entropy = -target.normalized_log_prob(z).mean()    # exact: 2.66 nats
    >>> bool(abs(entropy - 2.66) < 0.1)
    True
"""

from .banana import Banana
from .base import Target
from .energy import U1, U2, U3, U4
from .funnel import Funnel
from .gaussian import IllConditionedGaussian, random_rotation
from .gmm40 import GMM40
from .many_well import ManyWell
from .mixture import GaussianMixture, mixture_centres
from .model import ModelTarget, model_target
from .registry import TARGETS, get_target
from .ring import Ring
from .unconstrained import UnconstrainedTarget

__all__ = [
    "TARGETS",
    "U1",
    "U2",
    "U3",
    "U4",
    "Banana",
    "GMM40",
    "Funnel",
    "GaussianMixture",
    "IllConditionedGaussian",
    "ManyWell",
    "ModelTarget",
    "Ring",
    "Target",
    "UnconstrainedTarget",
    "get_target",
    "mixture_centres",
    "model_target",
    "random_rotation",
]
