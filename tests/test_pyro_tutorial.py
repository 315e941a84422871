"""Pyro's "Normalizing Flows - Introduction" tutorial, run twice: as written, with
``import pyro.distributions.transforms as T``, and with ``import pyro_flows.transforms as T``, the
only change. (pyro.ai/examples/normalizing_flows_intro.html, formerly normalizing_flows_i.html;
the notebook is tutorial/source/normalizing_flows_intro.ipynb in Pyro's repository.)

The tutorial's code cells are reproduced below as they are (plots, ``%%time`` and the
``smoke_test`` switch left out; fewer training steps, marked), and executed cell by cell in one
namespace; the measurements between cells only read that namespace. NumPy's and torch's seeds are
fixed before each run (the tutorial's ``make_circles`` call uses NumPy's global generator).

pyro_flows' splines treat the coordinates as one event (``event_dim = 1``; Pyro's elementwise
splines have ``event_dim = 0``), so ``log_prob`` returns per-point sums where Pyro returns one
value per coordinate: the measured negative log-likelihoods below are per point, summed over the
coordinates, for both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

PYRO_IMPORT = "import pyro.distributions.transforms as T"
OURS_IMPORT = "import pyro_flows.transforms as T"

IMPORTS = f"""
import torch
import pyro
import pyro.distributions as dist
{PYRO_IMPORT}
"""

FIXED = """
dist_x = dist.Normal(torch.zeros(1), torch.ones(1))
exp_transform = T.ExpTransform()
dist_y = dist.TransformedDistribution(dist_x, [exp_transform])
samples_y = dist_y.sample([1000])

dist_x = dist.Normal(torch.zeros(1), torch.ones(1))
affine_transform = T.AffineTransform(loc=3, scale=0.5)
exp_transform = T.ExpTransform()
dist_y = dist.TransformedDistribution(dist_x, [affine_transform, exp_transform])
samples_affine_y = dist_y.sample([1000])
"""

DATA = """
import numpy as np
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

n_samples = 1000
X, y = datasets.make_circles(n_samples=n_samples, factor=0.5, noise=0.05)
X = StandardScaler().fit_transform(X)
"""

SPLINE_SETUP = """
base_dist = dist.Normal(torch.zeros(2), torch.ones(2))
spline_transform = T.Spline(2, count_bins=16)
flow_dist = dist.TransformedDistribution(base_dist, [spline_transform])
"""

SPLINE_TRAIN = """
steps = STEPS  # the tutorial: 1 if smoke_test else 1001
dataset = torch.tensor(X, dtype=torch.float)
optimizer = torch.optim.Adam(spline_transform.parameters(), lr=1e-2)
for step in range(steps):
    optimizer.zero_grad()
    loss = -flow_dist.log_prob(dataset).mean()
    loss.backward()
    optimizer.step()
    flow_dist.clear_cache()

    if step % 200 == 0:
        print('step: {}, loss: {}'.format(step, loss.item()))
"""

SPLINE_SAMPLE = """
X_flow = flow_dist.sample(torch.Size([1000,])).detach().numpy()
"""

COUPLING_SETUP = """
base_dist = dist.Normal(torch.zeros(2), torch.ones(2))
spline_transform = T.spline_coupling(2, count_bins=16)
flow_dist = dist.TransformedDistribution(base_dist, [spline_transform])
"""

COUPLING_TRAIN = """
steps = STEPS  # the tutorial: 1 if smoke_test else 5001
dataset = torch.tensor(X, dtype=torch.float)
optimizer = torch.optim.Adam(spline_transform.parameters(), lr=5e-3)
for step in range(steps+1):
    optimizer.zero_grad()
    loss = -flow_dist.log_prob(dataset).mean()
    loss.backward()
    optimizer.step()
    flow_dist.clear_cache()

    if step % 500 == 0:
        print('step: {}, loss: {}'.format(step, loss.item()))
"""

CONDITIONAL_SETUP = """
dist_base = dist.Normal(torch.zeros(1), torch.ones(1))
x1_transform = T.spline(1)
dist_x1 = dist.TransformedDistribution(dist_base, [x1_transform])

