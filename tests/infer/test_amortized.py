"""AmortizedFlow: exact log-densities, own-sample scoring without inverse, Pyro plates, errors."""

from __future__ import annotations

import io
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_flows import flows
from pyro_flows.infer.amortized import AmortizedFlow, AmortizedFlowDistribution
from pyro_flows.transforms import InverseAutoregressive, Planar

D, C = 3, 2
KINDS = {
    "diagonal": dict(flow="diagonal"),
    "iaf": dict(flow="iaf", num_transforms=2, hidden_dims=(16,)),
    "planar": dict(flow="planar", num_transforms=3, hidden_dims=(8,)),
    "maf": dict(flow="maf", num_transforms=2, hidden_dims=(16,)),
    "nsf": dict(flow="nsf", num_transforms=2, hidden_dims=(16,), num_bins=4),
}


def perturbed(kind: str, seed: int = 0, context_dim: int | None = C) -> AmortizedFlow:
    """A float64 posterior away from the identity initialisation."""
    torch.manual_seed(seed)
    amortized = AmortizedFlow(D, context_dim, **KINDS[kind]).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in amortized.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return amortized


def encoder_outputs(batch: tuple[int, ...] = (4,), seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    kw = dict(generator=g, dtype=torch.float64)
    loc = torch.randn(*batch, D, **kw)
    scale = torch.rand(*batch, D, **kw) + 0.5
    h = torch.randn(*batch, C, **kw)
    return loc, scale, h


def brute_force_log_prob(amortized: AmortizedFlow, loc, scale, h, eps: torch.Tensor):
    """log q(z) for z = T(loc + scale * eps) of one batch element, by autograd Jacobian + slogdet
    of the whole map eps -> z (change of variables from the standard Normal)."""

    def push(e: torch.Tensor) -> torch.Tensor:
        z = loc + scale * e
        if amortized.flow is not None:
            for t in amortized.flow.transforms:
                z = t.forward_and_log_det(z, h if t.context_dim else None)[0]
        return z

    jac = torch.autograd.functional.jacobian(push, eps)
    log_det = torch.linalg.slogdet(jac)[1]
    log_base = dist.Normal(torch.zeros_like(eps), 1.0).log_prob(eps).sum()
    return push(eps), log_base - log_det


@pytest.mark.parametrize("kind", list(KINDS))
def test_log_prob_matches_jacobian_and_inverse(kind):
    amortized = perturbed(kind)
    loc, scale, h = encoder_outputs()
    d = amortized(loc, scale, h)
    torch.manual_seed(3)
    z, log_q = d.rsample_and_log_prob()
    assert z.shape == (4, D) and log_q.shape == (4,)
    for n in range(4):
        # the sample's own eps: invert loc + scale * eps through the flow's inverse
        z0 = z[n]
        if amortized.flow is not None:
            for t in reversed(amortized.flow.transforms):
                z0 = t.inverse_and_log_det(z0, h[n] if t.context_dim else None)[0]
        eps = (z0 - loc[n]) / scale[n]
        z_bf, log_q_bf = brute_force_log_prob(amortized, loc[n], scale[n], h[n], eps.detach())
        assert torch.allclose(z_bf, z[n], atol=1e-8)
        assert torch.allclose(log_q[n], log_q_bf, atol=1e-7), (n, log_q[n], log_q_bf)
    # external points: the inverse pass agrees with the remembered forward value
    fresh = z.detach().clone()
    assert torch.allclose(d.log_prob(fresh), log_q.detach(), atol=1e-7)
    # and with a brand-new distribution object (no memory at all)
    assert torch.allclose(amortized(loc, scale, h).log_prob(fresh), log_q.detach(), atol=1e-7)


def test_external_points_brute_force_away_from_samples():
    amortized = perturbed("iaf", seed=4)
    loc, scale, h = encoder_outputs(seed=5)
    x = torch.randn(4, D, dtype=torch.float64) * 2
    log_q = amortized(loc, scale, h).log_prob(x)
    for n in range(4):
        z0 = x[n]
        for t in reversed(amortized.flow.transforms):
            z0 = t.inverse_and_log_det(z0, h[n] if t.context_dim else None)[0]
        eps = ((z0 - loc[n]) / scale[n]).detach()
        z_bf, log_q_bf = brute_force_log_prob(amortized, loc[n], scale[n], h[n], eps)
        assert torch.allclose(z_bf, x[n], atol=1e-8)
        assert torch.allclose(log_q[n], log_q_bf, atol=1e-7)


def test_diagonal_equals_a_normal():
    loc, scale, h = encoder_outputs((5, 4))
    d = AmortizedFlow(D, C, flow=None).double()(loc, scale, h)
    x = torch.randn(5, 4, D, dtype=torch.float64)
    expected = dist.Normal(loc, scale).to_event(1).log_prob(x)
    assert torch.allclose(d.log_prob(x), expected, atol=1e-12)
    z, log_q = d.rsample_and_log_prob((2,))
    assert torch.allclose(log_q, dist.Normal(loc, scale).to_event(1).log_prob(z), atol=1e-12)


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_density_integrates_to_one_in_two_dimensions(kind):
    torch.manual_seed(0)
    options = {k: v for k, v in KINDS[kind].items() if k != "flow"}
    amortized = AmortizedFlow(2, 1, flow=kind, **options).double()
    with torch.no_grad():
        for p in amortized.parameters():
            p.add_(0.3 * torch.randn_like(p))
    d = amortized(
        torch.tensor([[0.5, -0.3]], dtype=torch.float64),
        torch.tensor([[0.8, 1.2]], dtype=torch.float64),
        -torch.ones(1, 1, dtype=torch.float64),
    )
    z = d.sample((4000,))
    z = z.reshape(-1, 2)
    lo, hi = z.min(0).values - 3, z.max(0).values + 3
    n = 501
    g0 = torch.linspace(float(lo[0]), float(hi[0]), n, dtype=torch.float64)
    g1 = torch.linspace(float(lo[1]), float(hi[1]), n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 1, 2)
    with torch.no_grad():
        density = d.log_prob(grid).exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(density, g1, dim=1), g0)
    assert abs(float(mass) - 1.0) < 2e-3


