"""Family checks for invertible residual layers (i-ResNet, Residual Flows) beyond the harness:
the Lipschitz guarantee, the fixed-point tolerance, the log-det estimators against the exact
log-det, the Neumann-series gradient, power-iteration spectral norms, and the builders.

Every random draw is seeded; statistical checks use at least 10^5 probes and a 6-standard-error
tolerance, the standard error itself estimated from the draws.
"""

from __future__ import annotations

import pytest
import torch

from pyro_flows.flows.residual import iresnet, residual_flow
from pyro_flows.transforms import _residual as R
from pyro_flows.transforms.residual import EXACT_MAX_DIM, InvertibleResidual

F64 = torch.float64


def perturbed(layer: InvertibleResidual, scale: float = 0.5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    layer = layer.to(F64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=F64))
    return layer


def points(n: int, d: int, seed: int = 2, scale: float = 1.5) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def contraction(d: int, norm: float, seed: int = 0) -> torch.Tensor:
    """A random ``d x d`` matrix of spectral norm ``norm``."""
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return norm * a / torch.linalg.matrix_norm(a, 2)


def mean_and_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return values.mean(0), values.std(0) / values.shape[0] ** 0.5


# -- the Lipschitz guarantee -----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["lipswish", "elu"])
def test_normalised_weights_and_jacobian_obey_the_bound(activation):
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(3, (16, 8), activation=activation, coeff=0.9), 5.0)
    net = layer._net(None)
    for w in net.weights:  # large raw weights, each normalised to spectral norm c
        assert torch.linalg.matrix_norm(w.detach(), 2) <= 0.9 * (1 + 1e-10)
    assert layer.lipschitz_bound() <= 0.9**3 * (1 + 1e-10)
    _, derivs = layer._g(points(64, 3), net)
    jac = R.mlp_jacobian(net.weights, derivs)
    assert torch.linalg.matrix_norm(jac, 2).max() <= 0.9**3 * (1 + 1e-10)
    a, b = points(256, 3, seed=5), points(256, 3, seed=6)
    ga, gb = layer._g(a, net)[0], layer._g(b, net)[0]
    assert ((ga - gb).norm(dim=-1) <= 0.9**3 * (a - b).norm(dim=-1) * (1 + 1e-10)).all()


def test_activations_are_one_lipschitz_with_correct_derivatives():
    z = torch.linspace(-30, 30, 2001, dtype=F64, requires_grad=True)
    for beta in (0.1, 1.0, 10.0):
        value, deriv = R.lipswish(z, torch.tensor(beta, dtype=F64))
        (auto,) = torch.autograd.grad(value.sum(), z)
        assert torch.allclose(deriv, auto, atol=1e-12) and deriv.abs().max() <= 1
    value, deriv = R.elu(z)
    (auto,) = torch.autograd.grad(value.sum(), z)
    assert torch.allclose(deriv, auto) and deriv.abs().max() <= 1
    big = torch.tensor([-1e30, -1e3, 1e3, 1e30])
    assert all(torch.isfinite(t).all() for t in R.lipswish(big, torch.tensor(1.0)) + R.elu(big))


def test_arbitrary_parameters_stay_invertible():
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(4, (32, 32), logdet="exact"), scale=20.0)
    y = points(32, 4, scale=10.0)
    x, ld = layer.inverse_and_log_det(y)
    y_back, ld_fwd = layer.forward_and_log_det(x)
    assert torch.allclose(y_back, y, atol=1e-9) and torch.allclose(ld_fwd, -ld, atol=1e-9)


# -- the fixed-point inverse -------------------------------------------------------------------
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_fixed_point_meets_its_documented_tolerance(tol):
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(3, (16, 16), coeff=0.97, inverse_tol=tol))
    y_true = points(128, 3, scale=4.0)
    x = layer.inverse_and_log_det(y_true)[0]
    y = layer.forward_without_log_det(x)
    error = (y - y_true).norm(dim=-1)
    assert (error <= tol * (1 + y.norm(dim=-1))).all(), error.max()
    net = layer._net(None)
    _, loose = R.fixed_point(lambda v: x - layer._g(v, net)[0], x, net.lipschitz, tol, 1000)
    _, tight = R.fixed_point(lambda v: x - layer._g(v, net)[0], x, net.lipschitz, 1e-15, 1000)
    assert loose < tight  # the tolerance stops the iteration early


