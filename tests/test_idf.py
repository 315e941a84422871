"""Integer discrete flows: lossless integer round trips on every test image, an exact
probability mass, integer samples, and the discretised logistic base."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyro_flows.data import load_digits_dataset, load_mnist5k
from pyro_flows.distributions import DiscretizedLogistic, DiscretizedLogisticBase
from pyro_flows.flows.image import idf
from pyro_flows.infer import fit
from pyro_flows.transforms.image import IntegerAdditiveCoupling, round_ste


def scrambled(flow, scale: float, seed: int = 0):
    """Large random conditioner weights: translations of many levels, so nothing is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "conditioner" in name:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return flow


def encode(flow, x):
    z = x
    for t in reversed(flow.transforms):
        z = t.inverse_and_log_det(z)[0]
    return z


def decode(flow, z):
    for t in flow.transforms:
        z = t.forward_and_log_det(z)[0]
    return z


@pytest.mark.parametrize(
    "loader, levels, scale",
    [
        (load_digits_dataset, 17, 0.5),
        pytest.param(load_mnist5k, 256, 0.05, marks=pytest.mark.slow),  # 500 images of 28x28
    ],
    ids=["digits", "mnist5k"],
)
def test_every_test_image_round_trips_exactly(loader, levels, scale):
    data = loader(flatten=False)
    torch.manual_seed(0)
    flow = scrambled(
        idf(data.shape, num_transforms=3, hidden_channels=16, num_levels=levels), scale
    )
    x = data.test
    with torch.no_grad():
        z = encode(flow, x)
        back = decode(flow, z)
    assert torch.equal(z, torch.round(z))  # integers to integers
    assert (z - x).abs().max() >= 5  # the code is not the image itself
    assert torch.equal(back, x)  # lossless, bit for bit, on all test images
    assert z.abs().max() < 2**24  # within float32's exact integers (else OverflowError)
    lp = flow.log_prob(x)
    assert lp.shape == (x.shape[0],) and bool(torch.isfinite(lp).all()) and bool((lp < 0).all())


def test_log_prob_is_a_probability_mass():
    """Summed over a box holding (nearly) all the mass, exp(log_prob) is 1: a mass function on
    Z^D, with no Jacobian term."""
    torch.manual_seed(0)
    flow = idf((1, 2, 2), num_transforms=2, hidden_channels=4, num_levels=2)  # 1 scale, 4 dims
    flow.eval()  # no data-dependent initialisation of the base from the grid
    with torch.no_grad():
        for t in flow.transforms[0].steps.layers:
            if isinstance(t, IntegerAdditiveCoupling):
                t.conditioner.last.bias.copy_(torch.tensor([2.4, -1.6]))
        flow.base.raw_scale.fill_(math.log(math.expm1(0.4)))
    grid = torch.arange(-9.0, 11.0)
    points = torch.tensor(list(itertools.product(grid.tolist(), repeat=4))).reshape(-1, 1, 2, 2)
    with torch.no_grad():
        mass = flow.log_prob(points).exp().sum()
        base_mass = flow.base.log_prob(encode(flow, points)).exp().sum()
    assert abs(float(mass) - 1.0) < 1e-4
    assert torch.isclose(mass, base_mass)  # the bijection only permutes the integer points
    with pytest.raises(ValueError, match="integer-valued"):
        flow.log_prob(points[:3] + 0.5)


def test_samples_are_integers_and_rsample_is_refused():
    torch.manual_seed(0)
    flow = scrambled(idf((1, 4, 4), num_transforms=2, hidden_channels=8, num_levels=17), 0.3)
    x = flow.sample((50,))
    assert x.shape == (50, 1, 4, 4) and torch.equal(x, torch.round(x))
    assert bool(torch.isfinite(flow.log_prob(x)).all())
    with pytest.raises(NotImplementedError, match="flow.sample"):
        flow.rsample((2,))


