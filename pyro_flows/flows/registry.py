"""The one table of flow builders: name -> :class:`BuilderSpec`.

:class:`~pyro_flows.infer.AutoFlow`, :mod:`pyro_flows.compare`, the CLI and the tests all read
this table, so a new builder joins every one of them by one :func:`register_builder` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..flow import Flow
from . import (
    block_autoregressive,
    continuous,
    image,
    iterative_gaussianization,
    monotonic,
    polynomial,
    residual,
    sylvester_flow,
    vector,
)

__all__ = ["BUILDERS", "BuilderSpec", "builder_names", "get_builder", "register_builder"]


@dataclass(frozen=True)
class BuilderSpec:
    """One builder and what it is good for.

    :param name: the registry key (the builder's function name).
    :param build: ``build(input_dim_or_shape, ...) -> Flow``.
    :param event: ``"vector"`` (``input_dim``) or ``"image"`` (``(C, H, W)``).
    :param guide: usable as a variational guide (:class:`~pyro_flows.infer.AutoFlow`): sampling
        with its log density is reparameterised and cheap enough for SVI steps.
    :param sample_cost: cost of drawing a sample, in words (base -> data).
    :param density_cost: cost of ``log_prob`` of an external point, in words (data -> base).
    """

    name: str
    build: Callable[..., Flow]
    event: str = "vector"
    guide: bool = False
    sample_cost: str = "one pass per layer"
    density_cost: str = "one pass per layer"


BUILDERS: dict[str, BuilderSpec] = {}


def register_builder(spec: BuilderSpec) -> BuilderSpec:
    """Add ``spec`` to :data:`BUILDERS` (a name can be registered once)."""
    if spec.event not in ("vector", "image"):
        raise ValueError(f"BuilderSpec.event must be 'vector' or 'image', got {spec.event!r}")
    if spec.name in BUILDERS:
        raise ValueError(f"a builder named {spec.name!r} is already registered")
    BUILDERS[spec.name] = spec
    return spec


def builder_names(event: str | None = None, guide: bool | None = None) -> list[str]:
    """Registered names, in registration order, optionally only one event kind or guides."""
    return [
        name
        for name, spec in BUILDERS.items()
        if (event is None or spec.event == event) and (guide is None or spec.guide == guide)
    ]


def get_builder(name: str, event: str | None = None) -> Callable[..., Flow]:
    """The builder registered as ``name``; a clear ``ValueError`` naming the choices otherwise."""
    names = builder_names(event)
    if not isinstance(name, str) or name not in names:
        kind = f"{event} " if event else ""
        raise ValueError(f"unknown {kind}flow builder {name!r}; expected one of {names}")
    return BUILDERS[name].build


_AR = "input_dim network passes per layer"
for _spec in (
    BuilderSpec("nice", vector.nice, guide=True),
    BuilderSpec("realnvp", vector.realnvp, guide=True),
    BuilderSpec("maf", vector.maf, guide=True, sample_cost=_AR),
    BuilderSpec("iaf", vector.iaf, guide=True, density_cost=_AR),
    BuilderSpec("nsf", vector.nsf, guide=True, sample_cost=f"{_AR} (coupling=True: one)"),
    BuilderSpec("planar", vector.planar, guide=True, density_cost="a scalar root solve per layer"),
    BuilderSpec("radial", vector.radial, guide=True, density_cost="closed form per layer"),
    BuilderSpec(
        "sylvester",
        sylvester_flow.sylvester,
        guide=True,
        sample_cost="closed form per layer",
        density_cost="num_vectors sequential scalar root solves per layer",
    ),
    BuilderSpec(
        "bnaf",
        block_autoregressive.bnaf,
        # not a default guide: a gated layer cannot start as the exact identity AutoFlow needs,
        # and its default direction samples by root solves
        guide=False,
        sample_cost="a scalar root solve per coordinate and layer (direction='sampling': one pass)",
        density_cost="one pass per layer (direction='sampling': root solves)",
    ),
    BuilderSpec(
        "sospf",
        polynomial.sospf,
        sample_cost=f"{_AR}, each with a scalar root solve per sample",
    ),
    BuilderSpec(
        "bpf", polynomial.bpf, sample_cost=f"{_AR}, each with a scalar root solve per sample"
    ),
    BuilderSpec(
        "unaf",
        monotonic.unaf,
        sample_cost=f"{_AR}, each with a scalar root solve per sample",
        density_cost="one MADE pass and a Gauss-Legendre quadrature per layer",
    ),
    BuilderSpec(
        "iresnet",
        residual.iresnet,
        sample_cost="a fixed-point solve per block (typically 10-100 MLP passes)",
        density_cost="one MLP pass per block plus the log-det (exact or a power series)",
    ),
    BuilderSpec(
        "residual_flow",
        residual.residual_flow,
        sample_cost="a fixed-point solve per block (typically 10-100 MLP passes)",
        density_cost="one MLP pass per block plus the log-det (exact, or a roulette estimate)",
    ),
    BuilderSpec(
        "gaussianization",
        iterative_gaussianization.gaussianization,
        sample_cost="a scalar root solve per coordinate and layer",
    ),
    BuilderSpec(
        "cnf",
        continuous.cnf,
        sample_cost="an ODE solve (adaptive steps)",
        density_cost="an ODE solve with a trace estimate",
    ),
    BuilderSpec("glow", image.glow, event="image"),
    BuilderSpec("realnvp_image", image.realnvp_image, event="image"),
    BuilderSpec("mintnet", image.mintnet, event="image", sample_cost="fixed-point iterations"),
    BuilderSpec("idf", image.idf, event="image"),
):
    register_builder(_spec)