def test_fixed_point_is_finite_and_accurate_in_float32_at_large_inputs():
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(4, (32, 32)), scale=1.0).float()
    x = 1e3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(3))
    y, ld = layer.forward_and_log_det(x)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    x_back = layer.inverse_and_log_det(y)[0]
    assert ((x_back - x).norm(dim=-1) <= 1e-5 * (1 + x.norm(dim=-1))).all()


def test_implicit_gradients_match_finite_differences():
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(2, (8,), context_dim=1, logdet="exact"))
    x = points(3, 2).requires_grad_()
    ctx = points(3, 1, seed=7).requires_grad_()
    # through the solve, w.r.t. the input and the context (the sample and its log-det)
    assert torch.autograd.gradcheck(lambda x, c: layer.forward_and_log_det(x, c), (x, ctx))
    weight = layer.weights[0]

    def loss() -> torch.Tensor:
        y, ld = layer.forward_and_log_det(x.detach(), ctx.detach())
        return (y * torch.arange(1.0, 7.0, dtype=F64).reshape(3, 2)).sum() + ld.sum()

    loss().backward()
    analytic, numeric = weight.grad.clone(), torch.zeros_like(weight)
    eps = 1e-6
    with torch.no_grad():
        for idx in range(weight.numel()):
            flat = weight.view(-1)
            flat[idx] += eps
            up = loss()
            flat[idx] -= 2 * eps
            down = loss()
            flat[idx] += eps
            numeric.view(-1)[idx] = (up - down) / (2 * eps)
    assert torch.allclose(analytic, numeric, atol=1e-7, rtol=1e-6)


# -- log-determinants ----------------------------------------------------------------------------
def test_exact_log_det_known_answer_in_one_dimension():
    layer = InvertibleResidual(1, (1,), activation="elu", logdet="exact", coeff=0.5).to(F64)
    with torch.no_grad():  # g(y) = -0.5 elu(0.4 y + 0.1) after normalisation of w2 = -2
        layer.weights[0].fill_(0.4)
        layer.weights[1].fill_(-2.0)
        layer.biases[0].fill_(0.1)
        layer.biases[1].fill_(0.0)
    y = torch.tensor([[-3.0], [0.0], [2.0]], dtype=F64)
    z = 0.4 * y + 0.1
    slope = torch.where(z > 0, torch.ones_like(z), torch.exp(z))
    x, ld = layer.inverse_and_log_det(y)
    assert torch.allclose(x, y - 0.5 * torch.nn.functional.elu(z))
    assert torch.allclose(ld, torch.log1p(-0.5 * 0.4 * slope).squeeze(-1))


def test_hutchinson_series_is_unbiased_for_the_truncated_series():
    jac = contraction(4, 0.6)
    vjp, like = (lambda w: w @ jac), jac
    gen = torch.Generator().manual_seed(0)
    probes = R.rademacher((200_000, 4), like, gen)
    for n_terms in (2, 10):
        coeffs = R.series_coefficients(n_terms, like)
        per_probe, _ = R._series_terms(vjp, probes, coeffs)
        mean, se = mean_and_se(per_probe)
        powers = [torch.linalg.matrix_power(jac, k) for k in range(1, n_terms + 1)]
        truncated = sum(coeffs[0, k] * torch.trace(p) for k, p in enumerate(powers))
        assert abs(mean - truncated) <= 6 * se
        assert torch.allclose(R.hutchinson_logdet(vjp, probes, coeffs), mean)
        # the documented truncation bias bound D sum_{k>n} L^k / k
        bound = 4 * sum(0.6**k / k for k in range(n_terms + 1, 400))
        assert abs(truncated - R.logdet_exact(jac)) <= bound


