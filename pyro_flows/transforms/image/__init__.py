"""Image transforms on ``(C, H, W)`` events (``event_dim = 3``): Glow, RealNVP's multi-scale
architecture, MintNet and integer discrete flows.

Every layer is a :class:`~pyro_flows.transforms.image.base.ImageTransform` (a Pyro
``TransformModule``); log-determinants have exactly the batch shape ``x.shape[:-3]``.
"""

from .actnorm import ChannelActNorm
from .base import ConditionedImageTransform, ImageTransform
from .compose import ImageSequential
from .conv1x1 import InvertibleConv1x1
from .coupling import ImageAffineCoupling, checkerboard_mask
from .discrete import IntegerAdditiveCoupling, round_ste
from .mintnet import MintNetLayer
from .multiscale import MultiScale
from .permute import ChannelPermute
from .squeeze import Squeeze, Unsqueeze, squeeze, unsqueeze

__all__ = [
    "ChannelActNorm",
    "ChannelPermute",
    "ConditionedImageTransform",
    "ImageAffineCoupling",
    "ImageSequential",
    "ImageTransform",
    "IntegerAdditiveCoupling",
    "InvertibleConv1x1",
    "MintNetLayer",
    "MultiScale",
    "Squeeze",
    "Unsqueeze",
    "checkerboard_mask",
    "round_ste",
    "squeeze",
    "unsqueeze",
]