x2_transform = T.conditional_spline(1, context_dim=1)
dist_x2_given_x1 = dist.ConditionalTransformedDistribution(dist_base, [x2_transform])

x1 = torch.ones(1)
print(dist_x2_given_x1.condition(x1).sample())
"""

CONDITIONAL_TRAIN = """
steps = STEPS  # the tutorial: 1 if smoke_test else 5001
modules = torch.nn.ModuleList([x1_transform, x2_transform])
optimizer = torch.optim.Adam(modules.parameters(), lr=3e-3)
x1 = dataset[:,0][:,None]
x2 = dataset[:,1][:,None]
for step in range(steps):
    optimizer.zero_grad()
    ln_p_x1 = dist_x1.log_prob(x1)
    ln_p_x2_given_x1 = dist_x2_given_x1.condition(x1.detach()).log_prob(x2.detach())
    loss = -(ln_p_x1 + ln_p_x2_given_x1).mean()
    loss.backward()
    optimizer.step()
    dist_x1.clear_cache()
    dist_x2_given_x1.clear_cache()

    if step % 500 == 0:
        print('step: {}, loss: {}'.format(step, loss.item()))
"""

CONDITIONAL_SAMPLE = """
X = torch.cat((x1, x2), dim=-1)
x1_flow = dist_x1.sample(torch.Size([1000,]))
x2_flow = dist_x2_given_x1.condition(x1_flow).sample(torch.Size([1000,]))
X_flow = torch.cat((x1_flow, x2_flow), dim=-1)
"""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tutorial:
    """The tutorial's namespace; ``run(cell)`` executes one code cell with ``T`` bound by the
    given import line (the only difference between the two runs)."""

    def __init__(self, import_line: str, seed: int = 0) -> None:
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.import_line = import_line
        self.ns: dict = {}
        self.run(IMPORTS)

    def run(self, cell: str, steps: int = 0) -> None:
        """Execute ``cell``; a training cell runs ``steps`` optimiser steps."""
        code = cell.replace(PYRO_IMPORT, self.import_line)
        self.ns["STEPS"] = steps
        exec(compile(code, "<tutorial>", "exec"), self.ns)  # noqa: S102

    def __getitem__(self, name: str):
        return self.ns[name]


def per_point(log_prob: torch.Tensor, n: int) -> torch.Tensor:
    """Per-point log density: Pyro's ``(n, D)`` per-coordinate values summed, ours as they are."""
    return log_prob.reshape(n, -1).sum(-1)


def joint_nll(tut: Tutorial) -> float:
    """The tutorial's ``flow_dist`` on its ``dataset``: mean negative log-likelihood per point."""
    data = torch.tensor(tut["X"], dtype=torch.float)
    with torch.no_grad():
        nll = -per_point(tut["flow_dist"].log_prob(data), len(data)).mean().item()
    tut["flow_dist"].clear_cache()  # Pyro's identity cache must not carry no-grad values
    return nll


def conditional_nll(tut: Tutorial) -> float:
    """``-log p(x1) - log p(x2 | x1)`` per point under the tutorial's two distributions."""
    data = torch.tensor(tut["X"], dtype=torch.float)
    x1, x2 = data[:, :1], data[:, 1:]
    with torch.no_grad():
        lp = per_point(tut["dist_x1"].log_prob(x1), len(data))
        lp = lp + per_point(tut["dist_x2_given_x1"].condition(x1).log_prob(x2), len(data))
    tut["dist_x1"].clear_cache()
    return -lp.mean().item()


def test_the_import_line_is_the_tutorials():
    assert IMPORTS.count(PYRO_IMPORT) == 1
    for cell in (FIXED, DATA, SPLINE_SETUP, COUPLING_SETUP, CONDITIONAL_SETUP):
        assert "pyro_flows" not in cell


def test_fixed_transforms():
    """The first section: torch's ``ExpTransform`` and ``AffineTransform`` under ``T``."""
    for line in (PYRO_IMPORT, OURS_IMPORT):
        tut = Tutorial(line)
        tut.run(FIXED)
        assert tut["samples_y"].shape == tut["samples_affine_y"].shape == (1000, 1)
        log_normal = torch.distributions.LogNormal(3.0, 0.5)
        y = torch.tensor([[0.5], [20.0]])
        assert torch.allclose(tut["dist_y"].log_prob(y), log_normal.log_prob(y))


