"""``torch_threads`` and the loops' ``threads=``: the count inside, the user's setting after."""

from __future__ import annotations

import inspect

import pytest
import torch

from pyro_flows import flows, torch_threads
from pyro_flows.infer import distill, fit, fit_guide, fit_target
from pyro_flows.threads import accepts_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_block_runs_on_the_count_and_the_setting_comes_back(two_threads):
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # also after an error
    with torch_threads(None) as n:
        assert n == 2


@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError),
                     ("1", TypeError)]
)
def test_bad_counts_are_named(value, error, two_threads):
    with pytest.raises(error, match="threads must be a positive int"):
        with torch_threads(value):
            pass
    assert torch.get_num_threads() == 2


def test_training_loops_take_threads_and_restore_the_setting(two_threads):
    seen: list[int] = []

    def spy(*args):
        seen.append(torch.get_num_threads())

    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=1, hidden_dims=(8,))
    fit(flow, torch.randn(64, 2), epochs=1, batch_size=32, progress=False, threads=1,
        callback=spy)
    fit_target(flows.realnvp(2, num_transforms=1, hidden_dims=(8,)),
               lambda z: -0.5 * (z**2).sum(-1), steps=2, batch_size=8, progress=False,
               threads=1, callback=spy)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be a positive int"):
        fit(flow, torch.randn(64, 2), epochs=1, progress=False, threads=0)
    assert torch.get_num_threads() == 2


def test_the_signatures_show_threads():
    for fn in (fit, fit_target, fit_guide, distill):
        parameter = inspect.signature(fn).parameters["threads"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
        assert ":param threads:" in fn.__doc__
    # before a function's **kwargs (fit_guide passes those to the model)
    assert list(inspect.signature(fit_guide).parameters)[-2:] == ["threads", "kwargs"]


def test_the_decorator_needs_a_keyword_only_threads_parameter():
    def positional(threads: int | None = None) -> None: ...

    def missing() -> None: ...

    for fn in (positional, missing):
        with pytest.raises(TypeError, match="needs a keyword-only parameter named 'threads'"):
            accepts_threads(fn)
