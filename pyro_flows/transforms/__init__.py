"""Flow transforms: Pyro ``TransformModule``s, forward = base -> data, ``.inv`` = data -> base.

One module per family; every class documents the cost of each direction.
"""

# torch's fixed transforms, as Pyro's transforms module offers them (its tutorial uses them)
from torch.distributions.transforms import AffineTransform, ExpTransform  # noqa: F401

from .affine import ElementwiseAffine
from .autoregressive import InverseAutoregressive, MaskedAutoregressive
from .base import ConditionedTransform, FlowTransform
from .block_autoregressive import BlockAutoregressive
from .continuous import ContinuousFlow
from .coupling import AdditiveCoupling, AffineCoupling, CouplingTransform
from .elementwise_spline import ConditionalSpline, Spline, conditional_spline, spline
from .gaussianization import MarginalGaussianization
from .image import (
    ChannelActNorm,
    ChannelPermute,
    ImageAffineCoupling,
    ImageSequential,
    ImageTransform,
    IntegerAdditiveCoupling,
    InvertibleConv1x1,
    MintNetLayer,
    MultiScale,
    Squeeze,
    Unsqueeze,
)
from .linear import InvertibleLinear
from .logit import Logit
from .monotonic import UnconstrainedMonotonicAutoregressive
from .normalization import ActNorm, BatchNorm
from .permutation import Permute, Reverse
from .planar import Planar
from .polynomial import BernsteinAutoregressive, SOSPolynomialAutoregressive
from .radial import Radial
from .rescale import Rescale
from .residual import InvertibleResidual
from .sinh_arcsinh import SinhArcsinh
from .spline import (
    InverseSplineAutoregressive,
    SplineAutoregressive,
    SplineCoupling,
    spline_coupling,
)
from .sylvester import Sylvester
from .tukey_h import TukeyH
from .unit_lower import UnitLowerTriangular
from .wrapped import WrappedTransform

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BatchNorm",
    "BernsteinAutoregressive",
    "BlockAutoregressive",
    "ChannelActNorm",
    "ChannelPermute",
    "ConditionalSpline",
    "ConditionedTransform",
    "ContinuousFlow",
    "CouplingTransform",
    "ElementwiseAffine",
    "FlowTransform",
    "ImageAffineCoupling",
    "ImageSequential",
    "ImageTransform",
    "IntegerAdditiveCoupling",
    "InverseAutoregressive",
    "InverseSplineAutoregressive",
    "InvertibleConv1x1",
    "InvertibleLinear",
    "InvertibleResidual",
    "Logit",
    "MarginalGaussianization",
    "MaskedAutoregressive",
    "MintNetLayer",
    "MultiScale",
    "Permute",
    "Planar",
    "Radial",
    "Rescale",
    "SOSPolynomialAutoregressive",
    "Reverse",
    "SinhArcsinh",
    "TukeyH",
    "Spline",
    "SplineAutoregressive",
    "SplineCoupling",
    "Squeeze",
    "Sylvester",
    "UnconstrainedMonotonicAutoregressive",
    "UnitLowerTriangular",
    "Unsqueeze",
    "WrappedTransform",
    "conditional_spline",
    "spline",
    "spline_coupling",
]
