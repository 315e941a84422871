"""Fuzz: the flow guides (``AutoFlow``, ``AmortizedFlow``) and the guide diagnostics
(``iwae_log_likelihood``, ``log_importance_weights``, ``guide_psis_khat``) on bad options,
models and encoder outputs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows import flows
from pyro_flows.infer import (
    AmortizedFlow,
    AutoFlow,
    guide_psis_khat,
    iwae_log_likelihood,
    log_importance_weights,
)

from ._cases import INF, NAN, NON_FINITE, bad_positive_ints, raises_naming

Y = torch.tensor([0.3, -0.1, 0.4])


def _model(y=Y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


def _guide(**kwargs) -> AutoFlow:
    options = {"num_transforms": 1, "hidden_dims": (4,), **kwargs}
    guide = AutoFlow(_model, **options)
    guide()  # builds the flow: most checks need the latent size
    return guide


# -- AutoFlow -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"flow": "glowing"}, ("flow", "'glowing'"), id="flow-name"),
        pytest.param({"flow": 3}, ("flow", "int"), id="flow-type"),
        pytest.param({"init_scale": 0.0}, ("init_scale", "0"), id="scale-0"),
        pytest.param({"init_scale": -1.0}, ("init_scale", "-1"), id="scale-negative"),
        pytest.param({"init_scale": NAN}, ("init_scale", "nan"), id="scale-nan"),
        pytest.param({"init_scale": INF}, ("init_scale", "inf"), id="scale-inf"),
        pytest.param({"init_scale": True}, ("init_scale", "True"), id="scale-bool"),
        pytest.param({"num_quantile_samples": 1}, ("num_quantile_samples", "1"), id="quantiles"),
        pytest.param({"learn_tails": "yes"}, ("learn_tails", "'yes'"), id="tails"),
        pytest.param({"full_rank": 1}, ("full_rank", "1"), id="full-rank"),
        pytest.param({"path_gradient": None}, ("path_gradient", "None"), id="path-gradient"),
        *[pytest.param({"num_transforms": p.values[0]}, p.values[1], id=f"layers-{p.id}")
          for p in bad_positive_ints("num_transforms")],
        pytest.param({"hidden_dims": (0,)}, ("hidden_dims", "0"), id="hidden"),
        pytest.param({"num_bins": 0, "flow": "nsf"}, ("num_bins", "0"), id="flow-option"),
        pytest.param({"bogus": 1}, ("bogus",), id="unknown-option"),
    ],
)
def test_autoflow_bad_options(kwargs, fragments):
    with raises_naming(fragments):
        _guide(**kwargs)


def test_autoflow_callable_returning_wrong_flow():
    def too_wide(latent_dim: int):
        return flows.realnvp(latent_dim + 1, num_transforms=1, hidden_dims=(4,))

    with raises_naming(("3", "2")):
        AutoFlow(_model, flow=too_wide)()
    with raises_naming(("Flow", "Linear")):
        AutoFlow(_model, flow=lambda d: torch.nn.Linear(d, d))()


def test_autoflow_discrete_site_refused():
    def model():
        pyro.sample("k", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with raises_naming(("'k'", "discrete")):
        AutoFlow(model, num_transforms=1, hidden_dims=(4,))()


def test_autoflow_no_latent_sites_refused():
    def model():
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with raises_naming("latent"):
        AutoFlow(model, num_transforms=1, hidden_dims=(4,))()


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_autoflow_path_gradient_attribute(value):
    guide = _guide()
    with raises_naming(("path_gradient", repr(value))):
        guide.path_gradient = value
        guide()


@pytest.mark.parametrize(
    "quantiles, fragments",
    [([0.5, 1.5], ("quantiles", "1.5")), ([NAN], ("quantiles", "nan")),
     ("median", ("quantiles", "str"))],
)
def test_autoflow_quantiles_bad(quantiles, fragments):
    guide = _guide()
    with raises_naming(fragments):
        guide.quantiles(quantiles)


# -- AmortizedFlow ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, kwargs, fragments",
    [
        *[pytest.param((p.values[0],), {}, p.values[1], id=f"latent-{p.id}")
          for p in bad_positive_ints("latent_dim")],
        pytest.param((2, 0), {}, ("context_dim", "0"), id="context-0"),
        pytest.param((2, 3), {"flow": "glowing"}, ("flow", "'glowing'"), id="flow-name"),
        pytest.param((2, 3), {"flow": 3}, ("flow", "int"), id="flow-type"),
        pytest.param((2, 3), {"num_transforms": 0}, ("num_transforms", "0"), id="layers"),
        pytest.param((2, 3), {"hidden_dims": (0,)}, ("hidden_dims", "0"), id="hidden"),
        pytest.param((2, None), {"flow": "diagonal", "hidden_dims": (4,)}, ("hidden_dims",),
                     id="diagonal-hidden"),
        pytest.param((2, 3), {"flow": flows.realnvp(3, num_transforms=1, context_dim=3)},
                     ("input_dim=3", "latent_dim=2"), id="flow-dim"),
        pytest.param((2, 3), {"flow": flows.realnvp(2, num_transforms=1, context_dim=5)},
                     ("context_dim=5", "context_dim=3"), id="flow-context"),
    ],
)
def test_amortized_bad_construction(args, kwargs, fragments):
    with raises_naming(fragments):
        AmortizedFlow(*args, **kwargs)


def _posterior() -> AmortizedFlow:
    return AmortizedFlow(2, 3, flow="iaf", num_transforms=1, hidden_dims=(4,))


def _inputs(n: int = 5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g), torch.rand(n, 2, generator=g) + 0.5, torch.randn(
        n, 3, generator=g
    )


def _set(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t[1, 0] = value
    return t


@pytest.mark.parametrize(
    "which, make, fragments",
    [
        pytest.param("loc", lambda t: torch.zeros(5, 3), ("(..., 2)", "(5, 3)"), id="loc-shape"),
        pytest.param("scale", lambda t: torch.ones(5, 3), ("(..., 2)", "(5, 3)"),
                     id="scale-shape"),
        pytest.param("context", lambda t: torch.zeros(5, 4), ("(..., 3)", "(5, 4)"),
                     id="context-shape"),
        pytest.param("context", lambda t: torch.zeros(4, 3), ("(5,", "(4,"), id="batch"),
        pytest.param("loc", lambda t: _set(t, NAN), (NON_FINITE, "loc"), id="loc-nan"),
        pytest.param("scale", lambda t: _set(t, 0.0), ("scale", "0"), id="scale-0"),
        pytest.param("scale", lambda t: _set(t, -1.0), ("scale", "-1"), id="scale-negative"),
        pytest.param("scale", lambda t: _set(t, INF), ("scale", NON_FINITE), id="scale-inf"),
        pytest.param("context", lambda t: _set(t, NAN), (NON_FINITE, "context"), id="ctx-nan"),
        pytest.param("context", lambda t: None, ("context_dim=3", "None"), id="ctx-missing"),
        pytest.param("loc", lambda t: t.double(), ("float64", "float32"), id="loc-dtype"),
        pytest.param("loc", lambda t: "zeros", ("loc", "str"), id="loc-str"),
    ],
)
def test_amortized_bad_inputs(which, make, fragments):
    loc, scale, context = _inputs()
    values = {"loc": loc, "scale": scale, "context": context}
    values[which] = make(values[which])
    with raises_naming(fragments):
        _posterior()(values["loc"], values["scale"], values["context"])


def test_amortized_log_prob_of_bad_points():
    loc, scale, context = _inputs()
    d = _posterior()(loc, scale, context)
    with raises_naming(("(..., 2)", "(5, 3)")):
        d.log_prob(torch.zeros(5, 3))
    with raises_naming(NON_FINITE):
        d.log_prob(_set(torch.zeros(5, 2), NAN))
    with raises_naming(("sample_shape", "-1")):
        d.sample((-1,))


def test_amortized_numpy_inputs_refused_or_same():
    loc, scale, context = _inputs()
    posterior = _posterior()
    expected = posterior(loc, scale, context).log_prob(torch.zeros(5, 2))
    try:
        d = posterior(loc.numpy(), scale.numpy(), context.numpy())
    except (TypeError, ValueError) as error:
        assert "ndarray" in str(error)
    else:
        assert torch.allclose(d.log_prob(torch.zeros(5, 2)), expected, atol=1e-5)


# -- IWAE and PSIS ------------------------------------------------------------------------------

def _local_model(y=Y):
    """A model whose only latent is per data point (what IWAE bounds need)."""
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)


def _local_guide(y=Y):
    with pyro.plate("data", len(y)):
        pyro.sample("z", dist.Normal(0.5 * y, 0.8))


def _trained_guide() -> AutoFlow:
    return _guide()


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        *[pytest.param({"num_samples": p.values[0]}, p.values[1], id=f"n-{p.id}")
          for p in bad_positive_ints("num_samples")],
        pytest.param({"chunk_size": 0}, ("chunk_size", "0"), id="chunk-0"),
        pytest.param({"chunk_size": -5}, ("chunk_size", "-5"), id="chunk-negative"),
        pytest.param({"return_elbo": "yes"}, ("return_elbo", "str"), id="elbo-flag"),
    ],
)
def test_iwae_bad_options(kwargs, fragments):
    options = {"num_samples": 4, "progress": False, **kwargs}
    with raises_naming(fragments):
        iwae_log_likelihood(_local_model, _local_guide, **options)


def test_iwae_runs_on_the_local_model():
    ll = iwae_log_likelihood(_local_model, _local_guide, num_samples=8, progress=False)
    assert ll.shape == (3,) and torch.isfinite(ll).all()


@pytest.mark.parametrize(
    "model, guide, fragments",
    [
        pytest.param("model", None, ("model",), id="model"),
        pytest.param(None, "guide", ("guide",), id="guide"),
    ],
)
def test_iwae_not_callables(model, guide, fragments):
    model = _local_model if model is None else model
    guide = _local_guide if guide is None else guide
    with raises_naming(fragments):
        iwae_log_likelihood(model, guide, num_samples=4, progress=False)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_samples"))
def test_log_importance_weights_bad_num_samples(value, fragments):
    with raises_naming(fragments):
        log_importance_weights(_local_model, _local_guide, num_samples=value)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"num_samples": 0}, ("num_samples", "0"), id="n-0"),
        pytest.param({"num_samples": 1}, ("num_samples", "1"), id="n-1"),
        pytest.param({"num_samples": 2.5}, ("num_samples", "2.5"), id="n-float"),
        pytest.param({"batch_size": 0}, ("batch_size", "0"), id="batch"),
        pytest.param({"vectorize": "yes"}, ("vectorize", "str"), id="vectorize"),
    ],
)
def test_guide_psis_khat_bad_options(kwargs, fragments):
    with raises_naming(fragments):
        guide_psis_khat(_model, _trained_guide(), **kwargs)
