r"""One step of :func:`~pyro_flows.infer.distill.distill` and the frozen teacher around the loop.

A step draws :math:`B` base points :math:`\varepsilon_b \sim p_0`, pushes them through the
student in one base -> data pass, :math:`x_b = f_\phi(\varepsilon_b)` with
:math:`\log q_\phi(x_b)`, scores them with the teacher's one density pass (:math:`\log p(x_b)`
and, for ``"sampling_map"``, the base point :math:`g_T(x_b)` the teacher's sampler would start
from), and takes the guarded Adam step of :class:`~pyro_flows.infer._steps.StepTraining` on

.. math::

    L_{\mathrm{kl}} = \frac1B \sum_b \big[\log q_\phi(x_b) - \log p(x_b)\big]
    \quad\text{or}\quad
    L_{\mathrm{map}} = \frac1B \sum_b \big\| g_T(x_b) - \varepsilon_b \big\|^2 .

A NaN/inf sample, density or gradient stops the training with the student's last good
parameters (:meth:`~pyro_flows.infer._steps.StepTraining.fail`).

>>> import torch
>>> from pyro_flows import flows
>>> teacher = flows.maf(2, num_transforms=1)
>>> with frozen_teacher(teacher):
...     frozen = [p.requires_grad for p in teacher.parameters()], teacher.training
>>> any(frozen[0]), frozen[1], all(p.requires_grad for p in teacher.parameters())
(False, False, True)

References: A. van den Oord et al., *Parallel WaveNet: Fast High-Fidelity Speech Synthesis*,
ICML 2018, sec. 3. https://arxiv.org/abs/1711.10433
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..flow import Flow
from ._steps import StepTraining


@contextmanager
def frozen_teacher(teacher: Any) -> Iterator[None]:
    """The teacher frozen for the duration (``requires_grad`` off, eval mode), its flags and
    mode restored however the block ends (nothing to do for a teacher that is no module)."""
    is_module = isinstance(teacher, nn.Module)
    flags = [(p, p.requires_grad) for p in teacher.parameters()] if is_module else []
    training = teacher.training if is_module else False
    for p, _ in flags:
        p.requires_grad_(False)
    if is_module:
        teacher.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if is_module:
            teacher.train(training)


def student_draws(
    student: Flow, batch_size: int, context: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Base noise ``eps``, the student's samples ``x = f(eps)`` and ``log q(x)`` in one pass."""
    if context is None:
        d = student.base_dist()
        eps = d.rsample((batch_size,))
    else:
        d = student.base_dist(context)
        eps = d.rsample()
    log_q = student._base_log_prob(eps, context)
    x = eps
    for t in student.transforms:
        x, ld = t.forward_and_log_det(x, context if t.context_dim else None)
        log_q = log_q - ld
    return eps, x, log_q


class DistillStep:
    """``distill``'s step on ``run`` (a :class:`~pyro_flows.infer._steps.StepTraining` of the
    student): calling it takes one guarded step and records the step's objective and batch KL
    in ``run.history``; :meth:`shown` is what the progress bar shows."""

    def __init__(
        self,
        teacher: Any,
        student: Any,
        run: StepTraining,
        *,
        objective: str,
        batch_size: int,
        context: Tensor | None,
        lr: float,
        clip_grad_norm: float | None,
    ) -> None:
        self.teacher, self.student, self.run, self.objective = teacher, student, run, objective
        self.batch_size, self.context = batch_size, context
        self.lr, self.clip_grad_norm = lr, clip_grad_norm

    def fail(self, what: str, stopped: str = "non-finite loss") -> FloatingPointError:
        """The student back to its last good parameters; the error to raise."""
        return self.run.fail(
            stopped,
            f"distill: {what} at step {self.run.step}; the student holds the last good parameters "
            f"(lower lr, now {self.lr}, or clip_grad_norm, now {self.clip_grad_norm})",
        )

    def _losses(self, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        """The minimised objective and the batch KL on fresh student draws."""
        student, teacher, kl = self.student, self.teacher, self.objective == "kl"
        if kl:
            eps = None
            shape = (self.batch_size,) if ctx is None else ()
            x, log_q = student.rsample_and_log_prob(shape, context=ctx)
        else:
            eps, x, log_q = student_draws(student, self.batch_size, ctx)
        if not bool(torch.isfinite(log_q).all() and torch.isfinite(x).all()):
            raise self.fail("the student's samples or log densities became non-finite")
        if kl:
            log_p = teacher.log_prob(x) if ctx is None else teacher.log_prob(x, ctx)
        else:
            z, log_p = teacher.base_and_log_prob(x, ctx)
        if not bool(torch.isfinite(log_p).all()):
            raise self.fail("the teacher's log density of the student's samples is non-finite")
        batch_kl = (log_q - log_p).mean()
        return (batch_kl if kl else (z - eps).pow(2).flatten(1).sum(-1).mean()), batch_kl

    def __call__(self) -> None:
        """One step: draws, losses, the guarded update, the history."""
        context, ctx = self.context, None
        if context is not None:
            rows = torch.randint(0, len(context), (self.batch_size,), device=context.device)
            ctx = context[rows]
        loss, batch_kl = self._losses(ctx)
        if not self.run.update(loss, self.clip_grad_norm):
            raise self.fail("non-finite gradient (NaN/inf global norm)", "non-finite gradient")
        history = self.run.history
        history.loss.append(float(loss.detach()))
        history.kl.append(float(batch_kl.detach()))

    def shown(self) -> dict[str, str]:
        """The progress bar's postfix: the last batch KL (and the sampling-map loss)."""
        history = self.run.history
        shown = {"kl": f"{history.kl[-1]:.4f}"}
        if self.objective != "kl":
            shown["map"] = f"{history.loss[-1]:.4f}"
        return shown
