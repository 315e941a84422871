"""Trainable bases (:mod:`pyro_flows.distributions.trainable`) with every vector builder: shapes,
gradients through training, normalisation, dtype moves, save/load, heavy tails and modes."""

from __future__ import annotations

import inspect
import io
import math
import re

import pytest
import torch

from pyro_flows import flows
from pyro_flows.distributions.trainable import (
    DiagonalNormal,
    GaussianMixture,
    NormalMixture,
    StudentT,
    student_t_log_prob,
)
from pyro_flows.infer import fit

BASES = {
    "diagonal_normal": lambda d: DiagonalNormal(d),
    "gaussian_mixture": lambda d: GaussianMixture(d, num_components=3),
    "student_t": lambda d: StudentT(d),
}

VECTOR_BUILDERS = [
    name
    for name in flows.__all__
    if name in flows.BUILDERS
    and flows.BUILDERS[name].event == "vector"
    and "base" in inspect.signature(flows.BUILDERS[name].build).parameters
]

# the smallest sensible size of each builder (a missing name gets the defaults below)
OPTIONS = {"cnf": {"num_transforms": 1}, "gaussianization": {"num_components": 4}}


def build(name: str, base: torch.nn.Module, dim: int = 2, **extra: object) -> flows.Flow:
    options = {"num_transforms": 2, "hidden_dims": (8,), **OPTIONS.get(name, {}), **extra}
    return flows.BUILDERS[name].build(dim, base=base, **options)


def perturb(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator).to(p))


def test_every_vector_builder_is_covered():
    assert {"nice", "realnvp", "maf", "iaf", "nsf", "planar", "radial"} <= set(VECTOR_BUILDERS)


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("name", VECTOR_BUILDERS)
def test_builder_takes_base(name, base_name):
    torch.manual_seed(0)
    base = BASES[base_name](2)
    flow = build(name, base)
    assert flow.base is base
    x = torch.randn(5, 2)
    log_q = flow.log_prob(x)
    assert log_q.shape == (5,) and bool(log_q.isfinite().all())
    assert flow.sample((4,)).shape == (4, 2)
    y, log_y = flow.rsample_and_log_prob((3,))
    assert y.shape == (3, 2) and log_y.shape == (3,)
    torch.testing.assert_close(log_y, flow.log_prob(y), atol=1e-3, rtol=1e-3)
    # the density's gradient reaches every base parameter
    flow.zero_grad()
    (-flow.log_prob(x).mean()).backward()
    for pname, p in base.named_parameters():
        assert p.grad is not None and bool(p.grad.isfinite().all()), pname
        assert float(p.grad.abs().sum()) > 0, pname
    # and fit moves them
    before = {k: v.detach().clone() for k, v in base.named_parameters()}
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 1.5 + 0.5
    fit(flow, data, epochs=1, batch_size=32, validation=None, progress=False, lr=1e-2)
    for pname, p in base.named_parameters():
        assert not torch.equal(p.detach(), before[pname]), pname


@pytest.mark.parametrize("base_name", BASES)
def test_conditional_flow_and_pyro_distribution(base_name):
    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(8,), context_dim=3, base=BASES[base_name](2))
    context = torch.randn(5, 3)
    assert flow.sample((4,), context).shape == (4, 5, 2)
    assert flow.rsample((4,), context).shape == (4, 5, 2)
    assert flow.log_prob(torch.randn(5, 2), context).shape == (5,)
    assert flow.log_prob(torch.randn(7, 1, 2), context).shape == (7, 5)
    d = flow(context)
    x = d.rsample((2,))
    assert x.shape == (2, 5, 2) and d.log_prob(x).shape == (2, 5)
    unconditional = flows.realnvp(2, num_transforms=2, hidden_dims=(8,), base=BASES[base_name](2))
    e = unconditional().expand((3,))
    assert e.rsample((2,)).shape == (2, 3, 2) and e.log_prob(e.rsample()).shape == (3,)


def tuned_bases() -> dict[str, torch.nn.Module]:
    """Bases away from their defaults (off-centre, unequal scales and weights, per-dim df)."""
    return {
        "diagonal_normal": DiagonalNormal(2, loc=torch.tensor([0.5, -0.3]), scale=[0.7, 1.4]),
        "gaussian_mixture": GaussianMixture(
            2, num_components=3, scale=torch.tensor([[0.5], [1.0], [0.8]]), weights=[1, 2, 3]
        ),
        "student_t": StudentT(2, df=torch.tensor([3.0, 6.0])),
    }


