"""ModelTarget: Pyro models as targets on their unconstrained space. Checked against exact
conjugate posteriors, against Pyro's own HMC potential, and batched against a per-point loop."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.mcmc.util import initialize_model

from pyro_flows.targets.eight_schools import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from pyro_flows.targets.eight_schools import eight_schools_noncentered as eight_schools
from pyro_flows.targets.model import ModelTarget, model_target

F64 = torch.float64


def normal_mean(y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def gamma_precision(y):
    tau = pyro.sample("tau", dist.Gamma(torch.tensor(2.0, dtype=F64), 3.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(0.0, tau.rsqrt()), obs=y)


def nested(y):
    """Two plates, an event-shaped site inside a plate, a simplex and a factor."""
    p = pyro.sample("p", dist.Dirichlet(torch.ones(3, dtype=F64)))
    with pyro.plate("groups", 2, dim=-2):
        s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("items", 4, dim=-1):
            loc = pyro.sample("loc", dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1))
            mean = (loc * p).sum(-1)
            pyro.sample("y", dist.Normal(mean, s), obs=y)
    pyro.factor("penalty", -0.5 * (p[..., 0] - 0.3) ** 2)


Y = torch.tensor([0.3, -1.2, 2.0, 0.8, 1.5], dtype=F64)
SCHOOLS_Y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=F64)
SCHOOLS_SIGMA = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=F64)


def assert_constant_difference(a: torch.Tensor, b: torch.Tensor) -> None:
    diff = a - b
    assert (diff - diff.mean()).abs().max() < 1e-10, diff


# -- exact posteriors ---------------------------------------------------------------------------
def test_conjugate_normal_mean_is_the_posterior_up_to_a_constant():
    target = model_target(normal_mean, Y)
    prec = 1 / 2.0**2 + len(Y)
    post = torch.distributions.Normal(Y.sum() / prec, prec**-0.5)
    z = torch.linspace(-2, 3, 41, dtype=F64)[:, None]
    assert target.dim == 1 and target.site_names == ("mu",)
    assert_constant_difference(target.log_prob(z), post.log_prob(z[:, 0]))


def test_conjugate_gamma_precision_includes_the_log_jacobian():
    """u = log tau: log p(u | y) = log Gamma(e^u; a + n/2, b + sum y^2 / 2) + u."""
    target = model_target(gamma_precision, Y)
    post = torch.distributions.Gamma(2.0 + len(Y) / 2, 3.0 + (Y**2).sum() / 2)
    u = torch.linspace(-3, 2, 41, dtype=F64)[:, None]
    assert_constant_difference(target.log_prob(u), post.log_prob(u[:, 0].exp()) + u[:, 0])
    torch.testing.assert_close(target.unpack(u)["tau"], u[:, 0].exp())


def test_dependent_support_is_transformed_per_point():
    """b ~ Uniform(0, a) with a latent: b = a * sigmoid(u_b), built from a at run time."""

    def model():
        a = pyro.sample("a", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        pyro.sample("b", dist.Uniform(torch.tensor(0.0, dtype=F64), a))

    target = ModelTarget(model)
    torch.manual_seed(0)
    z = torch.randn(10, 2, dtype=F64)
    a = z[:, 0].exp()
    sig = torch.sigmoid(z[:, 1])
    expected = (
        dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0).log_prob(a)
        - torch.log(a)  # Uniform(0, a) density
        + z[:, 0]  # d a / d u_a
        + torch.log(a * sig * (1 - sig))  # d b / d u_b
    )
    torch.testing.assert_close(target.log_prob(z), expected)
    torch.testing.assert_close(target.unpack(z)["b"], a * sig)
    # it integrates to 1 (a prior-only model): quadrature over the unconstrained plane
    g = torch.linspace(-20, 20, 801, dtype=F64)  # logistic tails: e^-20 beyond
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    mass = torch.trapezoid(torch.trapezoid(target.log_prob(grid).exp(), g, dim=-1), g)
    assert mass.item() == pytest.approx(1.0, abs=1e-7)


# -- against Pyro's HMC potential -------------------------------------------------------------
@pytest.mark.parametrize(
    "model,args",
    [(eight_schools, (SCHOOLS_Y, SCHOOLS_SIGMA)), (nested, (torch.randn(2, 4, dtype=F64),))],
    ids=["eight_schools", "nested"],
)
def test_log_prob_is_minus_pyros_potential(model, args):
    target = ModelTarget(model, args)
    assert target.vectorized
    _, potential, _, _ = initialize_model(model, args)
    torch.manual_seed(1)
    z = torch.randn(6, target.dim, dtype=F64)
    for point in z:
        u, offset = {}, 0
        for name in target.site_names:
            shape = target.unconstrained_shapes[name]
            size = math.prod(shape)
            u[name] = point[offset : offset + size].reshape(shape)
            offset += size
        torch.testing.assert_close(target.log_prob(point), -potential(u))


@pytest.mark.parametrize("batch", [(5,), (2, 3)], ids=str)
def test_batched_equals_the_loop(batch):
    y = torch.randn(2, 4, dtype=F64)
    fast = ModelTarget(nested, (y,), vectorize=True)
    slow = ModelTarget(nested, (y,), vectorize=False)
    torch.manual_seed(2)
    z = torch.randn(*batch, fast.dim, dtype=F64, requires_grad=True)
    lp = fast.log_prob(z)
    assert lp.shape == batch
    torch.testing.assert_close(lp, slow.log_prob(z))
    lp.sum().backward()
    assert torch.isfinite(z.grad).all()
    values = fast.unpack(z)
    assert values["loc"].shape == (*batch, 2, 4, 3) and values["s"].shape == (*batch, 2, 1)
    torch.testing.assert_close(values["p"].sum(-1), torch.ones(batch, dtype=F64))
    torch.testing.assert_close(fast.pack(values), z.detach())
    for name, value in slow.unpack(z).items():
        torch.testing.assert_close(value, values[name])


def test_shapes_of_sites():
    target = ModelTarget(nested, (torch.randn(2, 4, dtype=F64),))
    assert target.site_names == ("p", "s", "loc")
    assert target.site_shapes == {"p": (3,), "s": (2, 1), "loc": (2, 4, 3)}
    assert target.unconstrained_shapes == {"p": (2,), "s": (2, 1), "loc": (2, 4, 3)}
    assert target.dim == 2 + 2 + 24 and target.max_plate_nesting == 2
    assert target.log_Z is None and not target.has_exact_samples
    assert target.log_prob(torch.zeros(0, target.dim, dtype=F64)).shape == (0,)


def test_a_model_that_does_not_broadcast_falls_back_to_the_loop():
    x = torch.randn(20, 3, dtype=F64)
    y = (torch.rand(20) < 0.5).to(F64)

    def logistic(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    with pytest.warns(UserWarning, match="does not broadcast over an outer batch plate.*vmap"):
        target = model_target(logistic, x, y)
    assert not target.vectorized and target.run_mode == "vmap"
    z = torch.randn(4, 3, dtype=F64, requires_grad=True)
    expected = torch.stack(
        [
            dist.Normal(0.0, 1.0).log_prob(w).sum() + dist.Bernoulli(logits=x @ w).log_prob(y).sum()
            for w in z
        ]
    )
    got = target.log_prob(z)
    torch.testing.assert_close(got, expected)
    # gradients flow through the vmapped runs (HMC/NUTS and fit_target need them)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), z)[0],
                               torch.autograd.grad(expected.sum(), z)[0])
    assert target.log_prob(z[0]).shape == ()  # one point: no vmap


def test_a_model_vmap_cannot_run_falls_back_to_the_loop():
    x = torch.randn(20, 3, dtype=F64)
    y = torch.randn(20, dtype=F64)

    def branching(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1))
        sd = 1.0 if float(w.sum()) < 1e9 else 2.0  # a Python number from a latent: not vmap
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(x @ w, sd), obs=y)

    with pytest.warns(UserWarning, match="once per point in a loop"):
        target = model_target(branching, x, y)
    assert target.run_mode == "loop" and not target.vectorized
    z = torch.randn(4, 3, dtype=F64)
    expected = torch.stack([dist.Normal(0.0, 1.0).log_prob(w).sum()
                            + dist.Normal(x @ w, 1.0).log_prob(y).sum() for w in z])
    torch.testing.assert_close(target.log_prob(z), expected)


def test_scale_and_mask_count_as_in_pyro():
    def model():
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        with poutine.scale(scale=3.0):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.tensor(1.0, dtype=F64))
        with poutine.mask(mask=torch.tensor(False)):
            pyro.sample("ignored", dist.Normal(mu, 1.0), obs=torch.tensor(50.0, dtype=F64))

    target = ModelTarget(model)
    z = torch.linspace(-2, 2, 5, dtype=F64)[:, None]
    n = dist.Normal(torch.tensor(0.0, dtype=F64), 1.0)
    expected = n.log_prob(z[:, 0]) + 3 * n.log_prob(1.0 - z[:, 0])
    torch.testing.assert_close(target.log_prob(z), expected)


def test_initial_params_and_potential():
    torch.manual_seed(3)
    target = model_target(eight_schools, SCHOOLS_Y, SCHOOLS_SIGMA)
    params = target.initial_params()
    assert params["z"].shape == (10,)
    assert torch.isfinite(target.potential_fn(params))
    values = target.unpack(params["z"])
    assert values["tau"] > 0 and values["eta"].shape == (8,)


# -- errors -------------------------------------------------------------------------------------
def test_discrete_latent_site_is_named():
    def model():
        k = pyro.sample("k", dist.Categorical(torch.ones(3)))
        pyro.sample("x", dist.Normal(k.to(F64), 1.0), obs=torch.tensor(0.0, dtype=F64))

    with pytest.raises(ValueError, match="latent site 'k' is discrete"):
        ModelTarget(model)


def test_model_without_latent_sites():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError, match="no latent sample sites"):
        ModelTarget(model)


def test_subsampling_plate_is_refused():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y), subsample_size=2) as idx:
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])

    with pytest.raises(ValueError, match="plate 'data' subsamples 2 of 5"):
        ModelTarget(model, (Y.float(),))


def test_argument_errors():
    with pytest.raises(TypeError, match="model must be a callable"):
        ModelTarget("model")
    with pytest.raises(TypeError, match="model_args must be a tuple"):
        ModelTarget(normal_mean, [Y])
    with pytest.raises(TypeError, match="vectorize must be None, True or False"):
        ModelTarget(normal_mean, (Y,), vectorize="yes")
    with pytest.raises(ValueError, match="max_plate_nesting=0 is smaller than the model's"):
        ModelTarget(normal_mean, (Y,), max_plate_nesting=0)
    target = ModelTarget(normal_mean, (Y,))
    with pytest.raises(ValueError, match=r"expected z of shape \(\.\.\., 1\)"):
        target.log_prob(torch.zeros(3, 2))
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        target.sample(3)
    with pytest.raises(NotImplementedError, match="no known log_Z"):
        target.normalized_log_prob(torch.zeros(1))
    with pytest.raises(ValueError, match=r"lacks the latent sites \['mu'\]"):
        target.pack({})
