"""Image flows end to end: builders, Flow with (C, H, W) events, Pyro interop, fit and
dequantization on images, MintNet's solver and implicit gradients, errors."""

from __future__ import annotations

import copy
import io
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows import Flow
from pyro_flows.data import DequantizedModel, UniformDequantization
from pyro_flows.flows.image import glow, idf, mintnet, realnvp_image
from pyro_flows.infer import fit
from pyro_flows.transforms import ActNorm
from pyro_flows.transforms.image import (
    ChannelActNorm,
    ImageAffineCoupling,
    ImageSequential,
    InvertibleConv1x1,
    MintNetLayer,
    MultiScale,
    Squeeze,
    squeeze,
    unsqueeze,
)

SHAPE = (1, 8, 8)


def perturbed(module: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def builders():
    return {
        "glow": lambda: glow(SHAPE, num_transforms=2, hidden_channels=8),
        "realnvp_image": lambda: realnvp_image(SHAPE, num_transforms=1, hidden_channels=8),
        "mintnet": lambda: mintnet(SHAPE, num_transforms=2, hidden_per_channel=2, tol=1e-10),
    }


@pytest.fixture(params=sorted(builders()))
def flow(request) -> Flow:
    torch.manual_seed(0)
    f = builders()[request.param]().double()
    f.eval()
    return perturbed(f)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(2, 4, 6)
    s = squeeze(x)
    assert s.shape == (8, 2, 3)
    # channel 4c + 2i + j at (h, w) holds x[c, 2h + i, 2w + j]
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(s[4 * c + 2 * i + j], x[c, i::2, j::2])
    assert torch.equal(unsqueeze(s), x)


def test_builders_give_image_flows(flow):
    assert flow.event_shape == SHAPE and flow.input_dim == 64
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    assert flow.log_prob(x).shape == (5,)
    samples = flow.sample((3, 2))
    assert samples.shape == (3, 2, *SHAPE)
    # samples scored by the inverse pass agree with the one-pass log density
    x, log_q = flow.rsample_and_log_prob((4,))
    assert torch.allclose(flow.log_prob(x), log_q, atol=1e-6)


def test_flow_density_is_change_of_variables(flow):
    """log q(x) = log N(f^{-1}(x)) + log|det J_{f^{-1}}(x)|, the determinant by autograd."""
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    (t,) = list(flow.transforms)[-1:]
    for n in range(2):

        def inverse(v):
            z = v.reshape(1, *SHAPE)
            for layer in reversed(flow.transforms):
                z = layer.inverse_and_log_det(z)[0]
            return z.reshape(-1)

        jac = torch.autograd.functional.jacobian(inverse, x[n].reshape(-1))
        z = inverse(x[n].reshape(-1))
        expected = (
            -0.5 * z.square().sum() - 32 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        )
        assert torch.allclose(flow.log_prob(x[n]), expected, atol=1e-7)


def test_pyro_distribution_and_sample_site(flow):
    d = flow()
    assert d.event_shape == SHAPE and d.batch_shape == ()
    x = d.rsample((3,)) if flow.base(None).has_rsample else d.sample((3,))
    assert x.shape == (3, *SHAPE)
    assert torch.allclose(d.log_prob(x), flow.log_prob(x), atol=1e-6)
    # inside a Pyro model: the site's log probability is the flow's
    trace = pyro.poutine.trace(lambda: pyro.sample("img", flow())).get_trace()
    trace.compute_log_prob()
    site = trace.nodes["img"]
    assert torch.allclose(site["log_prob"], flow.log_prob(site["value"]), atol=1e-6)


def test_state_dict_and_torch_save_round_trip(flow):
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    before = flow.log_prob(x)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.log_prob(x), before)
    assert torch.equal(copy.deepcopy(flow).log_prob(x), before)


