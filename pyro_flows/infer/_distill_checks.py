r"""The checks of :func:`~pyro_flows.infer.distill.distill`'s arguments, all made before anything
changes: the shared training options (:func:`~pyro_flows.infer._steps.check_training_options`),
a teacher that scores (``log_prob``) and a student that samples and scores its own samples
(``rsample_and_log_prob``) in the same dimension, without shared parameters, the context rows
of conditional flows, the objective, and for ``"sampling_map"`` the same base distribution
:math:`p_0` for both flows (the objective compares base points
:math:`\|g_T(f_\phi(\varepsilon)) - \varepsilon\|^2`, which only means :math:`q_\phi = p` when
both flows push the same :math:`p_0` forward).

>>> import torch
>>> from pyro_flows import flows
>>> teacher, student = flows.maf(2, num_transforms=1), flows.iaf(2, num_transforms=1)
>>> params, context = check_distill_options(teacher, student, None, "kl", lr=1e-3, seed=0)
>>> len(params) > 0, context is None
(True, True)
>>> check_distill_options(teacher, student, None, "forward", lr=1e-3, seed=0)
Traceback (most recent call last):
...
ValueError: objective must be one of ('kl', 'sampling_map'), got 'forward'
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import as_tensor
from ..flow import Flow
from ._loop import trainable_parameters
from ._steps import check_int, check_training_options

#: what :func:`~pyro_flows.infer.distill.distill` can minimise
OBJECTIVES = ("kl", "sampling_map")


def check_distill_options(
    teacher: Any, student: Any, context: Any, objective: object, **options: Any
) -> tuple[list[Tensor], Tensor | None]:
    """Every argument of ``distill`` checked (``options``: those of
    :func:`~pyro_flows.infer._steps.check_training_options`); returns the student's trainable
    parameters and the context rows as a tensor (``None`` without context)."""
    check_training_options(**options)
    if not isinstance(student, nn.Module):
        raise TypeError(
            "student must be an nn.Module with rsample_and_log_prob (a pyro_flows.Flow), got "
            f"{type(student).__name__}"
        )
    ref = next((p for p in student.parameters() if p.requires_grad), None)
    if context is not None:
        context = as_tensor(context, "context", ref)
    _check(teacher, student, context)
    params = trainable_parameters(student, "student")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "sampling_map":
        _check_same_base(teacher, student, context)
    return params, context


def _check_same_base(teacher: nn.Module, student: nn.Module, context: Tensor | None) -> None:
    """The ``"sampling_map"`` objective compares base points: both flows need the same base."""
    for who, flow in (("teacher", teacher), ("student", student)):
        if not isinstance(flow, Flow):
            raise TypeError(
                f"objective='sampling_map' needs the {who} to be a pyro_flows.Flow (its base "
                f"points are compared), got {type(flow).__name__}: use objective='kl'"
            )
    ctx = None if context is None else context[:8]
    with torch.no_grad():
        eps = student.base_dist(ctx).sample(() if ctx is not None else (8,))
        same = torch.allclose(
            teacher._base_log_prob(eps, ctx), student._base_log_prob(eps, ctx), atol=1e-5
        )
    if not same:
        raise ValueError(
            "objective='sampling_map' needs the teacher and the student to have the same base "
            f"distribution, got {teacher.base_dist(ctx)} and {student.base_dist(ctx)}: use "
            "objective='kl'"
        )


def check_kl_options(
    teacher: Any, student: Any, num_samples: object, batch_size: object, context: Any
) -> Tensor | None:
    """The arguments of :func:`~pyro_flows.infer.distill.distillation_kl` checked (a teacher
    that scores, a student that samples, positive counts, context rows exactly when both flows
    are conditional); returns the context rows as a tensor (``None`` without context). Unlike
    :func:`check_distill_options` a flow may be scored against itself (nothing is trained).

    >>> from pyro_flows import flows
    >>> flow = flows.maf(2, num_transforms=1)
    >>> check_kl_options(flow, flow, 0, 16, None)
    Traceback (most recent call last):
    ...
    ValueError: num_samples must be a positive int, got 0 (int)
    """
    check_int(num_samples, "num_samples")
    check_int(batch_size, "batch_size")
    _check_roles(teacher, student)
    if context is not None:
        params = student.parameters() if isinstance(student, nn.Module) else ()
        ref = next((p for p in params if p.requires_grad), None)
        context = as_tensor(context, "context", ref)
    _check_context(teacher, student, context)
    return context


def _check(teacher: nn.Module, student: nn.Module, context: Tensor | None) -> None:
    """The teacher scores, the student samples, both in one dimension, with parameters of their
    own, and ``context`` rows exactly when both flows are conditional (finite, one column per
    context dimension)."""
    _check_roles(teacher, student)
    _check_distinct(teacher, student)
    _check_context(teacher, student, context)


def _check_roles(teacher: Any, student: Any) -> None:
    """The teacher has ``log_prob``, the student ``rsample_and_log_prob``, in one dimension."""
    if not callable(getattr(teacher, "log_prob", None)):
        raise TypeError(
            f"teacher must have log_prob (a pyro_flows.Flow), got {type(teacher).__name__}"
        )
    if not callable(getattr(student, "rsample_and_log_prob", None)):
        raise TypeError(
            "student must have rsample_and_log_prob (a pyro_flows.Flow), got "
            f"{type(student).__name__}"
        )
    t_dim, s_dim = getattr(teacher, "input_dim", None), getattr(student, "input_dim", None)
    if t_dim is not None and s_dim is not None and t_dim != s_dim:
        raise ValueError(f"teacher has input_dim {t_dim} but the student has input_dim {s_dim}")


def _check_distinct(teacher: nn.Module, student: nn.Module) -> None:
    """The student is a module of its own: distillation freezes the teacher and trains it."""
    if teacher is student:
        raise ValueError("teacher and student are the same module: distil into a new flow")
    teacher_params = teacher.parameters() if isinstance(teacher, nn.Module) else ()
    shared = {id(p) for p in teacher_params} & {id(p) for p in student.parameters()}
    if shared:
        raise ValueError(
            f"teacher and student share {len(shared)} parameter tensor(s): the teacher is frozen "
            "during distillation, so the student needs parameters of its own"
        )


def _check_context(teacher: Any, student: Any, context: Tensor | None) -> None:
    """``context`` rows exactly when both flows are conditional: at least one row, finite, one
    column per context dimension."""
    dims = {
        "teacher": getattr(teacher, "context_dim", None),
        "student": getattr(student, "context_dim", None),
    }
    if context is None:
        for who, dim in dims.items():
            if dim is not None:
                raise ValueError(
                    f"the {who} is conditional (context_dim={dim}): pass context= rows (N, {dim})"
                )
        return
    if context.dim() != 2 or context.shape[0] == 0:
        raise ValueError(f"context must have shape (rows, context_dim), got {tuple(context.shape)}")
    for who, dim in dims.items():
        if dim is None:
            raise ValueError(f"context= was given but the {who} is unconditional")
        if dim != context.shape[1]:
            raise ValueError(
                f"context has {context.shape[1]} columns but the {who}'s context_dim is {dim}"
            )
    if not bool(torch.isfinite(context).all()):
        raise ValueError("context has non-finite values (NaN or inf)")
