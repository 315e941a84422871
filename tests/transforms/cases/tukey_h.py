"""Harness cases: the elementwise Tukey h layer (power-law tails per side)."""

import torch

from pyro_flows.transforms import TukeyH

from . import Case


def _opened(dim: int) -> TukeyH:
    """A layer with both tails opened (different weights per coordinate and side)."""
    t = TukeyH(dim)
    with torch.no_grad():
        t.raw_h_pos.copy_(torch.linspace(0.05, 0.4, dim))
        t.raw_h_neg.copy_(torch.linspace(0.3, 0.0, dim))
    return t


CASES = [
    Case("tukey-h-d1", lambda: TukeyH(1), 1, lower_triangular=True),
    Case("tukey-h-d4-open", lambda: _opened(4), 4, lower_triangular=True, inverse_atol=1e-6),
]