def test_training_lowers_the_code_length_on_digits():
    torch.manual_seed(0)
    data = load_digits_dataset(flatten=False)
    flow = idf(data.shape, num_transforms=2, hidden_channels=16, num_levels=17)
    flow.log_prob(data.train[:1000])  # initialises the base on the training images
    flow.eval()
    start = -flow.log_prob(data.val[:100]).mean().item()  # the fitted base, identity couplings
    history = fit(flow, data.train[:1000], validation=data.val[:100], epochs=4, batch_size=50,
                  lr=3e-3, progress=False)
    bits = history.best_val_nll / (64 * math.log(2))
    assert history.best_val_nll < start - 2.0  # the couplings learned dependencies
    assert bits < math.log2(17)  # beats storing every pixel uniformly (4.09 bits)
    x = data.test[:50]
    assert torch.equal(decode(flow, encode(flow, x)), x)  # still lossless after training


def test_leaving_the_exact_integer_range_is_an_error():
    t = IntegerAdditiveCoupling((2, 1, 1), hidden_channels=2)
    with torch.no_grad():
        t.conditioner.last.bias.fill_(2.0**24)
    with pytest.raises(OverflowError, match="lossless"):
        t.forward_and_log_det(torch.zeros(1, 2, 1, 1))
    y, _ = t.double().forward_and_log_det(torch.zeros(1, 2, 1, 1, dtype=torch.float64))
    assert y[0, 1, 0, 0] == 2.0**24  # fine in float64


def test_straight_through_rounding_passes_gradients():
    torch.manual_seed(0)
    t = IntegerAdditiveCoupling((2, 2, 2), hidden_channels=4, output_scale=3.0)
    for p in t.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randint(0, 9, (4, 2, 2, 2)).float().requires_grad_()
    y, log_det = t.forward_and_log_det(x)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters())
    assert torch.equal(log_det, torch.zeros(4))
    v = torch.tensor([-1.5, -0.4, 0.6, 2.5], requires_grad=True)
    r = round_ste(v)
    assert torch.equal(r, torch.round(v.detach()))
    (r * torch.arange(4.0)).sum().backward()
    assert torch.equal(v.grad, torch.arange(4.0))


def test_discretized_logistic_mass_sampling_and_stability():
    loc = torch.tensor([0.3, -4.0, 100.0])
    scale = torch.tensor([2.0, 0.05, 30.0])
    d = DiscretizedLogistic(loc, scale)
    grid = torch.arange(-600.0, 601.0)[:, None]
    assert torch.allclose(d.log_prob(grid.expand(-1, 3)).exp().sum(0), torch.ones(3), atol=1e-6)
    # tiny scale: (almost) all mass on the nearest integer; far tails finite
    assert d.log_prob(torch.tensor([0.0, -4.0, 100.0]))[1].exp() > 0.999
    far = d.log_prob(torch.tensor([1e4, 1e4, -1e4]))
    assert bool(torch.isfinite(far).all()) and bool((far < -50).all())
    torch.manual_seed(0)
    s = d.sample((20000,))
    assert torch.equal(s, s.round())
    counts = torch.stack([(s[:, 0] == k).float().mean() for k in range(-3, 4)])
    expected = d.log_prob(torch.arange(-3.0, 4.0)[:, None].expand(-1, 3))[:, 0].exp()
    assert torch.allclose(counts, expected, atol=0.01)
    with pytest.raises(ValueError, match="integer-valued"):
        d.log_prob(torch.tensor([0.5, 0.0, 0.0]))


def test_discretized_logistic_base_initialises_from_data():
    base = DiscretizedLogisticBase((1, 2, 2), loc=8.0, scale=2.0)
    z = torch.cat([torch.zeros(50, 1, 2, 2), 10 * torch.ones(50, 1, 2, 2)])
    base.log_prob(z)  # training mode: data-dependent initialisation
    assert bool(base.initialized)
    assert torch.allclose(base.loc, torch.full((1, 2, 2), 5.0))
    assert torch.allclose(base.scale, torch.full((1, 2, 2), 5.0 * math.sqrt(3) / math.pi))
    fresh = DiscretizedLogisticBase((1, 2, 2)).eval()
    fresh.log_prob(z)
    assert not bool(fresh.initialized)
    with pytest.raises(ValueError, match="scale must be"):
        DiscretizedLogisticBase((4,), scale=0.0)


