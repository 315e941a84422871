r"""The one registry of the methods of ``pyro-flows compare``: :data:`METHOD_SPECS` maps each
name to a :class:`MethodSpec` (its runner and what it needs), and every list of names the
package uses is derived from it.

=============================  ==================================================================
derived name                   which methods
=============================  ==================================================================
:data:`METHODS`                ``default``: run when no method is named, in the order of the table
:data:`EXTRA_METHODS`          not ``default``: run only when named
:data:`ALL_METHODS`            every name, the default set first
:data:`FLOW_METHODS`           ``shared_flow``: need the shared flow, trained by ``settings.flow``
:data:`FLOW_ROWS`              ``flow_row``: draw from a flow, mapped to ``fit_method``
:data:`OPTIONAL_FLOW_METHODS`  ``optional_flow``: use the shared flow when one was trained
=============================  ==================================================================

Adding a method takes a runner (:mod:`~pyro_flows.compare.method_runners`, unless an existing
one fits), one :class:`MethodSpec` here (figures read its ``label``), and its budget in
:mod:`~pyro_flows.compare.settings` when it needs one of its own.

Example:

>>> METHOD_SPECS["flow_mcmc"].fit_method, METHOD_SPECS["ais"].optional_flow
('flow_mcmc', True)
>>> ALL_METHODS == tuple(METHOD_SPECS)
True

References: the methods of :mod:`pyro_flows.infer` (see :mod:`~pyro_flows.compare.methods`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from ..infer import mala, nuts, random_walk_metropolis
from .method_runners import (
    Runner,
    run_ais,
    run_chains,
    run_flow_draws,
    run_importance,
    run_neutra,
)

__all__ = [
    "METHOD_SPECS",
    "METHODS",
    "EXTRA_METHODS",
    "ALL_METHODS",
    "FLOW_METHODS",
    "FLOW_ROWS",
    "OPTIONAL_FLOW_METHODS",
    "MethodSpec",
    "parse_methods",
]


@dataclass(frozen=True)
class MethodSpec:
    r"""What ``pyro-flows compare`` needs to know about one method.

    :ivar name: the name on the command line and in the table (lower case).
    :ivar label: its name in figures' legends and titles.
    :ivar run: its :data:`~pyro_flows.compare.method_runners.Runner`,
        ``run(name, target, settings, *, trained, seed, progress) -> MethodRun``.
    :ivar default: run when no method is named (:data:`METHODS`), else only when named
        (:data:`EXTRA_METHODS`).
    :ivar shared_flow: needs the shared flow trained by ``settings.flow`` (:data:`FLOW_METHODS`).
    :ivar optional_flow: uses the shared flow when one was trained, and runs without it
        otherwise (:data:`OPTIONAL_FLOW_METHODS`).
    :ivar flow_row: its draws are a trained flow's own (:data:`FLOW_ROWS`).
    :ivar fit_method: for a flow row that trains its own flow, the
        :func:`~pyro_flows.infer.fit_target` method that trains it (``None``: the shared flow).

    Example:

    >>> spec = METHOD_SPECS["neutra"]
    >>> spec.default, spec.shared_flow, spec.flow_row
    (True, True, False)

    References: see the module docstring.
    """

    name: str
    label: str
    run: Runner
    default: bool = True
    shared_flow: bool = False
    optional_flow: bool = False
    flow_row: bool = False
    fit_method: str | None = None


#: name -> :class:`MethodSpec`, the default set first and in the order of the table.
METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("flow", "flow q (reverse KL)", run_flow_draws, shared_flow=True, flow_row=True),
        MethodSpec("nuts", "NUTS", partial(run_chains, sampler=nuts)),
        MethodSpec("neutra", "NeuTra", run_neutra, shared_flow=True),
        MethodSpec("mh", "MH", partial(run_chains, sampler=random_walk_metropolis)),
        MethodSpec("mala", "MALA", partial(run_chains, sampler=mala)),
        MethodSpec("is", "IS, flow proposal", run_importance, shared_flow=True),
        MethodSpec("ais", "AIS, weighted particles", run_ais, optional_flow=True),
        # run only when named: about 20x the gradients of the reverse-KL flow, and no chains to
        # start where the mode search finds no local maximum (see EXTRA_METHODS)
        MethodSpec(
            "flow_mcmc",
            "flow q (flow MCMC, forward KL)",
            run_flow_draws,
            default=False,
            flow_row=True,
            fit_method="flow_mcmc",
        ),
    )
}

#: The default set, in the order of the table: what ``compare`` and the command line run when no
#: method is named (``ais`` costs 1-3 s on a 2-D target in ``--quick``).
METHODS: tuple[str, ...] = tuple(n for n, s in METHOD_SPECS.items() if s.default)
#: The methods run only when named: ``flow_mcmc`` costs about 20x the gradients of the
#: reverse-KL flow and 1.7-2.7x its seconds (``--quick`` on mixture, u1, gmm40), and cannot train
#: where the mode search finds no local maximum to start its chains at (funnel, gaussian100:
#: ``ValueError``), so a default run of those targets would fail.
EXTRA_METHODS: tuple[str, ...] = tuple(n for n, s in METHOD_SPECS.items() if not s.default)
#: Every name ``compare`` and the command line accept, the default set first.
ALL_METHODS: tuple[str, ...] = METHODS + EXTRA_METHODS
#: The methods that need the shared trained flow (``settings.flow``, reverse KL by default).
FLOW_METHODS: frozenset[str] = frozenset(n for n, s in METHOD_SPECS.items() if s.shared_flow)
#: The rows whose draws are a trained flow's own, with the
#: :func:`~pyro_flows.infer.fit_target` method that trains it (``None``: ``settings.flow``'s,
#: the shared flow); ``flow_mcmc`` trains its own.
FLOW_ROWS: dict[str, str | None] = {n: s.fit_method for n, s in METHOD_SPECS.items() if s.flow_row}
#: The methods that use the trained flow when one is trained, and run without it otherwise.
OPTIONAL_FLOW_METHODS: frozenset[str] = frozenset(
    n for n, s in METHOD_SPECS.items() if s.optional_flow
)


def parse_methods(methods: str | Iterable[str] | None) -> tuple[str, ...]:
    """Method names from ``"flow,nuts"`` or a sequence, checked, duplicates dropped, in the
    order given; ``None`` means the default set, :data:`METHODS` (the names of
    :data:`ALL_METHODS` are accepted).

    >>> parse_methods("nuts, neutra"), parse_methods(None) == METHODS
    (('nuts', 'neutra'), True)

    References: the method names of :mod:`pyro_flows.infer` (see the module docstring).
    """
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        names = [m.strip().lower() for m in methods.split(",")]
    else:
        try:
            names = [str(m).strip().lower() for m in methods]
        except TypeError:
            raise TypeError(
                f"methods must be a comma-separated str or a sequence of names, got "
                f"{type(methods).__name__}"
            ) from None
    names = [m for m in names if m]
    if not names:
        raise ValueError(f"no method given; valid methods: {', '.join(ALL_METHODS)}")
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(map(repr, unknown))}; valid methods: "
            f"{', '.join(ALL_METHODS)}"
        )
    return tuple(dict.fromkeys(names))
