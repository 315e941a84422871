"""Conditioner networks: :class:`MADE` (masked, autoregressive), :class:`MLP` (dense),
:class:`ConvResNet` (convolutional) and :class:`MaskedConv2d` (MintNet's masked convolutions)."""

from .conv import ConvResNet
from .made import MADE
from .masked_conv import MaskedConv2d
from .mlp import MLP

__all__ = ["MADE", "MLP", "ConvResNet", "MaskedConv2d"]