def _moments_by_wide_sum(loc: float, scale: float) -> tuple[float, float]:
    """Reference moments: a float64 sum of k P(k) over round(loc) +- (60 scale + 40) bins."""
    centre, width = round(loc), int(60 * scale) + 40
    z = torch.arange(centre - width, centre + width + 1, dtype=torch.float64)
    p = DiscretizedLogistic(torch.tensor(loc).double(), torch.tensor(scale).double())
    p = p.log_prob(z[:, None])[:, 0].exp()
    mean = float((p * z).sum())
    return mean, float((p * (z - mean).square()).sum())


def test_discretized_logistic_moments_hand_cases():
    """Small scales put the mass on one or two integers: not loc and pi^2 s^2/3 + 1/12."""
    d = DiscretizedLogistic(torch.tensor([0.3, 0.5, -1.7]), torch.tensor([0.01, 1e-3, 1e-4]))
    assert torch.allclose(d.mean, torch.tensor([0.0, 0.5, -2.0]), atol=1e-8)
    assert torch.allclose(d.variance, torch.tensor([0.0, 0.25, 0.0]), atol=1e-8)
    assert 1e-9 < float(d.mean[0]) < 3e-9  # P(z = 1) = 1 - sigmoid(20) ~ 2.06e-9
    wide = DiscretizedLogistic(torch.tensor(0.3), torch.tensor(50.0))  # Sheppard holds here
    assert math.isclose(float(wide.mean), 0.3, rel_tol=1e-6)
    assert math.isclose(float(wide.variance), math.pi**2 * 2500 / 3 + 1 / 12, rel_tol=1e-6)


def test_discretized_logistic_moments_match_bin_sums_across_scales():
    locs = [0.3, 0.5, -2.7, 1000.25, 7.0]
    scales = [1e-3, 0.05, 0.3, 0.49, 0.5, 0.51, 0.8, 1.0, 3.0, 10.0]  # both sides of the switch
    loc = torch.tensor(locs)[:, None]
    scale = torch.tensor(scales)
    d = DiscretizedLogistic(loc, scale)  # float32, batch shape (5, 10)
    mean, variance = d.mean, d.variance
    assert mean.shape == variance.shape == (5, 10) and mean.dtype == torch.float32
    for i, j in itertools.product(range(len(locs)), range(len(scales))):
        ref_mean, ref_var = _moments_by_wide_sum(float(loc[i, 0]), float(scale[j]))
        assert math.isclose(float(mean[i, j]), ref_mean, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(float(variance[i, j]), ref_var, rel_tol=1e-5, abs_tol=1e-6)
    base = DiscretizedLogisticBase((2, 3), loc=4.5, scale=0.2)
    assert base().mean.shape == base().variance.shape == (2, 3)


def test_discretized_logistic_moments_match_samples():
    loc = torch.tensor([0.3, 0.5, -2.2, 10.0], dtype=torch.float64)
    scale = torch.tensor([0.01, 0.2, 0.7, 3.0], dtype=torch.float64)
    d = DiscretizedLogistic(loc, scale)
    torch.manual_seed(0)
    s = d.sample((200_000,))
    sd_of_mean = (d.variance / s.shape[0]).sqrt()
    assert bool(((s.mean(0) - d.mean).abs() <= 5 * sd_of_mean + 1e-9).all())
    assert torch.allclose(s.var(0), d.variance, rtol=0.03, atol=1e-6)
    loc.requires_grad_(True)
    DiscretizedLogistic(loc, scale).variance.sum().backward()
    assert bool(loc.grad.isfinite().all())


def test_discretized_logistic_base_takes_any_scale():
    """softplus^{-1}(scale - 1e-3) used to overflow math.expm1 above a scale of ~710."""
    for scale in (1000.0, 1e6, 1.001e-3):
        base = DiscretizedLogisticBase((2,), scale=scale)
        assert torch.allclose(base.scale, torch.full((2,), scale), rtol=1e-4)
    flow = idf((1, 4, 4), num_transforms=1, hidden_channels=4, num_levels=65536)
    assert torch.allclose(flow.base.scale, torch.full((1, 4, 4), 65536 / 8))
