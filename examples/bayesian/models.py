r"""Five Bayesian models for comparing variational guides with NUTS, and their data.

The two eight-schools models are the package's (:mod:`pyro_flows.targets.eight_schools`, where
they and their data are defined once); the other three are defined here. Every model is a plain
Pyro program whose data are its arguments, so the same callable serves NUTS, SVI with any
autoguide, :class:`~pyro.infer.Predictive` and PSIS diagnostics. Each
model's :class:`BayesModel` record says how to turn posterior draws of its latent sites into the
*coordinates* that the reference files store (constrained values, with derived quantities such
as the non-centred eight schools' :math:`\theta` computed from the sampled sites).

======================================  ====  ==========================================
model                                   dim   reference
======================================  ====  ==========================================
``eight_schools_centered``               10   exact (1-D quadrature, :mod:`exact`)
``eight_schools_noncentered``            10   exact (the same posterior)
``logistic_regression`` (breast cancer)  31   NUTS
``funnel`` (Neal, 10-D)                  10   exact
``stochastic_volatility`` (S&P 500)     103   inference-gym's Stan ground truth
======================================  ====  ==========================================

Example:

>>> spec = get_model("eight_schools_noncentered")
>>> spec.coordinate_names[:3], spec.dim
(['mu', 'tau', 'theta[0]'], 10)

References:

- D. B. Rubin. *Estimation in parallel randomized experiments.* Journal of Educational
  Statistics 6(4), 1981 (eight schools).
- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., CRC Press, 2013, section 5.5 (eight schools).
- W. N. Street, W. H. Wolberg, O. L. Mangasarian. *Nuclear feature extraction for breast tumor
  diagnosis.* IS&T/SPIE 1993 (the Wisconsin diagnostic breast-cancer data in scikit-learn).
- R. M. Neal. *Slice sampling.* Annals of Statistics 31(3), 2003 (the funnel).
- S. Kim, N. Shephard, S. Chib. *Stochastic volatility: likelihood inference and comparison
  with ARCH models.* Review of Economic Studies 65(3), 1998.
- Stan User's Guide, *Stochastic volatility models*;
  inference-gym's ``StochasticVolatilityLogSP500Small`` target (its priors and data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from exact import FUNNEL_DIM
from torch import Tensor

from pyro_flows.targets.eight_schools import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    eight_schools_centered,
    eight_schools_noncentered,
)

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"

MODEL_NAMES = (
    "eight_schools_centered",
    "eight_schools_noncentered",
    "logistic_regression",
    "funnel",
    "stochastic_volatility",
)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def logistic_regression(x: Tensor, y: Tensor, subsample_size: int | None = None) -> None:
    r"""Bayesian logistic regression with standard-Normal priors.

    .. math::

        b \sim \mathcal N(0, 1), \quad w_k \sim \mathcal N(0, 1), \quad
        y_n \sim \mathrm{Bernoulli}\big(\sigma(b + x_n^\top w)\big), \quad n = 1..N,

    with the observations in ``pyro.plate("data", N, subsample_size=subsample_size)`` (Pyro
    rescales a subsample's log-likelihood by :math:`N / \text{subsample size}`).

    >>> import torch
    >>> x, y = torch.randn(20, 3), torch.randint(0, 2, (20,)).float()
    >>> tr = pyro.poutine.trace(logistic_regression).get_trace(x, y, subsample_size=5)
    >>> tr.nodes["w"]["value"].shape, tr.nodes["obs"]["value"].shape
    (torch.Size([3]), torch.Size([5]))
    """
    num_data, num_features = x.shape
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([num_features]).to_event(1))
    with pyro.plate("data", num_data, subsample_size=subsample_size) as idx:
        # w carries one size-1 slot for the data plate when vectorised over particles
        # (shape (P, 1, K)), so the elementwise product broadcasts to (P, n, K).
        logits = b + (w * x[idx]).sum(-1)
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=y[idx])


def funnel(dim: int = FUNNEL_DIM) -> None:
    r"""Neal's funnel in ``dim`` dimensions.

    .. math::

        x_0 \sim \mathcal N(0, 3), \qquad x_i \mid x_0 \sim \mathcal N(0, e^{x_0/2}),
        \quad i = 1..\mathrm{dim}-1.

    Exact: all means 0, :math:`\mathrm{sd}(x_0) = 3`, :math:`\mathrm{sd}(x_i) = e^{9/4} = 9.488`
    (since :math:`E[e^{x_0}] = e^{9/2}`), :math:`\log Z = 0`. The :math:`x_i` are extremely
    heavy-tailed (kurtosis :math:`3 e^{9} \approx 24{,}000`), so sample standard deviations of
    the :math:`x_i` converge slowly.

    >>> tr = pyro.poutine.trace(funnel).get_trace()
    >>> tr.nodes["x"]["value"].shape
    torch.Size([9])
    """
    x0 = pyro.sample("x0", dist.Normal(0.0, 3.0))
    scale = torch.exp(x0 / 2).unsqueeze(-1).expand(*x0.shape, dim - 1)
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def ar1_standardised(eta: Tensor, phi: Tensor) -> Tensor:
    r"""Stationary AR(1) path with unit innovations, from its innovations ``eta`` (last dim T).

    .. math::

        s_0 = \eta_0 / \sqrt{1 - \phi^2}, \qquad s_t = \phi\, s_{t-1} + \eta_t,
        \quad\text{i.e.}\quad s = L \eta, \quad L_{tk} = \phi^{t-k}\,[k \le t]\,
        (1 - \phi^2)^{-\frac12 [k = 0]}.

    Computed as one matrix product (no Python loop over time). ``phi`` broadcasts against
    ``eta.shape[:-1]`` after a trailing unit dimension is added.

    >>> import torch
    >>> s = ar1_standardised(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(0.5))
    >>> [round(v, 4) for v in s.tolist()]
    [1.1547, 0.5774, 0.2887]
    """
    t = eta.shape[-1]
    steps = torch.arange(t, device=eta.device)
    lags = (steps.unsqueeze(-1) - steps).to(eta.dtype)
    lower = lags >= 0
    phi = phi.unsqueeze(-1).unsqueeze(-1)
    powers = torch.where(lower, phi ** lags.clamp(min=0), torch.zeros((), dtype=eta.dtype))
    first = torch.rsqrt(1 - phi**2)  # (..., 1, 1): scales the first column only
    column_scale = torch.where(steps == 0, first, torch.ones((), dtype=eta.dtype))
    return (powers * column_scale @ eta.unsqueeze(-1)).squeeze(-1)


def stochastic_volatility(returns: Tensor) -> None:
    r"""Stochastic volatility of daily returns (inference-gym's priors, non-centred AR(1)).

    .. math::

        \mu &\sim \mathrm{Cauchy}(0, 5), \quad
        \tfrac{\phi + 1}{2} \sim \mathrm{Beta}(20, 1.5), \quad
        \sigma \sim \mathrm{HalfCauchy}(2), \quad \eta_t \sim \mathcal N(0, 1), \\
        h &= \mu + \sigma\, s(\eta, \phi) \quad (\text{stationary AR(1): }
        h_0 \sim \mathcal N(\mu, \sigma / \sqrt{1-\phi^2}),\;
        h_t \mid h_{t-1} \sim \mathcal N(\mu + \phi (h_{t-1} - \mu), \sigma)), \\
        y_t &\sim \mathcal N\big(0, e^{h_t / 2}\big), \quad t = 1..T,

    with :math:`s` from :func:`ar1_standardised`. The latent sites are ``mu``, ``phi_raw``
    :math:`= (\phi+1)/2`, ``sigma`` and ``eta`` (:math:`T + 3` dimensions).

    >>> import torch
    >>> tr = pyro.poutine.trace(stochastic_volatility).get_trace(0.01 * torch.randn(100))
    >>> tr.nodes["eta"]["value"].shape
    torch.Size([100])
    """
    mu = pyro.sample("mu", dist.Cauchy(0.0, 5.0))
    phi_raw = pyro.sample("phi_raw", dist.Beta(20.0, 1.5))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.0))
    with pyro.plate("days", returns.shape[-1]):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        # mu, phi_raw, sigma carry the plate's size-1 slot when vectorised: (P, 1)
        h = mu + sigma * ar1_standardised(eta, (2 * phi_raw - 1).squeeze(-1))
        pyro.sample("obs", dist.Normal(0.0, torch.exp(h / 2)), obs=returns)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_breast_cancer(dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """scikit-learn's breast-cancer data: 569 x 30 features standardised (mean 0, sd 1), labels.

    >>> x, y = load_breast_cancer()
    >>> tuple(x.shape), int(y.sum())
    ((569, 30), 357)
    """
    from sklearn.datasets import load_breast_cancer as sk_load

    data = sk_load()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    dtype = dtype or torch.get_default_dtype()
    return torch.as_tensor(x, dtype=dtype), torch.as_tensor(data.target, dtype=dtype)


def load_sp500_returns(dtype: torch.dtype | None = None) -> Tensor:
    """The 100 centred daily log returns of the S&P 500 in ``data/sp500_returns.csv``.

    Taken from inference-gym's bundled closing prices (see the file's header for provenance):
    the 100 trading days ending 2020-06-24.

    >>> r = load_sp500_returns(torch.float64)
    >>> tuple(r.shape), abs(float(r.mean())) < 1e-12
    ((100,), True)
    """
    lines = (DATA_DIR / "sp500_returns.csv").read_text().splitlines()
    header, *rows = [line for line in lines if line and not line.startswith("#")]
    column = header.split(",").index("centered_log_return")
    values = [float(row.split(",")[column]) for row in rows]
    return torch.tensor(values, dtype=dtype or torch.get_default_dtype())


# --------------------------------------------------------------------------------------------
# coordinates: draws of latent sites -> the reference's columns
# --------------------------------------------------------------------------------------------


def _flat(samples: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Site draws as ``(num_draws, -1)`` float64 arrays (drops plate slots of size 1)."""
    out = {}
    for name, value in samples.items():
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value, dtype=np.float64)
        out[name] = value.reshape(value.shape[0], -1)
    return out