def test_wrong_event_shape_is_a_clear_error(flow):
    with pytest.raises(ValueError, match=r"\(\.\.\., 1, 8, 8\).*got shape \(3, 64\)"):
        flow.log_prob(torch.zeros(3, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got shape \(3, 1, 8, 7\)"):
        flow.log_prob(torch.zeros(3, 1, 8, 7, dtype=torch.float64))


def test_flow_rejects_mixed_and_shape_changing_layers():
    with pytest.raises(ValueError, match="event shape"):
        Flow([ChannelActNorm((1, 4, 4)), ChannelActNorm((2, 4, 4))])
    with pytest.raises(ValueError, match="MultiScale"):
        Flow([Squeeze((1, 4, 4))])
    with pytest.raises(ValueError, match=r"base's event shape \(16,\), got event shapes \[\(1, 4"):
        Flow([ChannelActNorm((1, 4, 4))], base=dist.Normal(torch.zeros(16), 1.0).to_event(1))
    with pytest.raises(ValueError, match="event shape"):
        Flow([ActNorm(16), ChannelActNorm((1, 4, 4))])


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="divisible by 8"):
        glow((1, 28, 28), num_scales=3)
    with pytest.raises(ValueError, match="even height and width"):
        glow((1, 7, 7))
    with pytest.raises(TypeError, match=r"\(C, H, W\)"):
        glow(64)
    with pytest.raises(ValueError, match="3 entries"):
        realnvp_image((8, 8))
    with pytest.raises(ValueError, match="normalization"):
        realnvp_image(SHAPE, normalization="batch")
    with pytest.raises(ValueError, match="num_levels must be >= 2"):
        idf(SHAPE, num_levels=1)
    with pytest.raises(ValueError, match="channel mask needs at least 2 channels"):
        ImageAffineCoupling((1, 4, 4), mask="channel")
    with pytest.raises(ValueError, match="mask must be one of"):
        ImageAffineCoupling((2, 4, 4), mask="stripes")
    with pytest.raises(ValueError, match=r"steps must act on shape \(4, 2, 2\)"):
        MultiScale((1, 4, 4), steps=ChannelActNorm((1, 4, 4)))
    with pytest.raises(ValueError, match=r"transform 0 outputs shape \(4, 2, 2\)"):
        ImageSequential([Squeeze((1, 4, 4)), ChannelActNorm((1, 4, 4))])


def test_multiscale_scales_and_factored_channels():
    flow = glow((1, 8, 8), num_transforms=1, hidden_channels=4)
    (outer,) = flow.transforms
    assert isinstance(outer, MultiScale) and outer.keep_channels == 2
    assert outer.steps.event_shape == (4, 4, 4)
    assert outer.inner.event_shape == (2, 4, 4) and outer.inner.steps.event_shape == (8, 2, 2)
    assert outer.inner.inner.steps.event_shape == (16, 1, 1)  # 3 scales on 8x8
    assert len(glow((1, 28, 28), num_transforms=1, hidden_channels=4).transforms) == 1
    assert glow((1, 28, 28), num_transforms=1).transforms[0].inner.inner is None  # 2 scales


def test_factored_out_channels_skip_the_later_steps():
    """The channels that leave at the first scale are not touched by the inner scale."""
    torch.manual_seed(0)
    inner = perturbed(InvertibleConv1x1((2, 2, 2)), 0.5)
    t = MultiScale((1, 4, 4), steps=None, inner=inner)
    x = torch.randn(3, 1, 4, 4)
    z, log_det = t.inverse_and_log_det(x)
    sx, sz = squeeze(x), squeeze(z)
    assert torch.equal(sz[:, :2], sx[:, :2])  # factored out as they are
    assert not torch.allclose(sz[:, 2:], sx[:, 2:])
    assert torch.allclose(log_det, -4 * torch.linalg.slogdet(inner.weight)[1].expand(3))


def test_checkerboard_coupling_leaves_the_conditioning_squares_alone():
    torch.manual_seed(0)
    t = perturbed(ImageAffineCoupling((2, 4, 4), "checkerboard", 1, hidden_channels=4), 0.5)
    x = torch.randn(3, 2, 4, 4)
    y, _ = t.forward_and_log_det(x)
    m = t.mask.bool().expand(2, 4, 4)
    assert torch.equal(y[:, m], x[:, m]) and not torch.allclose(y[:, ~m], x[:, ~m])


def test_conditional_glow_depends_on_the_context():
    torch.manual_seed(0)
    flow = perturbed(glow((1, 4, 4), num_transforms=1, hidden_channels=4, context_dim=3), 0.3)
    x = torch.randn(5, 1, 4, 4)
    c1, c2 = torch.randn(5, 3), torch.randn(5, 3)
    assert not torch.allclose(flow.log_prob(x, c1), flow.log_prob(x, c2))
    assert flow.sample((2,), context=c1).shape == (2, 5, 1, 4, 4)
    assert flow.log_prob(x[0], c1).shape == (5,)  # one image broadcast over 5 contexts
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)


