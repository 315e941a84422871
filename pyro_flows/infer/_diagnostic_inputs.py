"""What the diagnostics of :mod:`pyro_flows.infer` share: turning draws and weights given as
tensors (on any device), arrays or lists into CPU tensors, and importing ArviZ lazily.

Diagnostics reduce draws to a few numbers, which ArviZ and NumPy compute on the CPU, whatever
device the draws were made on: inputs are detached, copied to the CPU and, if not floating
point, converted to ``float64``. ArviZ is imported on first use (it takes a second or two to
import), without its import-time ``FutureWarning`` about its refactor.

Example:

>>> import torch
>>> _as_tensor([1, 2, 3], "x").dtype, _as_tensor(torch.ones(2, dtype=torch.int64), "x").dtype
(torch.float64, torch.float64)

References:

- R. Kumar, C. Carroll, A. Hartikainen, O. Martin. *ArviZ a unified library for exploratory
  analysis of Bayesian models in Python.* JOSS 4(33), 2019.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _arviz() -> Any:
    """Import ArviZ lazily, without its import-time ``FutureWarning`` about its refactor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _as_tensor(value: object, name: str) -> Tensor:
    """``value`` as a detached CPU tensor (floating): diagnostics reduce draws to a few numbers,
    which ArviZ and NumPy compute on the CPU, whatever device the draws were made on."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a tensor or an array of numbers, got {type(value).__name__}"
            ) from None
    return t.to(torch.float64) if not t.is_floating_point() else t

