r"""Per-target defaults of ``pyro-flows compare``: which flow, how long to train it, how long to
run each sampler, and the smaller ``--quick`` versions.

Every method on a target gets a fixed budget chosen so that the full comparison finishes in a few
minutes on two CPU cores and the quick one in seconds. The flow is trained by reverse KL
(:func:`~pyro_flows.infer.fit_target`),

.. math::

    \max_\theta\ \mathrm{ELBO}(\theta) = \mathbb E_{q_\theta}\bigl[\log\tilde p(z) -
    \log q_\theta(z)\bigr] = \log Z - \mathrm{KL}(q_\theta \,\|\, p),

for ``steps`` Adam steps of ``batch_size`` draws (``steps * batch_size`` target gradients), with
annealing (:math:`\beta` rising from 0.01 to 1 over the fraction ``anneal`` of the steps) where
the target has separated modes. Sampling-fast flows are used (coupling or IAF layers: one network
pass per layer from base to data, which is the direction reverse KL and NeuTra need).

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015
  (reverse KL on energies, annealing). https://arxiv.org/abs/1505.05770
- M. D. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan.
  *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
  https://arxiv.org/abs/1903.03704
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import flows as _flows
from .._numbers import check_bool, check_fraction, check_positive_number
from .._validation import check_positive_int
from ..flow import Flow
from ..targets import TARGETS
from ..transforms.linear import InvertibleLinear

__all__ = [
    "AISSettings",
    "FlowSettings",
    "SamplerSettings",
    "TargetSettings",
    "SETTINGS",
    "QUICK_SETTINGS",
    "settings_for",
]


def _check_mapping(value: object, name: str) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict of keyword arguments, got {type(value).__name__} ({value!r})"
        )


def _linear(input_dim: int, **options: Any) -> Flow:
    """A single dense affine layer :math:`z = W\\varepsilon + b` (any Gaussian exactly)."""
    return Flow([InvertibleLinear(input_dim, bias=True, **options)])


_BUILDERS = {
    **{name: _flows.BUILDERS[name].build for name in _flows.builder_names(event="vector")},
    "linear": _linear,
}


@dataclass(frozen=True)
class FlowSettings:
    r"""A flow builder with its options and the reverse-KL training budget.

    .. math::

        \text{target gradients} = \texttt{steps} \times \texttt{batch\_size}.

    :param builder: ``"realnvp"``, ``"iaf"``, ``"nsf"``, ``"maf"`` (builders of
        :mod:`pyro_flows.flows`) or ``"linear"`` (one dense affine layer, :math:`W\varepsilon +
        b`, exact for Gaussians).
    :param options: keyword arguments of the builder (``num_transforms``, ``hidden_dims``, ...).
    :param steps: Adam steps of :func:`~pyro_flows.infer.fit_target`.
    :param batch_size: flow draws per step.
    :param lr: Adam learning rate (cosine-decayed to 0).
    :param anneal: fraction of the steps over which the inverse temperature rises to 1, or
        ``None``.
    :param method: :func:`~pyro_flows.infer.fit_target`'s ``method``; the comparison's ``flow``
        row is reverse KL by default (``"auto"`` or ``"flow_mcmc"`` trains the mass-covering
        way where the target has several modes, at several times the gradients).

    Example:

    >>> s = FlowSettings("realnvp", {"num_transforms": 2, "hidden_dims": (8,)}, steps=10)
    >>> s.build(2).input_dim, s.grad_evals, s.describe()
    (2, 2560, 'realnvp(num_transforms=2, hidden_dims=(8,)), 10 steps x 256 draws, lr 0.003')

    References: Rezende & Mohamed, ICML 2015 (see the module docstring).
    """

    builder: str
    options: dict[str, Any] = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 3e-3
    anneal: float | None = None
    method: str = "reverse_kl"

    def __post_init__(self) -> None:
        if not isinstance(self.builder, str) or self.builder not in _BUILDERS:
            raise ValueError(
                f"FlowSettings.builder must be one of {sorted(_BUILDERS)}, got {self.builder!r}"
            )
        _check_mapping(self.options, "FlowSettings.options")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_number(self.lr, "lr")
        if self.anneal is not None:
            check_fraction(self.anneal, "anneal")
        from ..infer.fit_target import METHODS

        if self.method not in METHODS:
            raise ValueError(f"FlowSettings.method must be one of {METHODS}, got {self.method!r}")

    def build(self, dim: int) -> Flow:
        """A fresh, untrained flow on :math:`\\mathbb R^{dim}` (initialised from torch's RNG)."""
        return _BUILDERS[self.builder](dim, **self.options)

    @property
    def grad_evals(self) -> int:
        """Target gradients reverse-KL training spends: ``steps * batch_size`` (``flow_mcmc``
        spends about ``5 x levels`` times more, counted in its ``history.grad_evals``)."""
        return self.steps * self.batch_size

    def describe(self) -> str:
        """One line: builder, options, budget (and the training method unless reverse KL)."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        unit = "chains per level" if self.method == "flow_mcmc" else "draws"
        text = (
            f"{self.builder}({opts}), {self.steps} steps x {self.batch_size} {unit}, "
            f"lr {self.lr:g}"
        )
        if self.anneal is not None:
            text += f", annealed over {self.anneal:.0%} of the steps"
        if self.method != "reverse_kl":
            text += f", fit_target(method={self.method!r})"
        return text


@dataclass(frozen=True)
class SamplerSettings:
    r"""The budget of one MCMC method: chains, warm-up and kept draws per chain, options.

    .. math::

        \text{draws kept} = \texttt{num\_chains} \times \texttt{num\_samples}.

    :param num_samples: draws kept per chain.
    :param warmup: adaptation iterations per chain (discarded).
    :param num_chains: chains (NUTS/NeuTra: run one after another; MH/MALA: vectorised).
    :param options: further keyword arguments of the sampler (e.g. ``target_accept``).

    Example:

    >>> SamplerSettings(500, 300, 2, {"target_accept": 0.9}).describe()
    '2 chains x (300 warm-up + 500 draws), target_accept=0.9'

    References: M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
    """

    num_samples: int = 1000
    warmup: int = 500
    num_chains: int = 2
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive_int(self.num_samples, "num_samples")
        check_positive_int(self.warmup, "warmup", minimum=0)
        check_positive_int(self.num_chains, "num_chains")
        _check_mapping(self.options, "SamplerSettings.options")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the samplers of :mod:`pyro_flows.infer`."""
        return {
            "num_samples": self.num_samples,
            "warmup": self.warmup,
            "num_chains": self.num_chains,
            **self.options,
        }

    def describe(self) -> str:
        """One line: chains, warm-up, draws, options."""
        text = f"{self.num_chains} chains x ({self.warmup} warm-up + {self.num_samples} draws)"
        if self.options:
            text += ", " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return text


@dataclass(frozen=True)
class AISSettings:
    r"""The budget of the ``ais`` method: annealed importance sampling
    (:func:`~pyro_flows.infer.annealed_importance_sampling`) from the trained flow (a standard
    Normal when no flow-based method ran) to the target.

    .. math::

        \text{target gradients} \approx \texttt{num\_samples} \times \texttt{num\_steps}
        \times \texttt{num\_leapfrog\_steps}.

    :param num_samples: particles :math:`n`.
    :param num_steps: annealing temperatures :math:`T` (linear :math:`\beta_t = t/T`).
    :param num_leapfrog_steps: leapfrog steps of the one HMC move per temperature.

    Example:

    >>> AISSettings(1024, 64).describe(), AISSettings(1024, 64).grad_evals
    ('1024 particles x 64 temperatures x 5 leapfrog steps', 327680)

    References: R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 2001.
    """

    num_samples: int = 2048
    num_steps: int = 256
    num_leapfrog_steps: int = 5

    def __post_init__(self) -> None:
        check_positive_int(self.num_samples, "num_samples", minimum=10)
        check_positive_int(self.num_steps, "num_steps")
        check_positive_int(self.num_leapfrog_steps, "num_leapfrog_steps")

    @property
    def grad_evals(self) -> int:
        """Target gradients of the annealing, about ``n x T x leapfrog`` (the exact count of a
        run is its ``num_grad_evals``)."""
        return self.num_samples * self.num_steps * self.num_leapfrog_steps

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~pyro_flows.infer.annealed_importance_sampling`."""
        return {
            "num_samples": self.num_samples,
            "num_steps": self.num_steps,
            "num_leapfrog_steps": self.num_leapfrog_steps,
        }

    def describe(self) -> str:
        """One line: particles, temperatures, leapfrog steps."""
        return (
            f"{self.num_samples} particles x {self.num_steps} temperatures x "
            f"{self.num_leapfrog_steps} leapfrog steps"
        )


@dataclass(frozen=True)
class TargetSettings:
    r"""Everything ``compare`` needs for one target: the flow, the samplers, the draw counts.

    :param flow: the flow and its reverse-KL training (:class:`FlowSettings`).
    :param nuts: plain NUTS on the target (on :math:`\mathbb R^D`; a box target through
        ``target.unconstrained()``).
    :param neutra: NUTS in the trained flow's base space (Hoffman et al., 2019).
    :param mh: random-walk Metropolis (vectorised chains).
    :param mala: Metropolis-adjusted Langevin (vectorised chains).
    :param flow_samples: fresh flow draws for the flow's own diagnostics (ELBO,
        :math:`\log\hat Z`, ESS fraction, :math:`\hat k`, moments of :math:`q`).
    :param is_samples: proposal draws of importance sampling with the flow.
    :param ais: particles and temperatures of annealed importance sampling (:class:`AISSettings`).
    :param target_options: keyword arguments of :func:`~pyro_flows.targets.get_target`.

    Example:

    >>> s = settings_for("funnel", quick=True)
    >>> s.flow.builder, s.nuts.num_chains
    ('iaf', 2)

    References: Hoffman et al., 2019 (see the module docstring).
    """

    flow: FlowSettings
    nuts: SamplerSettings = SamplerSettings(1000, 500, 2)
    neutra: SamplerSettings = SamplerSettings(
        500, 300, 2, {"target_accept": 0.9, "max_tree_depth": 8}
    )
    mh: SamplerSettings = SamplerSettings(5000, 2000, 4)
    mala: SamplerSettings = SamplerSettings(2000, 1000, 4)
    flow_samples: int = 20_000
    is_samples: int = 20_000
    ais: AISSettings = AISSettings()
    target_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.flow, FlowSettings):
            raise TypeError(
                f"flow must be a FlowSettings, got {type(self.flow).__name__} ({self.flow!r})"
            )
        for name in ("nuts", "neutra", "mh", "mala"):
            value = getattr(self, name)
            if not isinstance(value, SamplerSettings):
                raise TypeError(
                    f"{name} must be a SamplerSettings, got {type(value).__name__} ({value!r})"
                )
        check_positive_int(self.flow_samples, "flow_samples")
        check_positive_int(self.is_samples, "is_samples")
        if not isinstance(self.ais, AISSettings):
            raise TypeError(
                f"ais must be an AISSettings, got {type(self.ais).__name__} ({self.ais!r})"
            )
        _check_mapping(self.target_options, "target_options")

    def sampler(self, method: str) -> SamplerSettings:
        """The :class:`SamplerSettings` of ``"nuts"``, ``"neutra"``, ``"mh"`` or ``"mala"``."""
        if method not in ("nuts", "neutra", "mh", "mala"):
            raise ValueError(
                f"no sampler settings for method {method!r}; the samplers are 'nuts', 'neutra', "
                "'mh' and 'mala'"
            )
        return getattr(self, method)


_REALNVP_2D = {"num_transforms": 5, "hidden_dims": (64, 64)}

#: The full per-target defaults (documented in ``docs/compare.rst``).
SETTINGS: dict[str, TargetSettings] = {
    "u1": TargetSettings(
        flow=FlowSettings("nsf", {"num_transforms": 4, "coupling": True}, steps=3000),
        neutra=SamplerSettings(200, 100, 2, {"target_accept": 0.9, "max_tree_depth": 6}),
    ),
    "u2": TargetSettings(flow=FlowSettings("realnvp", _REALNVP_2D, steps=3000)),
    "u3": TargetSettings(flow=FlowSettings("realnvp", _REALNVP_2D, steps=3000)),
    "u4": TargetSettings(flow=FlowSettings("realnvp", _REALNVP_2D, steps=3000)),
    "funnel": TargetSettings(
        # scale="exp", as the README recommends for funnels: the width of x is exp(v / 2), and
        # a softplus scale cannot follow it (3 seeds, 1000 steps: k-hat 0.41-0.48 against
        # 0.65-0.71, sd error 19-24% against 46-51%, KL 0.009-0.014 against 0.021-0.025 nats)
        flow=FlowSettings(
            "iaf",
            {"num_transforms": 4, "hidden_dims": (64, 64), "scale": "exp"},
            steps=1000,
            batch_size=64,
        ),
        nuts=SamplerSettings(500, 500, 2),
        # 0.99: through the exp-scale flow, 0.95 left one divergence on 2 of 3 seeds
        neutra=SamplerSettings(500, 300, 2, {"target_accept": 0.99}),
        flow_samples=100_000,
        is_samples=100_000,
    ),
    "banana": TargetSettings(flow=FlowSettings("realnvp", _REALNVP_2D, steps=2000)),
    "ring": TargetSettings(flow=FlowSettings("realnvp", _REALNVP_2D, steps=3000)),
    "mixture": TargetSettings(
        flow=FlowSettings("realnvp", _REALNVP_2D, steps=2000, anneal=0.5),
        neutra=SamplerSettings(250, 150, 2, {"target_accept": 0.9, "max_tree_depth": 6}),
    ),
    "gaussian100": TargetSettings(
        flow=FlowSettings("linear", {}, steps=4000, batch_size=512, lr=5e-2),
        nuts=SamplerSettings(300, 300, 2, {"dense_mass": True, "max_tree_depth": 8}),
        neutra=SamplerSettings(300, 200, 2, {"target_accept": 0.9, "max_tree_depth": 8}),
        mh=SamplerSettings(5000, 5000, 4),
        mala=SamplerSettings(2000, 2000, 4),
    ),
    "gmm40": TargetSettings(
        flow=FlowSettings("realnvp", _REALNVP_2D, steps=3000, anneal=0.5),
        neutra=SamplerSettings(250, 150, 2, {"target_accept": 0.9, "max_tree_depth": 6}),
    ),
    "many_well": TargetSettings(
        flow=FlowSettings(
            "realnvp", {"num_transforms": 8, "hidden_dims": (128, 128)}, steps=3000, anneal=0.5
        ),
        nuts=SamplerSettings(500, 500, 2),
        neutra=SamplerSettings(250, 150, 2, {"target_accept": 0.9, "max_tree_depth": 6}),
    ),
}


def _quick(s: TargetSettings, flow_steps: int) -> TargetSettings:
    return replace(
        s,
        flow=replace(s.flow, steps=flow_steps),
        nuts=replace(
            s.nuts,
            num_samples=100,
            warmup=100,
            options={
                **s.nuts.options,
                "max_tree_depth": min(8, s.nuts.options.get("max_tree_depth", 8)),
            },
        ),
        neutra=replace(
            s.neutra,
            num_samples=30,
            warmup=30,
            options={**s.neutra.options, "max_tree_depth": 4},
        ),
        mh=replace(s.mh, num_samples=1000, warmup=1000),
        mala=replace(s.mala, num_samples=500, warmup=500),
        flow_samples=4000,
        is_samples=4000,
        ais=replace(s.ais, num_samples=1024, num_steps=64),
    )


#: The ``--quick`` versions (for CI): short training, a few hundred draws per method.
QUICK_SETTINGS: dict[str, TargetSettings] = {
    "u1": _quick(SETTINGS["u1"], 500),
    "u2": _quick(SETTINGS["u2"], 500),
    "u3": _quick(SETTINGS["u3"], 500),
    "u4": _quick(SETTINGS["u4"], 500),
    "funnel": _quick(SETTINGS["funnel"], 300),
    "banana": _quick(SETTINGS["banana"], 500),
    "ring": _quick(SETTINGS["ring"], 500),
    "mixture": _quick(SETTINGS["mixture"], 600),
    "gaussian100": _quick(SETTINGS["gaussian100"], 500),
    "gmm40": _quick(SETTINGS["gmm40"], 500),
    "many_well": _quick(SETTINGS["many_well"], 300),
}


def settings_for(target: str, quick: bool = False) -> TargetSettings:
    r"""The :class:`TargetSettings` of a target of :data:`~pyro_flows.targets.TARGETS`.

    :param target: the target's short name (case-insensitive).
    :param quick: the small ``--quick`` budget instead of the full one.
    :raises ValueError: for an unknown name, listing the valid ones.
    :raises TypeError: for a ``target`` that is not a str or a ``quick`` that is not a bool.

    Example:

    >>> settings_for("u1").flow.steps, settings_for("u1", quick=True).flow.steps
    (3000, 500)

    References: Rezende & Mohamed, ICML 2015 (see the module docstring).
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, got {type(target).__name__}")
    check_bool(quick, "quick")
    key = target.strip().lower()
    if key not in SETTINGS:
        raise ValueError(f"unknown target {target!r}; valid names: {', '.join(TARGETS)}")
    return (QUICK_SETTINGS if quick else SETTINGS)[key]