def test_actnorm_initialises_per_channel_over_pixels():
    t = ChannelActNorm((3, 4, 4))
    data = torch.tensor([1.0, -2.0, 5.0])[:, None, None] + torch.tensor([0.5, 2.0, 3.0])[
        :, None, None
    ] * torch.randn(256, 3, 4, 4)
    z, log_det = t.inverse_and_log_det(data)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    assert torch.allclose(log_det, -16 * torch.log(data.std((0, 2, 3), unbiased=False)).sum(),
                          atol=1e-4)
    t2 = ChannelActNorm((3, 4, 4))
    t2.load_state_dict(t.state_dict())
    assert bool(t2.initialized)
    assert torch.equal(t2.inverse_and_log_det(data)[0], z)


def test_mintnet_inverse_meets_its_tolerance_and_reports_iterations():
    torch.manual_seed(0)
    t = perturbed(MintNetLayer((2, 4, 4), hidden_per_channel=4, tol=1e-6), 0.3).double()
    x = 3 * torch.randn(8, 2, 4, 4, dtype=torch.float64)
    y, _ = t.forward_and_log_det(x)
    residual = t.inverse_and_log_det(y)[0] - x
    assert bool((residual.abs() <= 1e-6 * (1 + x.abs())).all())
    assert 0 < t.iterations < t.max_iter
    t.tol = 1e-12
    y_tight, _ = t.forward_and_log_det(x)
    assert (t.inverse_and_log_det(y_tight)[0] - x).abs().max() < 1e-10
    assert (y_tight - y).abs().max() > 0  # the tolerance matters


def test_mintnet_implicit_gradients_match_finite_differences():
    torch.manual_seed(1)
    t = perturbed(MintNetLayer((1, 2, 2), hidden_per_channel=2, tol=1e-13), 0.3).double()
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: t.forward_and_log_det(v)[0], (x,))
    assert torch.autograd.gradcheck(lambda v: t.forward_and_log_det(v)[1], (x,))
    # parameter gradient of a loss through the solve, against a central difference
    w = t.raw_scale
    loss = lambda: t.forward_and_log_det(x.detach())[0].square().sum()  # noqa: E731
    (grad,) = torch.autograd.grad(loss(), w)
    eps = 1e-6
    with torch.no_grad():
        w[0] += eps
        up = loss()
        w[0] -= 2 * eps
        down = loss()
        w[0] += eps
    assert torch.allclose(grad[0], (up - down) / (2 * eps), rtol=1e-5)


def test_mintnet_log_abs_det_jacobian_never_solves():
    torch.manual_seed(0)
    t = perturbed(MintNetLayer((1, 4, 4), hidden_per_channel=2), 0.3)
    y = torch.randn(4, 1, 4, 4)
    x = t.inv(y)
    t.iterations = -1
    ld = t.log_abs_det_jacobian(x, y)
    assert t.iterations == -1  # no fixed-point solve ran
    assert torch.allclose(ld, -t.inverse_and_log_det(y)[1])


def test_fit_trains_an_image_flow_on_images():
    torch.manual_seed(0)
    # pixels share a common factor: far from the independent fit an ActNorm starts at
    data = 2.0 * torch.randn(256, 1, 1, 1) + 0.3 * torch.randn(256, 1, 4, 4) + 1.0
    flow = glow((1, 4, 4), num_transforms=2, hidden_channels=8)
    before = -flow.log_prob(data).mean().item()
    history = fit(flow, data, epochs=15, batch_size=64, lr=3e-3, progress=False)
    assert history.epochs >= 5 and history.best_val_nll < before - 5.0
    with pytest.raises(ValueError, match=r"shape \(rows, 1, 4, 4\).*got shape \(256, 16\)"):
        fit(flow, data.reshape(256, 16), epochs=1, progress=False)


def test_dequantized_image_model_accepts_images_and_rows():
    torch.manual_seed(0)
    model = DequantizedModel(glow((1, 4, 4), num_transforms=1, hidden_channels=4),
                             UniformDequantization(17, 16))
    assert model.event_shape == (1, 4, 4)
    x = torch.randint(0, 17, (6, 1, 4, 4)).float()
    torch.manual_seed(1)
    lp_images = model.log_prob(x)
    torch.manual_seed(1)
    lp_rows = model.log_prob(x.reshape(6, 16))
    assert lp_images.shape == (6,) and torch.equal(lp_images, lp_rows)
    samples = model.sample((3,))
    assert samples.shape == (3, 1, 4, 4) and bool((samples == samples.round()).all())
    history = fit(model, x.repeat(20, 1, 1, 1), epochs=2, batch_size=32, progress=False)
    assert history.epochs == 2
