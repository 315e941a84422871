r"""A posteriordb posterior as a Pyro model plus its reference summary: :class:`PosteriorSpec`.

A spec ties together the Pyro translation of a Stan program (``spec.model``, a model with no
arguments whose data are bound from the vendored ``data.json``), the reference summary of
posteriordb's gold-standard draws (``spec.reference``: element name :math:`\to` mean, sd, 5 %,
50 % and 95 % quantiles) and the map between the two naming schemes: Stan is 1-based, so the
reference element ``beta[2]`` is ``samples["beta"][..., 1]`` and ``y[3,1]`` is
``samples["y"][..., 2, 0]``; scalars keep their bare name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from pyro import poutine
from torch import Tensor

__all__ = ["DATA_DIR", "ModelBuilder", "PosteriorSpec", "parse_element"]

#: The folder holding one sub-folder of vendored posteriordb files per posterior.
DATA_DIR = Path(__file__).resolve().parent / "data"

#: A function ``builder(data, tensor)`` that returns the model (no arguments) for the raw JSON
#: ``data``; ``tensor(value)`` turns a JSON number or list into a tensor of the spec's dtype.
ModelBuilder = Callable[[Mapping[str, Any], Callable[[Any], Tensor]], Callable[[], None]]

_ELEMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+(?:,\d+)*)\])?$")


def parse_element(element: str) -> tuple[str, tuple[int, ...]]:
    """Split a Stan element name into the parameter name and the 0-based index.

    >>> parse_element("beta[2]"), parse_element("sigma"), parse_element("y[3,1]")
    (('beta', (1,)), ('sigma', ()), ('y', (2, 0)))
    """
    match = _ELEMENT.match(element.replace(" ", ""))
    if match is None:
        raise ValueError(
            f"cannot parse the Stan element name {element!r}; expected 'name' or 'name[i,...]' "
            "with 1-based indices"
        )
    name, index = match.group(1), match.group(2)
    if not index:
        return name, ()
    idx = tuple(int(i) - 1 for i in index.split(","))
    if min(idx) < 0:
        raise ValueError(f"Stan indices are 1-based, got {element!r}")
    return name, idx


def _read_json(name: str, file: str) -> dict[str, Any]:
    path = DATA_DIR / name / file
    with path.open() as f:
        return json.load(f)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PosteriorSpec:
    r"""One posteriordb posterior: a faithful Pyro translation of its Stan program and the
    summary of its reference draws.

    The model's log joint equals Stan's ``target`` (the log density up to a constant, Jacobians
    of the constraining transforms left to Pyro's ``biject_to``, exactly as Stan adds its own):

    .. math::

        \log p(\theta, y) = \sum_{\text{priors}} \log p(\theta_j)
        + \sum_{\texttt{target +=}} \ell_i(\theta) + \log p(y \mid \theta) + \text{const},

    with Stan's implicit improper flat prior on every parameter that the ``model`` block gives no
    prior (a ``pyro.distributions.ImproperUniform`` site on the parameter's constrained support:
    it has ``log_prob = 0`` and no sampler, so initialise such models on the unconstrained space,
    e.g. with :func:`~pyro_flows.targets.posteriordb.init_to_unconstrained_uniform`).

    Cost: ``spec.model()`` is one pass of the Stan program's arithmetic in torch (the ODE models
    integrate their ODE with fixed-step RK4: a few hundred small steps).

    :param name: posteriordb's name, ``"<data>-<model>"``.
    :param kind: ``"regression"``, ``"time series"``, ``"ode"``, ``"hmm"`` or ``"gp"``.
    :param difficulty: one line on what makes the posterior hard.
    :param dim: the dimension of the unconstrained space (a :math:`K`-simplex counts
        :math:`K - 1`).
    :param parameters: Stan's parameter names and their (constrained) shapes, in order; these
        are the model's latent site names.
    :param builder: ``builder(data, tensor)`` returns the model for the raw JSON data.
    :param dtype: the dtype of the bound data (``None``: torch's default dtype when the model is
        first built).
    :param device: the device of the bound data (``None``: CPU).

    Example:

    >>> from pyro_flows.targets.posteriordb import load_posterior
    >>> spec = load_posterior("kidiq-kidscore_momiq")
    >>> spec.dim, spec.kind, spec.parameters
    (3, 'regression', {'beta': (2,), 'sigma': ()})
    >>> round(spec.reference["beta[2]"]["mean"], 2)
    0.61
    >>> draws = spec.reference_draws({"beta": torch.ones(10, 2), "sigma": torch.ones(10)})
    >>> sorted(draws), draws["beta[2]"].shape
    (['beta[1]', 'beta[2]', 'sigma'], torch.Size([10]))

    References:

    - M. Magnusson, J. Torgander, P.-C. Bürkner, L. Zhang, B. Carpenter, A. Vehtari.
      *posteriordb: Testing, benchmarking and developing Bayesian inference algorithms.*
      arXiv:2407.04967, 2024.
    - B. Carpenter et al. *Stan: A Probabilistic Programming Language.* Journal of Statistical
      Software 76(1), 2017.
    """

    name: str
    kind: str
    difficulty: str
    dim: int
    parameters: dict[str, tuple[int, ...]]
    builder: ModelBuilder = field(repr=False)
    dtype: torch.dtype | None = None
    device: torch.device | str | None = None
    _models: dict[tuple[torch.dtype, str], Callable[[], None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    # -- vendored files ------------------------------------------------------------------------
    @cached_property
    def data(self) -> dict[str, Any]:
        """The raw data (``data.json``), under the Stan ``data`` block's names."""
        return _read_json(self.name, "data.json")

    @cached_property
    def reference(self) -> dict[str, dict[str, float]]:
        """The reference summary: element name -> ``mean``, ``sd``, ``q05``, ``q50``, ``q95``
        (and ``n_draws``, ``n_chains``) of posteriordb's reference draws."""
        return _read_json(self.name, "reference_summary.json")

    @cached_property
    def info(self) -> dict[str, Any]:
        """posteriordb's information file (``posterior.json``: dimensions, keywords)."""
        return _read_json(self.name, "posterior.json")

    @property
    def stan_code(self) -> str:
        """The Stan program this spec translates (``model.stan``)."""
        return (DATA_DIR / self.name / "model.stan").read_text()

    # -- the model -----------------------------------------------------------------------------
    @property
    def model(self) -> Callable[[], None]:
        """The Pyro model (no arguments), with the data bound as tensors of ``dtype`` (torch's
        default dtype if ``None``) on ``device``; built once per dtype and device."""
        dtype = self.dtype or torch.get_default_dtype()
        device = torch.device(self.device or "cpu")
        key = (dtype, str(device))
        if key not in self._models:

            def tensor(value: Any) -> Tensor:
                return torch.as_tensor(value, dtype=dtype, device=device)

            model = self.builder(self.data, tensor)
            model.__name__ = self.name.replace("-", "__")
            self._models[key] = model
        return self._models[key]

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> PosteriorSpec:
        """The same posterior with its data bound as ``dtype`` tensors on ``device``."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        return dataclasses.replace(
            self,
            dtype=dtype if dtype is not None else self.dtype,
            device=device if device is not None else self.device,
            _models={},
        )

    # -- names -------------------------------------------------------------------------------
    def reference_draws(self, samples: Mapping[str, Tensor] | poutine.Trace) -> dict[str, Tensor]:
        """The draws of every reference element, each flattened to shape ``(S,)``.

        ``samples`` maps Stan parameter names to tensors of shape ``(*batch, *shape)`` (e.g.
        ``MCMC.get_samples()``, or a guide's samples), or is a ``pyro.poutine.Trace`` of the
        model; ``batch`` (any number of dims, e.g. chains and draws) is flattened.
        """
        if isinstance(samples, poutine.Trace):
            samples = {
                n: s["value"] for n, s in samples.nodes.items() if s["type"] == "sample"
            }
        if not isinstance(samples, Mapping):
            raise TypeError(
                "samples must be a dict of tensors or a poutine.Trace, got "
                f"{type(samples).__name__}"
            )
        needed = {parse_element(e)[0] for e in self.reference}
        missing = sorted(n for n in needed if n not in samples)
        if missing:
            lacking = [e for e in self.reference if parse_element(e)[0] in missing]
            raise ValueError(
                f"samples for {self.name!r} lack the parameter(s) {missing} (reference elements "
                f"{lacking}); got keys {sorted(samples)}"
            )
        flat: dict[str, Tensor] = {}
        for name in sorted(needed):
            value = torch.as_tensor(samples[name])
            shape = self.parameters[name]
            if tuple(value.shape[value.dim() - len(shape) :]) != shape or value.dim() < len(shape):
                raise ValueError(
                    f"samples[{name!r}] must have shape (*batch, {', '.join(map(str, shape))}) "
                    f"(parameter shape {shape}), got {tuple(value.shape)}"
                )
            flat[name] = value.reshape((-1,) + shape)
        return {e: flat[n][(slice(None),) + i] for e, (n, i) in self._elements().items()}

    def reference_point(self) -> dict[str, Tensor]:
        """The reference posterior means, one tensor per parameter (shape ``parameters[name]``,
        dtype as the model's data): a good initial point (``pyro.infer.autoguide.init_to_value``).
        The mean of a simplex is a simplex and of an ordered vector is ordered, so it lies in
        the support."""
        dtype = self.dtype or torch.get_default_dtype()
        values = {n: torch.zeros(s, dtype=dtype) for n, s in self.parameters.items()}
        for element, (name, index) in self._elements().items():
            values[name][index] = self.reference[element]["mean"]
        return values

    def _elements(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {e: parse_element(e) for e in self.reference}

    @property
    def constrained_dim(self) -> int:
        """The number of constrained parameter elements (posteriordb's dimensions)."""
        return sum(math.prod(s) for s in self.parameters.values())
