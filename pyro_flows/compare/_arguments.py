r"""Argument checks shared by the runners of ``pyro-flows compare``
(:mod:`~pyro_flows.compare.flow_training`, :mod:`~pyro_flows.compare.method_runners`,
:mod:`~pyro_flows.compare.methods`): a clear ``TypeError`` naming what was expected and what
was given, and whether a target lives on a box rather than on :math:`\mathbb R^D`.

Example:

>>> from pyro_flows.targets import get_target
>>> _boxed(get_target("u2")), _boxed(get_target("banana"))
(True, False)

References: none (input validation).
"""

from __future__ import annotations

from torch.distributions import constraints

from ..targets import Target


def _boxed(target: Target) -> bool:
    r"""Whether ``target`` lives on a box (its support is not :math:`\mathbb R^D`)."""
    return target.support is not constraints.real_vector


def _check_target(target: object) -> None:
    if not isinstance(target, Target):
        raise TypeError(
            "target must be a pyro_flows Target (e.g. pyro_flows.targets.get_target('banana')), "
            f"got {type(target).__name__} ({target!r})"
        )


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")


def _check_settings(settings: object, kind: type) -> None:
    if not isinstance(settings, kind):
        raise TypeError(
            f"settings must be a {kind.__name__}, got {type(settings).__name__} ({settings!r})"
        )
