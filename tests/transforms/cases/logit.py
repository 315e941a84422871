"""Harness cases: the Logit pre-processing layer (pyro_flows.transforms.logit).

Logit's data side is bounded: its inverse accepts only ``lo < y < hi`` with
``(lo, hi) = (-alpha/(1 - 2 alpha), (1 - alpha)/(1 - 2 alpha))`` (``Logit.bounds``) and raises
``ValueError`` elsewhere, by design. The harness draws data-side points as ``1.5 * randn + 0.5``
(mostly outside), so these cases need a domain hook in ``Case`` before they can join; they then
join automatically (see ``CASES`` below). The hook, one field::

    data_bounds: tuple[float, float] | None = None  # open interval of each data coordinate

and, where ``data_bounds`` is set, the harness would use in-domain data in exactly these places
(everything else already works for Logit):

1. ``data_side()`` (used by ``build``'s prepare/batch-statistics pass and by
   ``test_round_trip_on_fresh_tensors``, ``test_log_det_matches_autograd_jacobian[inverse]``,
   ``test_every_parameter_gets_a_gradient``, ``test_no_stale_result_after_step_load_or_to``,
   ``test_training_loop_reuses_the_same_data_tensor``): e.g.
   ``lo + (hi - lo) * sigmoid(1.5 * randn + 0.5)``;
2. ``test_round_trip_on_arbitrary_inputs``: its second half inverts the drawn ``x`` as data;
   draw those from ``st.floats(lo, hi, exclude_min=True, exclude_max=True)``;
3. ``test_float32_is_finite_for_large_inputs``: data-side values ``+-1e3`` become points near
   the bounds, e.g. ``lo + (hi - lo) * [1e-6, 1e-3, 0.1, 0.5, 0.9, 1 - 1e-3, 1 - 1e-6]``;
4. ``test_two_dimensional_density_integrates_to_one``: the grid over ``[-10, 10]^2`` becomes
   the midpoint grid over ``(lo, hi)^2`` (the density vanishes smoothly at the edges, so 400
   points per axis integrate it to 1e-6), and ``inside`` counts samples in that box.

Until then the same checks run on in-domain data in tests/data/test_dequantization.py
(``test_logit_*``).
"""

from __future__ import annotations

from dataclasses import fields

from pyro_flows.transforms.logit import Logit

from . import Case

_SETTINGS = [
    ("logit-d2", 2, 0.05),
    ("logit-d3-alpha1e-6", 3, 1e-6),
    ("logit-d1-alpha0", 1, 0.0),
]

#: True once ``Case`` has the ``data_bounds`` hook described above.
HAS_DOMAIN_HOOK = "data_bounds" in {f.name for f in fields(Case)}

#: The Logit cases, ready for the hook: (id, input_dim, alpha, data bounds).
PENDING: list[tuple[str, int, float, tuple[float, float]]] = [
    (case_id, dim, alpha, Logit(dim, alpha=alpha).bounds) for case_id, dim, alpha in _SETTINGS
]

CASES: list[Case] = (
    [
        Case(
            case_id,
            lambda dim=dim, alpha=alpha: Logit(dim, alpha=alpha),
            dim,
            data_bounds=bounds,  # type: ignore[call-arg]
        )
        for case_id, dim, alpha, bounds in PENDING
    ]
    if HAS_DOMAIN_HOOK
    else []
)