def test_samples_have_the_right_moments_for_the_diagonal():
    torch.manual_seed(0)
    d = AmortizedFlow(2, None, flow="diagonal")(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
    z = d.sample((20000,))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), rtol=0.03)


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_sample_equals_rsample_for_the_same_seed(kind):
    amortized = perturbed(kind)
    loc, scale, h = encoder_outputs()
    d = amortized(loc, scale, h)
    torch.manual_seed(7)
    a = d.sample((3,))
    torch.manual_seed(7)
    b = d.rsample((3,))
    assert a.shape == (3, 4, D) and not a.requires_grad
    assert torch.allclose(a, b.detach(), atol=1e-12)


def test_context_changes_the_distribution():
    amortized = perturbed("iaf")
    loc, scale, h = encoder_outputs()
    torch.manual_seed(0)
    z1 = amortized(loc, scale, h).rsample()
    torch.manual_seed(0)
    z2 = amortized(loc, scale, h + 1.0).rsample()
    assert not torch.allclose(z1, z2)


def test_own_sample_memory_is_keyed_on_identity_version_and_parameters():
    amortized = perturbed("iaf")
    loc, scale, h = encoder_outputs()
    d = amortized(loc, scale, h)
    z, log_q = d.rsample_and_log_prob()
    assert d.log_prob(z) is log_q
    assert d.log_prob(z.clone()) is not log_q
    with torch.no_grad():  # an optimiser-like in-place parameter update
        next(amortized.parameters()).add_(0.1)
    fresh = d.log_prob(z)
    assert fresh is not log_q and not torch.allclose(fresh, log_q)
    assert torch.allclose(fresh, amortized(loc, scale, h).log_prob(z.detach().clone()))
    z, log_q = d.rsample_and_log_prob()
    with torch.no_grad():
        scale.mul_(1.1)  # the encoder output changed in place
    assert d.log_prob(z) is not log_q


def test_sample_drawn_without_grad_is_rescored_with_grad():
    amortized = perturbed("iaf")
    loc, scale, h = encoder_outputs()
    d = amortized(loc, scale, h)
    with torch.no_grad():
        z, log_q = d.rsample_and_log_prob()
    assert d.log_prob(z).requires_grad
    with torch.no_grad():
        assert d.log_prob(z) is log_q


