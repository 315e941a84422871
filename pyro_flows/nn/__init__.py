"""Conditioner networks: :class:`MADE` (masked, autoregressive) and :class:`MLP` (dense)."""

from .made import MADE
from .mlp import MLP

__all__ = ["MADE", "MLP"]
