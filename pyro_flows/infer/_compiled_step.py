r"""The compiled batch loss of :func:`~pyro_flows.infer.fit.fit`: ``torch.compile`` of
:math:`\ell_b = -\frac{1}{|b|}\sum_{n \in b} \log q_\theta(x_n \mid c_n)` (forward, and its
backward through AOTAutograd), with CUDA graphs on CUDA (``mode="reduce-overhead"``), chosen
when the run is long enough to pay for the compilation, and eager whenever it fails.

The eager step spends much of its time in Python and in small kernels; compiling fuses the
elementwise ones (the matrix products stay as they are). What it costs and when it pays,
measured with ``fit`` side by side on a 2-core x86 CPU under heavy load, one thread, batches of
512, the builders' default MAF, RealNVP and NSF in 2 and 16 dimensions (the table is in
``docs/infer.rst``, section "Compiled training"):

* compiling (the first compiled step, forward and backward) took 70-160 s the first time,
  about 10 s when Inductor's on-disk cache already held the same graph, and nothing for a
  second flow of the same architecture in the same process (the graph is reused);
* a compiled step was 1.2-2.3 times faster than an eager one (NSF gains most).

Compiling pays once the eager run would last longer than :math:`C / (1 - 1/s)` seconds
(compile time :math:`C`, per-step speed-up :math:`s`): 190-610 s of eager training for the
flows measured. ``compile="auto"`` times the first :data:`PROBE_STEPS` eager steps,
estimates the eager time of the rest of the run (``max_time`` caps it; early stopping may end
it sooner) and compiles when that exceeds :data:`AUTO_MIN_EAGER_SECONDS`; ``True`` compiles
from the first step, ``False`` never does.

What stays eager, so that every guarantee of the eager step holds: the finiteness checks of
the loss and of the global gradient norm (one host sync each, outside the compiled region),
gradient clipping, AdamW, the schedule, checkpoints, and batches of another size than a
full one (the short last batch of an epoch: no second compilation). The data were checked once
(shapes, NaN/inf) before the first step, so a :class:`~pyro_flows.Flow` is scored in the
compiled region by its inverse pass without the per-call checks (which would break the graph
at every ``bool(torch.isfinite(x).all())``); a non-finite compiled loss is scored again
eagerly, so that a float overflow raises the same ``ValueError`` as in the eager step.
A compilation that fails (at the first forward or the first backward) is reported by one
``RuntimeWarning`` and the step is done again eagerly; the run goes on eagerly. Under
``torchrun`` (``DistributedDataParallel``) nothing is compiled.

>>> check_compile("auto")
>>> check_compile("always")
Traceback (most recent call last):
...
ValueError: compile must be one of ('auto', True, False), got 'always' (str)
>>> worth_compiling(eager_step_seconds=0.01, steps_left=100_000, max_time=None)
True
>>> worth_compiling(eager_step_seconds=0.01, steps_left=10_000, max_time=None)
False

References: Ansel et al., *PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode
Transformation and Graph Compilation*, ASPLOS 2024 (TorchDynamo, AOTAutograd, Inductor).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..flow import Flow

COMPILE_CHOICES = ("auto", True, False)
#: eager steps timed (after the first, which may initialise data-dependent layers) before
#: ``compile="auto"`` decides
PROBE_STEPS = 8
#: ``compile="auto"`` compiles when the rest of the run would take longer than this eagerly
#: (seconds): above the break-even of every flow measured (190-610 s, see above)
AUTO_MIN_EAGER_SECONDS = 600.0

LossFunction = Callable[[Tensor, "Tensor | None"], Tensor]


def check_compile(compile: object) -> None:
    """``ValueError`` naming the allowed values unless ``compile`` is ``"auto"``, ``True`` or
    ``False``."""
    if not any(compile is c or (isinstance(c, str) and compile == c) for c in COMPILE_CHOICES):
        raise ValueError(
            f"compile must be one of {COMPILE_CHOICES}, got {compile!r} ({type(compile).__name__})"
        )


def worth_compiling(
    *, eager_step_seconds: float, steps_left: int, max_time: float | None
) -> bool:
    """Whether the rest of the run, eager, would last longer than
    :data:`AUTO_MIN_EAGER_SECONDS` (``max_time`` caps the estimate)."""
    estimate = eager_step_seconds * steps_left
    if max_time is not None:
        estimate = min(estimate, max_time)
    return estimate > AUTO_MIN_EAGER_SECONDS


def unchecked_nll(model: nn.Module, loss_module: nn.Module) -> LossFunction:
    r"""The batch loss :math:`-\frac{1}{|b|}\sum_{n \in b} \log q(x_n \mid c_n)` to compile.

    For an unconditional :class:`~pyro_flows.Flow`: its inverse pass (data -> base), the same
    sum of log-determinants as :meth:`~pyro_flows.Flow.log_prob` without its per-call checks of
    the input (done once for all rows by ``fit``), so that TorchDynamo captures it as one graph.
    Any other model (a conditional flow, whose layers check the context, or a module with its
    own ``log_prob``): ``loss_module`` as it is (it may then compile in several graphs).
    """
    if not isinstance(model, Flow) or model.context_dim is not None:
        return loss_module

    def nll(x: Tensor, context: Tensor | None) -> Tensor:
        z, log_det = x, None
        for t in reversed(model.transforms):
            z, ld = t.inverse_and_log_det(z, None)
            log_det = ld if log_det is None else log_det + ld
        log_q = model._base_log_prob(z, None)
        log_q = log_q if log_det is None else log_q + log_det
        return -log_q.mean()

    return nll


class BatchLoss:
    """The loss of one batch and its backward pass, eager or compiled (see the module's text):
    ``loss = batch_loss(x, c)``, then ``batch_loss.backward(loss, x, c)``; after each step,
    ``batch_loss.timed_step(seconds, steps_left)`` lets ``compile="auto"`` decide."""

    def __init__(
        self,
        model: nn.Module,
        loss_module: nn.Module,
        *,
        compile: bool | str,
        rows: int,
        distributed: bool,
        device: torch.device,
        max_time: float | None,
    ) -> None:
        self.model, self.loss_module, self.device, self.max_time = (
            model, loss_module, device, max_time
        )
        self.choice: Any = False if distributed else compile
        self.compiled: Any = None
        self.rows = rows  # the rows of a full batch: the one shape compiled
        self.fresh = False  # the compiled function has not yet run a backward pass
        self.eager_seconds: list[float] = []
        self.compile_seconds: float | None = None  # the first compiled forward and backward
        self._first_started = 0.0
        if self.choice is True:
            self._compile()

    # -- choosing -----------------------------------------------------------------------------
    def _compile(self) -> None:
        """``torch.compile`` the batch loss (a warning and eager on failure)."""
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        try:
            self.compiled = torch.compile(
                unchecked_nll(self.model, self.loss_module), mode=mode, dynamic=False
            )
        except Exception as err:  # any failure to compile: eager from now on
            self._give_up(err)
            return
        self.fresh = True
        self.choice = True

    def _give_up(self, err: BaseException) -> None:
        warnings.warn(
            f"fit: torch.compile of the training step failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); training goes on eagerly",
            RuntimeWarning,
            stacklevel=4,
        )
        self.compiled, self.choice = None, False

    def timed_step(self, seconds: float, steps_left: int) -> None:
        """After an eager step under ``compile="auto"``: once :data:`PROBE_STEPS` steps after
        the first are timed, compile if the rest of the run is long enough to pay."""
        if self.choice != "auto":
            return
        self.eager_seconds.append(seconds)
        if len(self.eager_seconds) <= PROBE_STEPS:
            return
        per_step = sorted(self.eager_seconds[1:])[PROBE_STEPS // 2]  # the median
        if worth_compiling(
            eager_step_seconds=per_step, steps_left=steps_left, max_time=self.max_time
        ):
            self._compile()
        else:
            self.choice = False

    # -- the step -----------------------------------------------------------------------------
    def _uses_compiled(self, x: Tensor) -> bool:
        return self.compiled is not None and x.shape[0] == self.rows

    def __call__(self, x: Tensor, context: Tensor | None) -> Tensor:
        """The batch loss (compiled for full batches of :attr:`rows` rows)."""
        if not self._uses_compiled(x):
            return self.loss_module(x, context)
        if self.fresh:
            self._first_started = time.perf_counter()
        try:
            if self.device.type == "cuda":  # a new step for the CUDA graphs' memory pool
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(x, context)
        except Exception as err:  # any failure to compile: eager from now on
            self._give_up(err)
            return self.loss_module(x, context)

    def explain_non_finite(self, x: Tensor, context: Tensor | None) -> None:
        """After a non-finite loss from the compiled graph: score the batch eagerly, so that the
        model raises its own error (e.g. a float overflow in ``Flow.log_prob``) as it would
        have in the eager step."""
        if self.compiled is not None:
            with torch.no_grad():
                self.loss_module(x, context)

    def backward(self, loss: Tensor, x: Tensor, context: Tensor | None) -> None:
        """``loss.backward()``; the first backward of a compiled graph compiles it, and a failure
        there means: clear the gradients, warn, and do the batch again eagerly."""
        if not self.fresh or not self._uses_compiled(x):
            loss.backward()
            return
        try:
            loss.backward()
        except Exception as err:  # any failure to compile: eager from now on
            self._give_up(err)
            for p in self.model.parameters():
                p.grad = None
            self.loss_module(x, context).backward()
        else:
            self.compile_seconds = time.perf_counter() - self._first_started
        self.fresh = False
