"""non_finite_sites: the sites fit_guide names when no step could be taken."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_flows.infer._site_diagnosis import non_finite_sites


def _guide(*args):
    pyro.sample("m", dist.Normal(0.0, 1.0))


def test_a_masked_out_entry_is_not_reported():
    """An entry whose log density is -inf (1e30 squared overflows float32) is named unless it
    is masked out of the likelihood."""
    y = torch.tensor([1e30, 1.0, 2.0])

    def model(y, masked):
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)), pyro.poutine.mask(mask=(y < 1e10) | (not masked)):
            pyro.sample("y", dist.Normal(m, 1.0), obs=y)

    assert non_finite_sites(model, _guide, (y, False), {}) == [
        "observed site 'y' (a non-finite log density at finite data)"
    ]
    assert non_finite_sites(model, _guide, (y, True), {}) == []


def test_a_latent_density_that_overflows_is_named_and_the_global_rng_left_alone():
    def model(y):
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        pyro.sample("s", dist.Normal(m * math.inf, 1.0), obs=torch.tensor(0.0))

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    sites = non_finite_sites(model, _guide, (None,), {})
    assert torch.equal(torch.rand(3), expected)
    assert len(sites) == 1 and sites[0].startswith("observed site 's' (")
    assert "finite data" in sites[0] or "raised" in sites[0]


def test_a_model_that_cannot_be_traced_names_nothing():
    def broken(y):
        raise RuntimeError("no")

    assert non_finite_sites(broken, _guide, (None,), {}) == []
