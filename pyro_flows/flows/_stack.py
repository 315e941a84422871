"""Stacking layers into a :class:`~pyro_flows.Flow`, shared by every vector builder.

``stack(input_dim, num_transforms, make_layer, permutation, normalization, base, context_dim)``
builds ``num_transforms`` layers from ``make_layer()``, optionally puts a normalisation layer before
each and a permutation (``"reverse"``, ``"random"`` or ``None``) between consecutive layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._validation import check_positive_int
from ..flow import Flow
from ..transforms import ActNorm, BatchNorm, Permute, Reverse

__all__ = ["stack", "PERMUTATIONS", "NORMALIZATIONS"]

PERMUTATIONS = ("reverse", "random", None)
NORMALIZATIONS = (None, "actnorm", "batchnorm")


def _permutation(kind: str | None, input_dim: int) -> nn.Module | None:
    if kind not in PERMUTATIONS:
        raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {kind!r}")
    if kind is None or input_dim == 1:
        return None
    if kind == "reverse":
        return Reverse(input_dim)
    return Permute(torch.randperm(input_dim, device="cpu"))


def _normalization(kind: str | None, input_dim: int) -> nn.Module | None:
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {kind!r}")
    if kind == "actnorm":
        return ActNorm(input_dim)
    if kind == "batchnorm":
        return BatchNorm(input_dim)
    return None


def stack(
    input_dim: int,
    num_transforms: int,
    make_layer: Callable[[], nn.Module],
    permutation: str | None,
    normalization: str | None = None,
    base: Any = None,
    context_dim: int | None = None,
) -> Flow:
    """``num_transforms`` layers from ``make_layer()`` in a :class:`~pyro_flows.Flow`.

    :param normalization: ``"actnorm"``, ``"batchnorm"`` or ``None``: a layer put before each one.
    :param permutation: ``"reverse"``, ``"random"`` (drawn from torch's RNG) or ``None``: a
        permutation put between consecutive layers (none for ``input_dim == 1``).
    """
    check_positive_int(input_dim, "input_dim")
    check_positive_int(num_transforms, "num_transforms")
    if permutation not in PERMUTATIONS:  # checked even where the stack has no gap to fill
        raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")
    layers: list[nn.Module] = []
    for k in range(num_transforms):
        norm = _normalization(normalization, input_dim)
        if norm is not None:
            layers.append(norm)
        layers.append(make_layer())
        if k < num_transforms - 1:
            perm = _permutation(permutation, input_dim)
            if perm is not None:
                layers.append(perm)
    return Flow(layers, base=base, context_dim=context_dim)  # type: ignore[arg-type]