def test_russian_roulette_is_unbiased_for_the_exact_log_det():
    jac = contraction(4, 0.6, seed=1)
    gen = torch.Generator().manual_seed(1)
    n = 200_000
    probes = R.rademacher((n, 4), jac, gen)
    coeffs = R.roulette_coefficients(n, 0.5, 2, 100, jac, gen)
    assert coeffs.shape[1] > 12  # some draws go deep
    mean, se = mean_and_se(R._series_terms(lambda w: w @ jac, probes, coeffs)[0])
    assert abs(mean - R.logdet_exact(jac)) <= 6 * se and se < 0.01


def test_neumann_gradient_is_unbiased_and_keeps_the_value():
    jac0 = contraction(3, 0.5, seed=2)
    exact_grad = torch.linalg.inv(torch.eye(3, dtype=F64) + jac0).T  # d logdet(I + J) / dJ
    gen = torch.Generator().manual_seed(2)
    grads, backprop = [], []
    for _ in range(20):
        jac = jac0.clone().requires_grad_()
        probes = R.rademacher((10_000, 3), jac, gen)
        coeffs = R.roulette_coefficients(10_000, 0.5, 2, 100, jac, gen)

        def vjp(w: torch.Tensor, jac: torch.Tensor = jac) -> torch.Tensor:
            return w @ jac

        value = R.neumann_logdet(vjp, probes, coeffs)
        plain = R.hutchinson_logdet(vjp, probes, coeffs)
        assert torch.allclose(value, plain)
        grads.append(torch.autograd.grad(value, jac)[0])
        backprop.append(torch.autograd.grad(plain, jac)[0])
    for g in (grads, backprop):
        mean, se = mean_and_se(torch.stack(g))
        assert ((mean - exact_grad).abs() <= 6 * se).all()


def strong_layer(**kwargs) -> InvertibleResidual:
    """A layer with J_g close to 0.64 M (M a rotation) where the ELU is in its linear part: the
    Jacobian norm is at the bound c^2 (random normalised weights give far smaller ones)."""
    layer = InvertibleResidual(3, (8,), activation="elu", coeff=0.8, **kwargs).to(F64)
    g = torch.Generator().manual_seed(4)
    q = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))[0][:, :3]
    m = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0]
    with torch.no_grad():
        layer.weights[0].copy_(0.8 * q)
        layer.weights[1].copy_(0.8 * m @ q.T)
        layer.biases[0].fill_(1.0)
    return layer


@pytest.mark.parametrize("mode", ["series", "roulette"])
def test_layer_estimators_agree_with_the_exact_log_det(mode):
    layer = strong_layer(logdet="exact", n_terms=30, n_probes=10_000)
    y = points(4, 3, scale=1.0)
    net = layer._net(None)
    jac = R.mlp_jacobian(net.weights, layer._g(y, net)[1])
    assert (torch.linalg.matrix_norm(jac, 2) > 0.5).all()
    exact = layer.inverse_and_log_det(y)[1].detach()
    assert (exact.abs() > 0.1).all()
    layer.logdet = mode
    torch.manual_seed(3)
    with torch.no_grad():
        estimates = torch.stack([layer.inverse_and_log_det(y)[1] for _ in range(20)])
    mean, se = mean_and_se(estimates)
    lip = layer.lipschitz_bound()
    truncation = 3 * sum(lip**k / k for k in range(31, 400)) if mode == "series" else 0
    assert ((mean - exact).abs() <= 6 * se + truncation).all(), (mean, exact, se)
    assert (se < 0.01).all()


