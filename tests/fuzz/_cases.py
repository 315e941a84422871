"""Shared pieces of the fuzz suite: bad values, the assertion helpers, and tiny builders.

Every fuzz case either expects a clear ``ValueError``/``TypeError`` whose message names what
was expected and what was given (:func:`raises_naming` checks fragments of it), or a correct
result, compared with the plain-tensor path within a tolerance (never bit for bit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pyro_flows import Flow, flows

#: the exception types a bad input may raise
CLEAR = (ValueError, TypeError)

NAN, INF = math.nan, math.inf


class AnyOf(tuple):
    """A fragment of :func:`raises_naming` satisfied by any one of its strings."""

    def __new__(cls, *alternatives: str) -> AnyOf:
        return super().__new__(cls, alternatives)


#: how a message may say that values are NaN or infinite
#: (and that a collection is empty)
NON_FINITE = AnyOf("non-finite", "not finite", "NaN")

EMPTY = AnyOf("empty", "at least")

Fragment = str | AnyOf


def _lookahead(fragment: Fragment) -> str:
    if isinstance(fragment, AnyOf):
        inner = "|".join(re.escape(f) for f in fragment)
    else:
        inner = re.escape(fragment)
    return f"(?=[\\s\\S]*(?:{inner}))"


def raises_naming(
    fragments: Fragment | tuple[Fragment, ...],
    exc: type[Exception] | tuple[type[Exception], ...] = CLEAR,
) -> Any:
    """``pytest.raises(exc)`` whose message must contain every fragment (any order, literal; an
    :class:`AnyOf` fragment needs one of its strings)."""
    if isinstance(fragments, str | AnyOf):
        fragments = (fragments,)
    return pytest.raises(exc, match="".join(_lookahead(f) for f in fragments))


@contextmanager
def unchanged(module: nn.Module) -> Iterator[None]:
    """Assert that ``module``'s state dict is exactly the same after the block (refused input
    must leave no half-applied state)."""
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    yield
    after = module.state_dict()
    assert set(after) == set(before), "the set of parameters/buffers changed"
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


def bad_positive_ints(name: str) -> list[Any]:
    """``pytest.param``s of values an argument ``name`` that must be a positive int refuses,
    each with the fragments its error message must name."""
    return [
        pytest.param(0, (name, "0"), id=f"{name}=0"),
        pytest.param(-1, (name, "-1"), id=f"{name}=-1"),
        pytest.param(2.5, (name, "2.5"), id=f"{name}=2.5"),
        pytest.param(True, (name, "True"), id=f"{name}=True"),
        pytest.param("3", (name, "3"), id=f"{name}='3'"),
    ]


def bad_positive_floats(name: str) -> list[Any]:
    """``pytest.param``s of values an argument ``name`` that must be a positive finite number
    refuses, each with the fragments its error message must name."""
    return [
        pytest.param(0.0, (name, "0"), id=f"{name}=0"),
        pytest.param(-1.0, (name, "-1"), id=f"{name}=-1"),
        pytest.param(NAN, (name, "nan"), id=f"{name}=nan"),
        pytest.param(INF, (name, "inf"), id=f"{name}=inf"),
        pytest.param("0.1", (name, "str"), id=f"{name}='0.1'"),
    ]


# -- tiny flows ---------------------------------------------------------------------------------
def _tiny(builder: Callable[..., Flow], **options: Any) -> Callable[..., Flow]:
    def make(input_dim: int = 3, context_dim: int | None = None) -> Flow:
        torch.manual_seed(0)
        return builder(input_dim, context_dim=context_dim, **options)

    return make


#: name -> factory ``(input_dim=3, context_dim=None) -> Flow``, every vector builder, tiny
VECTOR_FLOWS: dict[str, Callable[..., Flow]] = {
    "nice": _tiny(flows.nice, num_transforms=2, hidden_dims=(8,)),
    "realnvp": _tiny(flows.realnvp, num_transforms=2, hidden_dims=(8,)),
    "maf": _tiny(flows.maf, num_transforms=2, hidden_dims=(8,)),
    "iaf": _tiny(flows.iaf, num_transforms=2, hidden_dims=(8,)),
    "nsf": _tiny(flows.nsf, num_transforms=2, hidden_dims=(8,), num_bins=4),
    "nsf_coupling": _tiny(flows.nsf, num_transforms=2, hidden_dims=(8,), num_bins=4, coupling=True),
    "planar": _tiny(flows.planar, num_transforms=2, hidden_dims=(8,)),
    "radial": _tiny(flows.radial, num_transforms=2, hidden_dims=(8,)),
    "gaussianization": _tiny(
        flows.gaussianization, num_transforms=2, hidden_dims=(8,), num_components=4
    ),
}

#: the builders that take a context (all vector builders do)
CONDITIONAL_FLOWS = VECTOR_FLOWS


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of ``x``."""
    return x.detach().double().numpy()


def result_or_refusal(call: Callable[[], Any], fragments: tuple[str, ...]) -> Any | None:
    """Run ``call``: its result, or ``None`` if it refused with a clear ``ValueError`` /
    ``TypeError`` naming every fragment. Any other exception (a deep torch error) propagates,
    and a refusal whose message misses a fragment fails the test.

    For inputs where either outcome is right (a dtype the flow could convert or refuse)."""
    try:
        return call()
    except CLEAR as error:
        missing = [
            f for f in fragments
            if not (any(a in str(error) for a in f) if isinstance(f, AnyOf) else f in str(error))
        ]
        assert not missing, f"refused, but the message {str(error)!r} does not name {missing}"
        return None