@pytest.mark.parametrize("base_name", BASES)
def test_fast_log_prob_matches_the_distribution(base_name):
    base = tuned_bases()[base_name].double()
    z = torch.randn(50, 2, dtype=torch.float64) * torch.tensor([1.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(base.log_prob(z), base().log_prob(z))
    far = torch.full((3, 2), 1e3, dtype=torch.float32)
    assert bool(tuned_bases()[base_name].log_prob(far).isfinite().all())


def test_student_t_log_prob_finite_far_out():
    z = torch.tensor([0.0, 0.5, 1.0, 1e10, 1e30, -1e38])
    for df in (0.5, 1.0, 30.0):
        out = student_t_log_prob(z, torch.tensor(df))
        assert bool(out.isfinite().all())
        ref = torch.distributions.StudentT(torch.tensor(df, dtype=torch.float64))
        torch.testing.assert_close(
            out[:4].double(), ref.log_prob(z[:4].double()), rtol=1e-5, atol=1e-5
        )
    z = torch.tensor([0.0, 2e19], requires_grad=True)
    student_t_log_prob(z, torch.tensor(2.0)).sum().backward()
    assert bool(z.grad.isfinite().all())


@pytest.mark.parametrize("base_name", BASES)
def test_grid_normalisation(base_name):
    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=2, hidden_dims=(8,), base=tuned_bases()[base_name])
    perturb(flow.transforms, scale=0.1)
    flow = flow.double()
    edge, n = 15.0, 301
    axis = torch.linspace(-edge, edge, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(float(mass) - 1.0) < 1e-2


@pytest.mark.parametrize("base_name", BASES)
def test_double_and_save_load_carry_the_base(base_name):
    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(8,), base=tuned_bases()[base_name])
    perturb(flow.base, scale=0.3, seed=2)
    x = torch.randn(6, 2)
    with torch.no_grad():
        log_q32 = flow.log_prob(x)
    state = flow.state_dict()
    assert {k for k in state if k.startswith("base.")} == {
        "base." + k for k, _ in flow.base.named_parameters()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    fresh = {
        "diagonal_normal": DiagonalNormal(2),
        "gaussian_mixture": GaussianMixture(2, num_components=3, seed=7),
        "student_t": StudentT(2, df=9.0),
    }[base_name]
    other = flows.maf(2, num_transforms=2, hidden_dims=(8,), base=fresh)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(other.log_prob(x), log_q32)
    flow = flow.double()
    assert all(p.dtype == torch.float64 for p in flow.base.parameters())
    with torch.no_grad():
        log_q64 = flow.log_prob(x.double())
        sample = flow.sample((3,))
    assert log_q64.dtype == torch.float64 and sample.dtype == torch.float64
    torch.testing.assert_close(log_q64, log_q32.double(), rtol=1e-4, atol=1e-4)


def test_mixture_rsample_is_reparametrised_given_the_component():
    base = GaussianMixture(1, num_components=2, loc=[[-10.0], [10.0]], weights=[0.2, 0.8])
    z = base().rsample((4000,))
    assert z.shape == (4000, 1)
    assert abs(float((z < 0).float().mean()) - 0.2) < 0.03  # weights set the frequencies
    z.square().mean().backward()
    assert float(base.loc.grad.abs().min()) > 0 and float(base.log_scale.grad.abs().min()) > 0
    assert base.logits.grad is None  # the discrete choice passes no gradient
    d = base().expand((3,))
    assert isinstance(d, NormalMixture) and d.rsample((2,)).shape == (2, 3, 1)


def test_student_t_rsample_reaches_df_and_fixed_options():
    base = StudentT(2, df=3.0)
    base().rsample((200,)).abs().mean().backward()
    assert bool(base.raw_df.grad.isfinite().all()) and float(base.raw_df.grad.abs().min()) > 0
    fixed = StudentT(2, df=3.0, learn_df=False)
    assert list(fixed.parameters()) == [] and "raw_df" in fixed.state_dict()
    assert list(DiagonalNormal(2, trainable=False).parameters()) == []
    assert list(GaussianMixture(2, 2, trainable=False).parameters()) == []
    torch.testing.assert_close(StudentT(1, df=0.3, min_df=0.0).df.detach(), torch.tensor([0.3]))


def test_mixture_initialisation_is_seeded():
    a, b = GaussianMixture(3, 4), GaussianMixture(3, 4)
    torch.testing.assert_close(a.loc, b.loc)
    assert not torch.equal(a.loc, GaussianMixture(3, 4, seed=1).loc)
    assert float(a.loc.detach().std()) > 0.3  # spread, not all at one point


def heavy_tailed_nll(base: torch.nn.Module | None) -> float:
    t2 = torch.distributions.StudentT(torch.tensor(2.0))
    torch.manual_seed(1)
    data, test = t2.sample((4000, 1)), t2.sample((2000, 1))
    torch.manual_seed(0)
    flow = flows.maf(1, num_transforms=2, hidden_dims=(8,), base=base)
    fit(flow, data, epochs=20, batch_size=256, lr=1e-2, progress=False, seed=0)
    with torch.no_grad():
        return -float(flow.log_prob(test).mean())


def test_student_t_base_fits_heavy_tails_better():
    # measured: standard Normal base 2.42, Student-t base 2.02 (df 5 -> 3.9); the true
    # Student-t(2) entropy is 1.96
    base = StudentT(1)
    nll_t, nll_normal = heavy_tailed_nll(base), heavy_tailed_nll(None)
    assert math.isfinite(nll_t) and math.isfinite(nll_normal)
    assert nll_t < nll_normal - 0.15
    assert nll_t < 2.15
    assert float(base.df.detach()) < 4.5  # df learned towards the data's 2


def two_modes(n: int, generator: torch.Generator) -> torch.Tensor:
    side = torch.where(torch.rand(n, generator=generator) < 0.5, -4.0, 4.0)
    return torch.stack([side, torch.zeros(n)], -1) + 0.5 * torch.randn(n, 2, generator=generator)


def test_mixture_base_covers_separated_modes():
    # measured (maf): mixture base NLL 2.33 with 49% / 42% of samples within 1.5 of each mode;
    # standard Normal base NLL 3.57 with 18% / 17% (mass smeared between); true NLL 2.14
    generator = torch.Generator().manual_seed(3)
    data, test = two_modes(3000, generator), two_modes(2000, generator)
    results = {}
    for name, base in (("mixture", GaussianMixture(2, num_components=2)), ("normal", None)):
        torch.manual_seed(0)
        flow = flows.maf(2, num_transforms=2, hidden_dims=(16,), base=base)
        fit(flow, data, epochs=20, batch_size=256, lr=1e-2, progress=False, seed=0)
        with torch.no_grad():
            x = flow.sample((4000,))
            nll = -float(flow.log_prob(test).mean())
        near = [
            float(((x - m).norm(dim=-1) < 1.5).float().mean())
            for m in (torch.tensor([4.0, 0]), torch.tensor([-4.0, 0]))
        ]
        results[name] = nll, near
    nll, near = results["mixture"]
    assert min(near) > 0.3, near
    assert nll < results["normal"][0] - 0.5 and nll < 2.6


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: DiagonalNormal(0), ValueError),
        (lambda: DiagonalNormal(2.0), TypeError),
        (lambda: DiagonalNormal(2, scale=0.0), ValueError),
        (lambda: DiagonalNormal(2, scale=[1.0, -1.0]), ValueError),
        (lambda: DiagonalNormal(2, loc=torch.zeros(3)), ValueError),
        (lambda: DiagonalNormal(2, loc=float("nan")), ValueError),
        (lambda: DiagonalNormal(2, loc="a"), TypeError),
        (lambda: DiagonalNormal(2, trainable=1), TypeError),
        (lambda: GaussianMixture(2, num_components=0), ValueError),
        (lambda: GaussianMixture(2, num_components=-1), ValueError),
        (lambda: GaussianMixture(2, num_components=1.5), TypeError),
        (lambda: GaussianMixture(2, 2, loc=torch.zeros(3, 2)), ValueError),
        (lambda: GaussianMixture(2, 2, loc=torch.zeros(2)), ValueError),
        (lambda: GaussianMixture(2, 2, scale=torch.zeros(2, 2)), ValueError),
        (lambda: GaussianMixture(2, 2, weights=[1.0, 0.0]), ValueError),
        (lambda: GaussianMixture(2, 2, weights=[1.0, 1.0, 1.0]), ValueError),
        (lambda: GaussianMixture(2, 2, seed=-1), ValueError),
        (lambda: GaussianMixture(2, 2, seed="0"), TypeError),
        (lambda: StudentT(2, df=0.0), ValueError),
        (lambda: StudentT(2, df=-3.0), ValueError),
        (lambda: StudentT(2, df=1.0), ValueError),  # not above the floor min_df=1
        (lambda: StudentT(2, df=float("inf")), ValueError),
        (lambda: StudentT(2, df=torch.full((3,), 5.0)), ValueError),
        (lambda: StudentT(2, min_df=-1.0), ValueError),
        (lambda: StudentT(2, learn_df="yes"), TypeError),
        (lambda: StudentT(2, df=True), TypeError),
        (lambda: flows.realnvp(2, 2, (8,), base=DiagonalNormal(3)), ValueError),
    ],
)
def test_bad_arguments(make, error):
    with pytest.raises(error):
        make()