@pytest.mark.parametrize("mode", ["series", "roulette"])
def test_estimators_are_reproducible_with_a_seed_and_give_gradients(mode):
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(20, (16,), logdet=mode, seed=5, n_probes=2))
    y = points(6, 20)
    ld1, ld2 = layer.inverse_and_log_det(y)[1], layer.inverse_and_log_det(y)[1]
    assert torch.equal(ld1, ld2)
    x, log_det_fwd = layer.forward_and_log_det(y)
    (ld1.sum() + (x**2).sum() + log_det_fwd.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    layer.seed = None
    torch.manual_seed(9)
    a = layer.inverse_and_log_det(y)[1]
    torch.manual_seed(9)
    assert torch.equal(a, layer.inverse_and_log_det(y)[1])


def test_default_log_det_mode_depends_on_the_dimension():
    assert InvertibleResidual(EXACT_MAX_DIM, (8,)).logdet == "exact"
    assert InvertibleResidual(EXACT_MAX_DIM + 1, (8,)).logdet == "roulette"
    assert iresnet(EXACT_MAX_DIM + 1, 1, (8,)).transforms[0].logdet == "series"
    assert residual_flow(3, 1, (8,)).transforms[0].logdet == "exact"


# -- power-iteration spectral normalisation ------------------------------------------------------
def test_power_iteration_converges_in_training_and_is_frozen_in_eval():
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(3, (32, 32), spectral_norm="power"), scale=3.0)
    y = points(8, 3)
    for _ in range(40):  # training-mode calls run the power iteration, warm-started
        layer.inverse_and_log_det(y)
    for w in layer._net(None).weights:
        assert torch.linalg.matrix_norm(w.detach(), 2) <= 0.97 * (1 + 1e-6)
    layer.eval()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    out1, out2 = layer.inverse_and_log_det(y), layer.inverse_and_log_det(y)
    assert torch.equal(out1[0], out2[0]) and torch.equal(out1[1], out2[1])
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    exact = InvertibleResidual(3, (32, 32)).to(F64)
    exact.load_state_dict({k: v for k, v in state.items() if not k.startswith("_u")})
    assert torch.allclose(exact.inverse_and_log_det(y)[0], out1[0], atol=1e-8)
    layer.train()
    layer.inverse_and_log_det(y)
    assert any("_u" in k for k in layer.state_dict())


# -- arguments and builders ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"coeff": 1.0}, ValueError, r"coeff must be in \(0, 1\), got 1.0"),
        ({"logdet": "slogdet"}, ValueError, "logdet must be one of"),
        ({"activation": "relu"}, ValueError, "activation must be one of"),
        ({"spectral_norm": "svd"}, ValueError, "spectral_norm must be one of"),
        ({"hidden_dims": ()}, ValueError, "at least one hidden layer"),
        ({"geom_p": 1.0}, ValueError, "geom_p"),
        ({"n_terms": 2.5}, TypeError, "n_terms must be an int"),
        ({"inverse_tol": 0.0}, ValueError, "inverse_tol must be > 0"),
        ({"neumann_gradient": 1}, TypeError, "neumann_gradient must be a bool"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        InvertibleResidual(2, **kwargs)


@pytest.mark.parametrize("builder", [iresnet, residual_flow])
def test_builders_give_normalised_invertible_flows(builder):
    torch.manual_seed(0)
    flow = builder(2, num_transforms=2, hidden_dims=(16,)).double()
    perturbed(flow, 0.3)
    grid = torch.linspace(-8, 8, 201, dtype=F64)
    pts = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass - 1) < 0.01
    x, log_q = flow.rsample_and_log_prob((16,))
    assert torch.allclose(log_q, flow.log_prob(x), atol=1e-9)
    cond = builder(3, 2, (8,), context_dim=2, seed=0)
    assert cond.log_prob(torch.randn(5, 3), context=torch.randn(5, 2)).shape == (5,)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning")
def test_forward_trace_runs_every_iteration_so_it_holds_away_from_the_traced_input():
    torch.manual_seed(0)
    layer = perturbed(InvertibleResidual(2, (8,), max_iter=80)).float().eval()

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.layer.forward_and_log_det(x)

    module = Forward()
    traced = torch.jit.trace(module, (torch.zeros(3, 2),), check_trace=False)
    fresh = 5 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for got, expected in zip(traced(fresh), module(fresh), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