def _schools_coordinates(samples: Mapping[str, Any]) -> np.ndarray:
    s = _flat(samples)
    theta = s["theta"] if "theta" in s else s["mu"] + s["tau"] * s["eta"]
    return np.concatenate([s["mu"], s["tau"], theta], axis=1)


def _logistic_coordinates(samples: Mapping[str, Any]) -> np.ndarray:
    s = _flat(samples)
    return np.concatenate([s["b"], s["w"]], axis=1)


def _funnel_coordinates(samples: Mapping[str, Any]) -> np.ndarray:
    s = _flat(samples)
    return np.concatenate([s["x0"], s["x"]], axis=1)


def _sv_coordinates(samples: Mapping[str, Any]) -> np.ndarray:
    s = _flat(samples)
    phi = 2 * s["phi_raw"] - 1
    with torch.no_grad():
        path = ar1_standardised(torch.as_tensor(s["eta"]), torch.as_tensor(phi[:, 0])).numpy()
    h = s["mu"] + s["sigma"] * path
    return np.concatenate([s["mu"], phi, s["sigma"], h], axis=1)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BayesModel:
    """A model with its data, its latent sites and the map from site draws to coordinates.

    :ivar name: the registry key.
    :ivar model: the Pyro program; call it as ``model(*args, **kwargs)``.
    :ivar args: the data arguments.
    :ivar coordinate_names: the reference's columns, in order.
    :ivar to_coordinates: ``{site: draws (N, ...)} -> (N, len(coordinate_names))`` array.
    :ivar max_plate_nesting: the model's plate depth (for vectorised particles).
    :ivar key_coordinates: two coordinates for the pair plot.
    :ivar autoflow_target: whether the AutoFlow targets apply to this model.
    :ivar summary_groups: named groups of coordinates reported separately (sto-vol: ``h``).
    """

    name: str
    model: Callable[..., None]
    args: tuple[Any, ...]
    coordinate_names: list[str]
    to_coordinates: Callable[[Mapping[str, Any]], np.ndarray]
    max_plate_nesting: int
    key_coordinates: tuple[str, str]
    autoflow_target: bool
    latent_sites: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    summary_groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Number of coordinates (for these models also the unconstrained latent dimension)."""
        return len(self.coordinate_names)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return self.model(*args, **kwargs)


SCHOOLS_NAMES = ["mu", "tau"] + [f"theta[{j}]" for j in range(8)]


@cache
def _get(name: str, dtype: torch.dtype) -> BayesModel:
    if name in ("eight_schools_centered", "eight_schools_noncentered"):
        y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=dtype)
        sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=dtype)
        centered = name == "eight_schools_centered"
        return BayesModel(
            name=name,
            model=eight_schools_centered if centered else eight_schools_noncentered,
            args=(y, sigma),
            coordinate_names=list(SCHOOLS_NAMES),
            to_coordinates=_schools_coordinates,
            max_plate_nesting=1,
            key_coordinates=("mu", "tau"),
            autoflow_target=not centered,
            latent_sites=("mu", "tau", "theta" if centered else "eta"),
        )
    if name == "logistic_regression":
        x, y = load_breast_cancer(dtype)
        return BayesModel(
            name=name,
            model=logistic_regression,
            args=(x, y),
            coordinate_names=["b"] + [f"w[{k}]" for k in range(x.shape[1])],
            to_coordinates=_logistic_coordinates,
            max_plate_nesting=1,
            key_coordinates=("w[20]", "w[21]"),
            autoflow_target=True,
            latent_sites=("b", "w"),
        )
    if name == "funnel":
        return BayesModel(
            name=name,
            model=funnel,
            args=(),
            coordinate_names=[f"x{i}" for i in range(FUNNEL_DIM)],
            to_coordinates=_funnel_coordinates,
            max_plate_nesting=0,
            key_coordinates=("x0", "x1"),
            autoflow_target=True,
            latent_sites=("x0", "x"),
        )
    if name == "stochastic_volatility":
        returns = load_sp500_returns(dtype)
        h_names = [f"h[{t}]" for t in range(returns.shape[0])]
        return BayesModel(
            name=name,
            model=stochastic_volatility,
            args=(returns,),
            coordinate_names=["mu", "phi", "sigma", *h_names],
            to_coordinates=_sv_coordinates,
            max_plate_nesting=1,
            key_coordinates=("phi", "sigma"),
            autoflow_target=False,
            latent_sites=("mu", "phi_raw", "sigma", "eta"),
            summary_groups={"scalars": ["mu", "phi", "sigma"], "h": h_names},
        )
    raise ValueError(f"unknown model: expected one of {MODEL_NAMES}, got {name!r}")


def get_model(name: str, dtype: torch.dtype | None = None) -> BayesModel:
    """The :class:`BayesModel` called ``name`` (one of :data:`MODEL_NAMES`), data in ``dtype``.

    :raises ValueError: for an unknown name.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name: expected a str, got {type(name).__name__}")
    return _get(name, dtype or torch.get_default_dtype())