@pytest.mark.parametrize("make", [lambda: DiagonalNormal(2), lambda: GaussianMixture(2, 3)])
def test_float32_overflow_is_a_clear_error_not_minus_inf(make):
    """A base positive everywhere says so (``positive_everywhere``): a ``-inf`` log density at
    finite data is float32 overflow, reported as the standard Normal's is."""
    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=1, hidden_dims=(4,), base=make())
    with pytest.raises(ValueError, match="too far out for torch.float32"):
        flow.log_prob(torch.tensor([[3e19, 0.0]]))


def _student_t_log_normaliser_float64(df: float) -> float:
    return math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)


def test_student_t_stays_normalised_for_large_df_in_float32():
    """lgamma((v+1)/2) - lgamma(v/2) cancels in float32 (df=1e6 gave -0.980, not -0.919)."""
    dfs = [3.0, 29.9, 30.1, 1e3, 1e6, 1e8]
    out = student_t_log_prob(torch.zeros(len(dfs)), torch.tensor(dfs))
    assert out.dtype == torch.float32
    for value, df in zip(out.tolist(), dfs, strict=True):
        normal_limit = -0.5 * math.log(2 * math.pi) - 1 / (4 * df)
        reference = _student_t_log_normaliser_float64(df) if df < 1e4 else normal_limit
        assert math.isclose(value, reference, abs_tol=2e-6), (df, value, reference)
    base = StudentT(3, df=[1e3, 1e6, 1e8])
    expected = sum(_student_t_log_normaliser_float64(df) for df in (1e3, 1e6, 1e8))
    assert math.isclose(float(base.log_prob(torch.zeros(1, 3)).detach()), expected, abs_tol=1e-5)
    z = torch.linspace(-6.0, 6.0, 12001)[:, None]
    mass = float(StudentT(1, df=1e6).log_prob(z).detach().exp().sum()) * 1e-3
    assert math.isclose(mass, math.erf(6 / math.sqrt(2)), abs_tol=1e-4)