def train_section(import_line: str, setup: str, train: str, sample: str, nll, steps: int):
    """Run the data cell, then ``setup``, ``train`` (``steps`` steps) and ``sample``; return the
    namespace and ``nll`` before and after training."""
    tut = Tutorial(import_line)
    tut.run(DATA)
    if train is CONDITIONAL_TRAIN:  # it reads `dataset`, which the first spline cells define
        tut.run(SPLINE_SETUP)
        tut.run(SPLINE_TRAIN, steps=0)
    tut.run(setup)
    before = nll(tut)
    tut.run(train, steps)
    after = nll(tut)
    tut.run(sample)
    return tut, before, after


# (steps, largest excess of our final NLL over Pyro's); see each test for the measured values
SPLINE = (300, 0.05)
COUPLING = (150, 0.1)
CONDITIONAL = (300, 0.05)


def test_learnable_univariate_spline():
    """``T.Spline(2, count_bins=16)`` on the circles. Measured at 300 steps (the tutorial's
    1001), NLL per point before -> after, seeds 0 to 3: Pyro 6.57 -> 2.632, 5.12 -> 2.543,
    7.91 -> 2.645, 5.88 -> 2.576 (random initialisation); pyro_flows 2.838 -> 2.528, 2.516,
    2.519, 2.527 (from the identity)."""
    steps, margin = SPLINE
    results = {}
    for line in (PYRO_IMPORT, OURS_IMPORT):
        tut, before, after = train_section(
            line, SPLINE_SETUP, SPLINE_TRAIN, SPLINE_SAMPLE, joint_nll, steps
        )
        assert after < before - 0.2, (line, before, after)
        assert tut["X_flow"].shape == (1000, 2)
        results[line] = after
    assert results[OURS_IMPORT] < results[PYRO_IMPORT] + margin, results


def test_multivariate_spline_coupling():
    """``T.spline_coupling(2, count_bins=16)``. pyro_flows' coupling leaves ``x_1`` unchanged
    where Pyro's also splines it (see ``spline_coupling``). Measured at 150 steps (the
    tutorial's 5001), final NLL per point, seeds 0 to 3: Pyro 2.249, 2.479, 2.086, 2.000;
    pyro_flows 2.148, 2.231, 2.105, 2.013 (at most 0.02 above Pyro's)."""
    steps, margin = COUPLING
    results = {}
    for line in (PYRO_IMPORT, OURS_IMPORT):
        tut, before, after = train_section(
            line, COUPLING_SETUP, COUPLING_TRAIN, SPLINE_SAMPLE, joint_nll, steps
        )
        assert after < before - 0.2, (line, before, after)
        assert tut["X_flow"].shape == (1000, 2)
        results[line] = after
    assert results[OURS_IMPORT] < results[PYRO_IMPORT] + margin, results


def test_conditional_spline():
    """``T.spline(1)`` for ``p(x1)`` and ``T.conditional_spline(1, context_dim=1)`` for
    ``p(x2 | x1)``. Measured at 300 steps (the tutorial's 5001), final NLL per point, seeds 0
    to 3: Pyro 1.996, 2.403, 2.103, 2.072; pyro_flows 1.935, 2.035, 1.952, 2.033."""
    steps, margin = CONDITIONAL
    results, shapes = {}, {}
    for line in (PYRO_IMPORT, OURS_IMPORT):
        tut, before, after = train_section(
            line, CONDITIONAL_SETUP, CONDITIONAL_TRAIN, CONDITIONAL_SAMPLE, conditional_nll, steps
        )
        assert after < before - 0.2, (line, before, after)
        shapes[line] = [tuple(tut[k].shape) for k in ("x1_flow", "x2_flow", "X_flow")]
        results[line] = after
    assert shapes[OURS_IMPORT] == shapes[PYRO_IMPORT] == [(1000, 1), (1000, 1), (1000, 2)]
    assert results[OURS_IMPORT] < results[PYRO_IMPORT] + margin, results