def no_inverse(monkeypatch):
    def boom(self, *args, **kwargs):
        raise AssertionError("inverse pass called")

    monkeypatch.setattr(InverseAutoregressive, "inverse_and_log_det", boom)
    monkeypatch.setattr(Planar, "inverse_and_log_det", boom)


class TinyVAE(torch.nn.Module):
    def __init__(self, kind: str, x_dim: int = 5) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(x_dim, 2 * D + C)
        self.decoder = torch.nn.Linear(D, x_dim)
        self.posterior = AmortizedFlow(D, C, **KINDS[kind])

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        pyro.module("posterior", self.posterior)
        out = self.encoder(x)
        loc, scale = out[..., :D], torch.nn.functional.softplus(out[..., D : 2 * D]) + 1e-3
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(loc, scale, out[..., 2 * D :]))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
@pytest.mark.parametrize("vectorize", [False, True])
def test_svi_step_scores_own_samples_without_inverse(kind, vectorize, monkeypatch):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = TinyVAE(kind)
    x = torch.randn(7, 5)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    no_inverse(monkeypatch)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=vectorize, max_plate_nesting=1)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), elbo)
    for _ in range(2):
        assert math.isfinite(svi.step(x))
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("posterior.flow") for k in changed)
    assert any(k.startswith("encoder") for k in changed)


def test_plate_and_vectorized_particles_shapes():
    vae = TinyVAE("iaf")
    x = torch.randn(7, 5)
    with pyro.plate("particles", 4, dim=-2):
        trace = pyro.poutine.trace(vae.guide).get_trace(x)
    site = trace.nodes["z"]
    assert site["value"].shape == (4, 7, D)
    assert site["fn"].batch_shape == (4, 7) and site["fn"].event_shape == (D,)
    trace.compute_log_prob()
    assert site["log_prob"].shape == (4, 7)
    # each particle is a separate draw, and expand keeps the parameters' gradients
    assert not torch.allclose(site["value"][0], site["value"][1])
    site["log_prob"].sum().backward()
    assert vae.encoder.weight.grad is not None


def test_expand_and_broadcast_batch_shapes():
    amortized = AmortizedFlow(D, C, flow="iaf", num_transforms=1, hidden_dims=(8,))
    loc, scale, h = torch.zeros(4, D), torch.ones(D), torch.randn(3, 1, C)
    d = amortized(loc, scale, h)
    assert d.batch_shape == (3, 4)
    assert d.rsample((2,)).shape == (2, 3, 4, D)
    e = d.expand((5, 3, 4))
    assert isinstance(e, AmortizedFlowDistribution) and e.batch_shape == (5, 3, 4)
    z = e.rsample()
    assert e.log_prob(z).shape == (5, 3, 4)
    assert d.log_prob(torch.zeros(D)).shape == (3, 4)
    with pytest.raises(ValueError, match="cannot expand"):
        d.expand((2, 4))


def test_state_dict_round_trip_and_to():
    torch.manual_seed(0)
    a = AmortizedFlow(D, C, flow="iaf", num_transforms=2, hidden_dims=(8,))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    b = AmortizedFlow(D, C, flow="iaf", num_transforms=2, hidden_dims=(8,))
    b.load_state_dict(torch.load(buffer))
    loc, scale, h = (t.float() for t in encoder_outputs())
    x = torch.randn(4, D)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # the same computation on another instance: equal up to rounding
    torch.testing.assert_close(
        a(loc, scale, h).log_prob(x), b(loc, scale, h).log_prob(x), rtol=1e-6, atol=1e-6
    )
    c = b.double()
    assert c(loc.double(), scale.double(), h.double()).log_prob(x.double()).dtype == torch.float64


