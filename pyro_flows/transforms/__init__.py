"""Flow transforms: Pyro ``TransformModule``s, forward = base -> data, ``.inv`` = data -> base."""

from .autoregressive import InverseAutoregressive, MaskedAutoregressive
from .base import ConditionedTransform, FlowTransform
from .coupling import AdditiveCoupling, AffineCoupling, CouplingTransform
from .wrapped import WrappedTransform

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "ConditionedTransform",
    "CouplingTransform",
    "FlowTransform",
    "InverseAutoregressive",
    "MaskedAutoregressive",
    "WrappedTransform",
]