def test_student_t_normaliser_gradients_match_float64():
    """d/dv log p(0) = (psi((v+1)/2) - psi(v/2))/2 - 1/(2v) ~ 1/(4 v^2): finite and right."""
    dfs = [0.05, 3.0, 29.9, 30.1, 1e3, 1e6]
    df = torch.tensor(dfs, requires_grad=True)
    student_t_log_prob(torch.zeros(len(dfs)), df).sum().backward()
    v = torch.tensor(dfs, dtype=torch.float64)
    exact = 0.5 * (torch.digamma((v + 1) / 2) - torch.digamma(v / 2)) - 0.5 / v
    reference = torch.where(v < 1e4, exact, 1 / (4 * v**2) - 1 / (8 * v**4))
    torch.testing.assert_close(df.grad.double(), reference, rtol=1e-4, atol=0.0)
    base = StudentT(2, df=[5.0, 1e7])
    base.log_prob(torch.randn(8, 2, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert bool(base.raw_df.grad.isfinite().all())


@pytest.mark.parametrize("base_name", BASES)
def test_fast_log_prob_refuses_the_wrong_event_size(base_name):
    """A (5, 1) input used to broadcast silently against D=2; (3,) gave a torch RuntimeError."""
    base = BASES[base_name](2)
    for shape in [(5, 1), (3,), (), (4, 3)]:
        with pytest.raises(
            ValueError, match=r"z of shape \(\.\.\., 2\).*got shape " + re.escape(str(shape))
        ):
            base.log_prob(torch.zeros(shape))
    with pytest.raises(TypeError, match="z as a tensor, got list"):
        base.log_prob([[0.0, 0.0]])
    assert base.log_prob(torch.zeros(4, 3, 2)).shape == (4, 3)