def test_flow_specs():
    torch.manual_seed(0)
    by_builder = AmortizedFlow(D, C, flow=flows.planar, num_transforms=3, hidden_dims=(8,))
    assert len(by_builder.flow.transforms) == 3
    ready = flows.iaf(D, num_transforms=2, hidden_dims=(8,), context_dim=C)
    assert AmortizedFlow(D, C, flow=ready).flow is ready
    custom = AmortizedFlow(D, C, flow=lambda d, c: flows.radial(d, 2, (8,), context_dim=c))
    assert len(custom.flow.transforms) == 2
    unconditional = AmortizedFlow(D, None, flow="iaf", hidden_dims=(8,))
    z = unconditional(torch.zeros(2, D), torch.ones(2, D)).rsample()
    assert z.shape == (2, D)
    assert AmortizedFlow(D, C, flow=None).flow is None
    assert sum(p.numel() for p in AmortizedFlow(D, C, flow="diagonal").parameters()) == 0


def test_bad_input_raises_clear_errors():
    a = AmortizedFlow(D, C, flow="iaf", num_transforms=1, hidden_dims=(8,))
    loc, scale, h = torch.zeros(4, D), torch.ones(4, D), torch.zeros(4, C)
    with pytest.raises(ValueError, match=r"loc of shape \(\.\.\., 3\).*\(4, 2\)"):
        a(torch.zeros(4, 2), scale, h)
    with pytest.raises(ValueError, match=r"scale of shape"):
        a(loc, torch.ones(4, 5), h)
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 2\).*\(4, 3\)"):
        a(loc, scale, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="needs a context"):
        a(loc, scale)
    with pytest.raises(ValueError, match="do not broadcast"):
        a(loc, scale, torch.zeros(3, C))
    with pytest.raises(ValueError, match="positive, finite scale"):
        a(loc, torch.zeros(4, D), h)
    with pytest.raises(ValueError, match="finite loc"):
        a(torch.full((4, D), math.nan), scale, h)
    with pytest.raises(TypeError, match="dtype"):
        a(loc.double(), scale.double(), h.double())
    with pytest.raises(TypeError, match="torch.Tensor"):
        a([0.0, 0.0, 0.0], scale, h)
    with pytest.raises(ValueError, match=r"value of shape \(\.\.\., 3\)"):
        a(loc, scale, h).log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="context_dim=None but a context"):
        AmortizedFlow(D, None, flow="diagonal")(loc, scale, h)
    with pytest.raises(ValueError, match="flow must be 'diagonal'"):
        AmortizedFlow(D, C, flow="iaff")
    with pytest.raises(ValueError, match="context_dim=None, expected context_dim=2"):
        AmortizedFlow(D, C, flow=flows.iaf(D, 1, (8,)))
    with pytest.raises(ValueError, match="input_dim=4, expected latent_dim=3"):
        AmortizedFlow(D, C, flow=flows.iaf(4, 1, (8,), context_dim=C))
    with pytest.raises(ValueError, match="standard Normal base"):
        AmortizedFlow(
            D, None, flow=flows.iaf(D, 1, (8,), base=dist.Normal(torch.zeros(D), 2.0).to_event(1))
        )
    with pytest.raises(TypeError, match="must return a pyro_flows.Flow"):
        AmortizedFlow(D, C, flow=lambda d, c: torch.nn.Linear(d, d))
    with pytest.raises(TypeError, match="no hidden_dims"):
        AmortizedFlow(D, C, flow="diagonal", hidden_dims=(8,))
    with pytest.raises(TypeError, match="latent_dim must be an int"):
        AmortizedFlow(2.5, C)


def test_log_prob_of_another_dtype_is_a_clear_type_error():
    """An external point of another dtype than loc (the flow's) is refused by name, not by a
    matrix product deep in the inverse pass; the same point cast is scored."""
    torch.manual_seed(0)
    posterior = AmortizedFlow(2, context_dim=3, flow="iaf", num_transforms=2, hidden_dims=(16,))
    d = posterior(torch.zeros(5, 2), torch.ones(5, 2), torch.randn(5, 3))
    value = torch.zeros(5, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"expected a value on cpu with dtype torch.float32 .*"
                                        r"got cpu with dtype torch.float64"):
        d.log_prob(value)
    with pytest.raises(TypeError, match="floating-point value"):
        d.log_prob(torch.zeros(5, 2, dtype=torch.long))
    assert d.log_prob(value.to(d.loc)).shape == (5,)
