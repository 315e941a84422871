"""Peer flows the benchmarks compare against: Pyro's built-in transforms and zuko.

Every builder returns something with a ``log_prob`` and its parameters, built the way each
library's users build it (Pyro: a ``TransformedDistribution`` with ``Permute`` in between; zuko:
its ``flows`` classes). MAF-style Pyro flows put each layer in as ``.inv`` so that the density is
the one-pass direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import AutoRegressiveNN
from torch import nn

try:  # the optional 'bench' extra
    import zuko
except ImportError:  # pragma: no cover - depends on the environment
    zuko = None


def _pyro_stack(D: int, layers: int, make: Callable[[], nn.Module], invert: bool):
    """A Pyro ``TransformedDistribution`` of ``layers`` layers with ``Permute`` (reverse) in
    between; ``invert=True`` puts each layer in as ``.inv`` (MAF: density is the cheap pass)."""
    base = dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)
    modules = nn.ModuleList()
    transforms: list[Any] = []
    for k in range(layers):
        t = make()
        modules.append(t)
        transforms.append(t.inv if invert else t)
        if k < layers - 1:
            transforms.append(T.Permute(torch.arange(D - 1, -1, -1)))
    return dist.TransformedDistribution(base, transforms), modules


def pyro_autoregressive(D: int, layers: int, hidden: Sequence[int], invert: bool):
    """Pyro ``AffineAutoregressive(AutoRegressiveNN)``: MAF with ``invert=True``, else IAF."""

    def make() -> nn.Module:
        arn = AutoRegressiveNN(D, list(hidden), param_dims=[1, 1], permutation=torch.arange(D))
        return T.AffineAutoregressive(arn)

    return _pyro_stack(D, layers, make, invert)


def pyro_affine_coupling(D: int, layers: int, hidden: Sequence[int]):
    """Pyro ``affine_coupling`` (RealNVP); density direction is ``_inverse`` (one pass)."""
    return _pyro_stack(
        D, layers, lambda: T.affine_coupling(D, hidden_dims=list(hidden)), invert=False
    )


def zuko_flow(kind: str, D: int, layers: int, hidden: Sequence[int]) -> nn.Module:
    """zuko's ``MAF``, ``RealNVP``, ``NICE`` (additive couplings) or an IAF: zuko's MAF with
    every layer inverted (``t.inv``), so sampling is one pass and density ``D`` passes."""
    assert zuko is not None
    kw = {"transforms": layers, "hidden_features": tuple(hidden)}
    if kind == "maf":
        return zuko.flows.MAF(D, **kw)
    if kind == "iaf":
        maf = zuko.flows.MAF(D, **kw)
        return zuko.flows.Flow([t.inv for t in maf.transform.transforms], maf.base)
    if kind == "realnvp":
        return zuko.flows.RealNVP(D, **kw)
    if kind == "nice":
        from zuko.transforms import AdditiveTransform

        return zuko.flows.NICE(D, univariate=AdditiveTransform, shapes=((),), **kw)
    if kind in ZUKO_FAMILIES:  # autoregressive, each with its own elementwise monotone map
        return getattr(zuko.flows, ZUKO_FAMILIES[kind])(D, **kw)
    raise ValueError(kind)


#: zuko's autoregressive families with a monotone elementwise map other than affine / spline:
#: NAF (Huang et al. 2018), UNAF (Wehenkel & Louppe 2019), SOSPF (Jaini et al. 2019), BPF
ZUKO_FAMILIES = {"naf": "NAF", "unaf": "UNAF", "sospf": "SOSPF", "bpf": "BPF"}


def pyro_spline_autoregressive(D: int, layers: int, hidden: Sequence[int], bins: int = 8):
    """Pyro ``spline_autoregressive`` (NSF, autoregressive), each layer as ``.inv`` (MAF-style:
    the density is one pass)."""
    return _pyro_stack(
        D,
        layers,
        lambda: T.spline_autoregressive(D, hidden_dims=list(hidden), count_bins=bins, bound=5.0),
        invert=True,
    )


def pyro_spline_coupling(D: int, layers: int, hidden: Sequence[int], bins: int = 8):
    """Pyro ``spline_coupling`` (NSF, coupling)."""
    return _pyro_stack(
        D,
        layers,
        lambda: T.spline_coupling(D, hidden_dims=list(hidden), count_bins=bins, bound=5.0),
        invert=False,
    )


def zuko_nsf(D: int, layers: int, hidden: Sequence[int], bins: int = 8) -> nn.Module:
    """zuko's ``NSF`` (autoregressive rational-quadratic splines)."""
    assert zuko is not None
    return zuko.flows.NSF(D, bins=bins, transforms=layers, hidden_features=tuple(hidden))
