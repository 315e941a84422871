"""Family tests for Gaussianization flows: the log-space maths, the numerical inverse, the
data-driven initialisation, the PCA rotations and the builder (the shared harness runs the
generic checks on MarginalGaussianization; see tests/transforms/cases/gaussianization.py)."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import Flow
from pyro_flows.data import ORACLE_NLL, TOYS
from pyro_flows.flows.iterative_gaussianization import (
    gaussianization,
    householder_vectors,
    initialize_gaussianization,
    set_linear_to_pca,
)
from pyro_flows.transforms._gaussianization import (
    from_gaussian,
    log_ndtri,
    mixture_logs,
    to_gaussian,
)
from pyro_flows.transforms.gaussianization import (
    MarginalGaussianization,
    column_quantiles,
    silverman_bandwidth,
)
from pyro_flows.transforms.linear import InvertibleLinear

KERNELS = ["logistic", "gaussian"]


def perturbed_layer(kernel: str = "logistic", dim: int = 2, k: int = 6, dtype=torch.float64):
    """A layer whose components are spread out, of unequal widths and weights."""
    torch.manual_seed(0)
    t = MarginalGaussianization(dim, num_components=k, kernel=kernel).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        t.loc.add_(torch.randn(t.loc.shape, generator=g, dtype=torch.float64).to(dtype))
        t.raw_scale.add_(0.5 * torch.randn(t.raw_scale.shape, generator=g, dtype=torch.float64))
        t.logits.add_(torch.randn(t.logits.shape, generator=g, dtype=torch.float64).to(dtype))
    return t


# -- log-space inverse normal CDF ---------------------------------------------------------------
def test_log_ndtri_matches_high_precision_reference():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    log_p = torch.tensor(
        [-1e8, -1e4, -700.0, -80.0, -30.0, -5.0, -1.0, -0.7, math.log(0.5)], dtype=torch.float64
    )
    z = log_ndtri(log_p)
    for lp, value in zip(log_p.tolist(), z.tolist(), strict=True):
        # reference: solve log Phi(z) = lp in 50 digits
        ref = mpmath.findroot(lambda t, lp=lp: mpmath.log(mpmath.ncdf(t)) - lp, value)
        assert abs(value - float(ref)) <= 1e-14 * (1 + abs(float(ref))), (lp, value, ref)


def test_log_ndtri_float32_is_finite_and_accurate_far_in_the_tail():
    log_p = -torch.logspace(-0.15, 30, 200, dtype=torch.float64)  # -0.71 ... -1e30
    z64 = log_ndtri(log_p)
    z32 = log_ndtri(log_p.float())
    assert torch.isfinite(z32).all()
    assert torch.allclose(z32.double(), z64, rtol=1e-6, atol=1e-6)


def test_log_ndtri_gradient_is_phi_over_density():
    log_p = torch.tensor([-2000.0, -40.0, -3.0, -0.8], dtype=torch.float64, requires_grad=True)
    z = log_ndtri(log_p)
    (grad,) = torch.autograd.grad(z.sum(), log_p)
    expected = torch.exp(log_p - (-0.5 * z * z - 0.5 * math.log(2 * math.pi)))
    assert torch.allclose(grad, expected.detach(), rtol=1e-10)


# -- the mixture CDF and the two directions ------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
def test_mixture_cdf_is_monotone_and_integrates_its_density(kernel):
    t = perturbed_layer(kernel)
    loc, scale, log_w = t.mixture()
    y = torch.linspace(-12, 12, 24001, dtype=torch.float64).unsqueeze(-1).expand(-1, 2)
    log_cdf, log_sf, hazard_cdf, hazard_sf = mixture_logs(y, loc, scale, log_w, kernel)
    assert torch.allclose(log_cdf + hazard_cdf, log_sf + hazard_sf)  # both are log f
    log_pdf = log_cdf + hazard_cdf
    cdf = log_cdf.exp()
    # monotone: log F increases where F is the smaller tail, log S decreases where S is (on the
    # other side of the median, F and S round to 1 and only jitter at the 1e-14 level)
    lower, upper = log_cdf[:-1] < math.log(0.5), log_sf[1:] < math.log(0.5)
    assert ((log_cdf[1:] - log_cdf[:-1])[lower] > 0).all()
    assert ((log_sf[1:] - log_sf[:-1])[upper] < 0).all()
    assert torch.allclose(cdf + log_sf.exp(), torch.ones_like(cdf), atol=1e-14)  # F + S = 1
    # F(b) - F(a) is the trapezoid integral of f between a and b
    pdf = log_pdf.exp()
    integral = torch.cumulative_trapezoid(pdf, y, dim=0)
    assert torch.allclose(integral, cdf[1:] - cdf[0], atol=1e-7)


@pytest.mark.parametrize("kernel", KERNELS)
def test_data_to_base_is_monotone_and_agrees_with_ndtri_in_the_bulk(kernel):
    t = perturbed_layer(kernel)
    loc, scale, log_w = t.mixture()
    y = torch.linspace(-6, 6, 2001, dtype=torch.float64).unsqueeze(-1).expand(-1, 2)
    z, _ = to_gaussian(y, loc, scale, log_w, kernel)
    assert (z[1:] > z[:-1]).all()
    log_cdf = mixture_logs(y, loc, scale, log_w, kernel)[0]
    bulk = (log_cdf.exp() > 1e-6) & (log_cdf.exp() < 1 - 1e-6)
    direct = torch.special.ndtri(log_cdf.exp())
    assert torch.allclose(z[bulk], direct[bulk], atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
def test_numerical_inverse_meets_its_tolerance_in_float64(kernel):
    """Sampling direction: the root solve reproduces x to a few ulps, tails included."""
    t = perturbed_layer(kernel)
    x = torch.linspace(-35, 35, 1401, dtype=torch.float64).unsqueeze(-1).expand(-1, 2)
    y, log_det = t.forward_and_log_det(x)
    x_back, log_det_back = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x, rtol=0, atol=1e-12 * 35)
    assert torch.allclose(log_det_back, -log_det, atol=1e-9)
    assert (y[1:] > y[:-1]).all()


def test_numerical_inverse_uses_few_newton_steps():
    t = perturbed_layer()
    calls = []
    loc, scale, log_w = t.mixture()

    import pyro_flows.transforms._gaussianization as maths

    original = maths.solve_increasing

    def counting(fun, *args, **kwargs):
        def counted(alpha):
            calls.append(1)
            return fun(alpha)

        return original(counted, *args, **kwargs)

    maths.solve_increasing = counting
    try:
        from_gaussian(torch.randn(1000, 2, dtype=torch.float64), loc, scale, log_w, "logistic")
    finally:
        maths.solve_increasing = original
    assert len(calls) <= 15, len(calls)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_stays_finite_and_close_to_float64_up_to_1e3(kernel):
    t64 = perturbed_layer(kernel)
    t32 = perturbed_layer(kernel, dtype=torch.float32)
    y = torch.tensor([-1e3, -300.0, -30.0, -1.0, 0.0, 2.0, 30.0, 300.0, 1e3])
    y = y.unsqueeze(-1).expand(-1, 2).contiguous()
    z32, ld32 = t32.inverse_and_log_det(y)
    z64, ld64 = t64.inverse_and_log_det(y.double())
    assert torch.isfinite(z32).all() and torch.isfinite(ld32).all()
    assert torch.allclose(z32.double(), z64, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ld32.double(), ld64, rtol=1e-4, atol=1e-3)
    # base-side inputs of size 1e3 through the root solve
    x = y.clone().requires_grad_(True)
    y32, fwd32 = t32.forward_and_log_det(x)
    assert torch.isfinite(y32).all() and torch.isfinite(fwd32).all()
    (y32.sum() + fwd32.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in t32.parameters())
    y64, _ = t64.forward_and_log_det(y.double())
    assert torch.allclose(y32.double(), y64, rtol=1e-5, atol=1e-5)


def test_parameter_gradients_of_both_directions_match_finite_differences():
    """Implicit gradients through the root solve and log_ndtri, checked by gradcheck."""
    t = perturbed_layer(k=3)
    x = torch.tensor([[-3.0, 0.4], [1.2, 25.0]], dtype=torch.float64)
    y = torch.tensor([[-2.0, 0.1], [4.0, -30.0]], dtype=torch.float64)
    params = (t.loc.detach(), t.raw_scale.detach(), t.logits.detach())

    def both(loc, raw_scale, logits):
        scale = torch.nn.functional.softplus(raw_scale) + t.min_scale
        log_w = torch.log_softmax(logits, -1)
        out, fwd = from_gaussian(x, loc, scale, log_w, "logistic")
        z, inv = to_gaussian(y, loc, scale, log_w, "logistic")
        return out, fwd, z, inv

    inputs = tuple(p.clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(both, inputs, atol=1e-6, rtol=1e-5)


# -- initialisation ------------------------------------------------------------------------------
def test_fresh_layer_is_close_to_the_identity():
    x = torch.linspace(-2.5, 2.5, 501).unsqueeze(-1)
    z, log_det = MarginalGaussianization(1).inverse_and_log_det(x)
    assert (z - x).abs().max() < 0.08
    assert log_det.abs().max() < 0.25


def test_column_quantiles_and_silverman_bandwidth():
    rows = torch.randn(4001, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    levels = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    assert torch.allclose(column_quantiles(rows, levels), torch.quantile(rows, levels, dim=0))
    h = silverman_bandwidth(rows * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), 32)
    expected = 0.9 * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) * 32**-0.2
    assert torch.allclose(h, expected, rtol=0.05)
    # a column with a zero IQR (mostly one value) falls back to the standard deviation
    spiky = torch.zeros(100, 1, dtype=torch.float64)
    spiky[:5] = 1.0
    assert torch.allclose(silverman_bandwidth(spiky, 32), 0.9 * spiky.std() * 32**-0.2)


@pytest.mark.parametrize("bandwidth", ["silverman", "spacing"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_initialize_gaussianizes_the_marginals(kernel, bandwidth):
    g = torch.Generator().manual_seed(0)
    data = torch.stack(
        [
            torch.randn(4000, generator=g) * 3.0 + 10.0,  # shifted and scaled Gaussian
            torch.rand(4000, generator=g) * 4.0,  # uniform
            (torch.rand(4000, generator=g) < 0.3) * 6.0 + torch.randn(4000, generator=g),
        ],
        -1,
    )
    t = MarginalGaussianization(3, num_components=32, kernel=kernel)
    t.initialize(data, bandwidth=bandwidth)
    assert torch.equal(t.logits.detach(), torch.zeros(3, 32))
    z, _ = t.inverse_and_log_det(data)
    assert z.mean(0).abs().max() < 0.05
    assert (z.std(0) - 1).abs().max() < 0.2
    # the first column was already Gaussian: in the bulk the layer standardises it, shrunk by
    # the kernel's smoothing under Silverman's rule (the estimate's variance is 1 + h^2)
    standardised = (data[:, 0] - data[:, 0].mean()) / data[:, 0].std()
    if bandwidth == "silverman":
        standardised = standardised / math.sqrt(1 + (0.9 * 32**-0.2) ** 2)
    bulk = standardised.abs() < 2
    assert torch.allclose(z[bulk, 0], standardised[bulk], atol=0.12)


def test_spacing_bandwidth_beats_silverman_on_skewed_marginals():
    data = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)).exp()
    nll = {}
    for bandwidth in ("silverman", "spacing"):
        t = MarginalGaussianization(2, num_components=32)
        t.initialize(data, bandwidth=bandwidth)
        nll[bandwidth] = -Flow([t]).log_prob(data).mean().item()
    exact = 2 * 0.5 * (1 + math.log(2 * math.pi))  # log-normal entropy: H(N(0, 1)) + E[log x]
    assert nll["spacing"] < nll["silverman"] - 0.1
    assert nll["spacing"] - exact < 0.1


def test_initialize_rejects_bad_data_and_options():
    t = MarginalGaussianization(2)
    with pytest.raises(ValueError, match="at least 2 rows"):
        t.initialize(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="non-finite"):
        t.initialize(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\).*got shape \(5, 3\)"):
        t.initialize(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bandwidth must be one of"):
        t.initialize(torch.randn(5, 2), bandwidth="scott")


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kernel must be one of"):
        MarginalGaussianization(2, kernel="cauchy")
    with pytest.raises(TypeError, match="num_components must be an int"):
        MarginalGaussianization(2, num_components=2.5)
    with pytest.raises(ValueError, match="num_components must be >= 1"):
        MarginalGaussianization(2, num_components=0)
    with pytest.raises(ValueError, match="min_scale must be a positive number"):
        MarginalGaussianization(2, min_scale=0.0)


# -- rotations -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_householder_vectors_rebuild_the_matrix_up_to_column_signs(dim):
    from pyro_flows.transforms.linear import householder_product

    g = torch.Generator().manual_seed(dim)
    q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    v, s = householder_vectors(q)
    assert torch.allclose(householder_product(v), q * s, atol=1e-12)
    assert set(s.tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("parametrization", ["qr", "lu"])
@pytest.mark.parametrize("bias", [False, True])
def test_pca_whitening_for_both_parametrizations(parametrization, bias):
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -0.3, 0.2]], dtype=torch.float64)
    data = torch.randn(20000, 3, generator=g, dtype=torch.float64) @ mix + 3.0
    layer = InvertibleLinear(3, parametrization=parametrization, bias=bias).double()
    set_linear_to_pca(layer, data)
    z, log_det = layer.inverse_and_log_det(data)
    assert torch.allclose(torch.cov(z.T), torch.eye(3, dtype=torch.float64), atol=1e-10)
    eigvals = torch.linalg.eigvalsh(torch.cov(data.T))
    assert torch.allclose(log_det[0], -0.5 * eigvals.log().sum())
    if bias:
        assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)


# -- the flow and its initialisation -------------------------------------------------------------
def test_builder_layout_and_options():
    flow = gaussianization(3, num_transforms=2, num_components=5)
    kinds = [type(t).__name__ for t in flow.transforms]
    assert kinds == ["InvertibleLinear", "MarginalGaussianization"] * 2
    assert flow.transforms[1].num_components == 5
    assert [type(t).__name__ for t in gaussianization(3, 2, rotation=None).transforms] == [
        "MarginalGaussianization"
    ] * 2
    assert len(gaussianization(1, 3).transforms) == 3  # no linear layers in 1-D
    assert gaussianization(2, 1, rotation="lu").transforms[0].parametrization == "lu"
    with pytest.raises(ValueError, match="rotation must be one of"):
        gaussianization(2, rotation="givens")
    with pytest.raises(ValueError, match="num_transforms must be >= 1"):
        gaussianization(2, num_transforms=0)


def test_initialize_gaussianization_rejects_bad_input():
    flow = gaussianization(2, num_transforms=1, num_components=4)
    with pytest.raises(ValueError, match=r"\(rows, 2\).*got shape \(10, 3\)"):
        initialize_gaussianization(flow, torch.randn(10, 3))
    with pytest.raises(ValueError, match="non-finite"):
        initialize_gaussianization(flow, torch.tensor([[0.0, float("inf")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="rotation_init must be one of"):
        initialize_gaussianization(flow, torch.randn(10, 2), rotation_init="ica")
    with pytest.raises(TypeError, match="pyro_flows.Flow"):
        initialize_gaussianization(torch.nn.Linear(2, 2), torch.randn(10, 2))


@pytest.mark.parametrize("rotation_init", ["random", "pca"])
def test_initialisation_alone_is_far_better_than_the_base(rotation_init):
    """Data-driven init, no gradient step: 8 gaussians' NLL drops from the fresh flow's (and
    the standard normal's) to within 0.9 nats of the oracle."""
    g = torch.Generator().manual_seed(0)
    train, test = TOYS["8gaussians"](5000, generator=g), TOYS["8gaussians"](5000, generator=g)
    torch.manual_seed(0)
    flow = gaussianization(2, num_transforms=8, num_components=32)
    with torch.no_grad():
        fresh = -flow.log_prob(test).mean().item()
        standard_normal = -torch.distributions.Normal(0.0, 1.0).log_prob(test).sum(-1).mean()
        initialize_gaussianization(flow, train, rotation_init=rotation_init)
        after = -flow.log_prob(test).mean().item()
    oracle = ORACLE_NLL["8gaussians"]
    assert fresh - oracle > 1.0 and standard_normal - oracle > 3.0
    assert after - oracle < 0.9, after - oracle


def test_layerwise_init_sees_the_data_pushed_through_the_layers_above():
    g = torch.Generator().manual_seed(0)
    data = TOYS["moons"](3000, generator=g)
    torch.manual_seed(0)
    flow = gaussianization(2, num_transforms=3, num_components=16, data=data)
    x = data
    with torch.no_grad():
        for layer in reversed(flow.transforms):
            if isinstance(layer, MarginalGaussianization):
                reference = MarginalGaussianization(2, num_components=16)
                reference.initialize(x)
                assert torch.allclose(layer.loc, reference.loc)
                assert torch.allclose(layer.raw_scale, reference.raw_scale)
            x = layer.inverse_and_log_det(x)[0]


def test_initialised_flow_round_trips_and_its_state_dict_restores_it():
    data = TOYS["8gaussians"](2000, generator=torch.Generator().manual_seed(0)).double()
    torch.manual_seed(0)
    flow = gaussianization(2, num_transforms=3, num_components=16).double()
    initialize_gaussianization(flow, data, rotation_init="pca", bandwidth="spacing")
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob((500,))
        assert torch.allclose(flow.log_prob(x), log_q, atol=1e-9)
        torch.manual_seed(1)
        other = gaussianization(2, num_transforms=3, num_components=16).double()
        other.load_state_dict(flow.state_dict())
        assert torch.equal(other.log_prob(data), flow.log_prob(data))


def test_conditional_flow_uses_its_context():
    torch.manual_seed(0)
    flow = gaussianization(2, num_transforms=2, num_components=4, context_dim=3, hidden_dims=(8,))
    g = torch.Generator().manual_seed(0)
    data, context = torch.randn(200, 2, generator=g), torch.randn(200, 3, generator=g)
    initialize_gaussianization(flow, data, context)
    # zero context networks at initialisation: the context does not matter yet ...
    assert torch.allclose(flow.log_prob(data, context), flow.log_prob(data, 0 * context))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    # ... after training steps (here: a perturbation) it does
    assert not torch.allclose(flow.log_prob(data, context), flow.log_prob(data, 0 * context))
    samples = flow.sample((4,), context=context[:5])
    assert samples.shape == (4, 5, 2)
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(data)
