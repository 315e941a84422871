r"""What the training loops' runs share (``fit``, ``fit_target``, ``fit_guide``, ``distill``,
``train_ebm``): the error of the finiteness guard, the trainable parameters, the decision to
resume, and the frame of the loop (a progress bar closed however the loop ends, and a checkpoint
written on ``KeyboardInterrupt``).

The finiteness guard: a step whose loss :math:`\mathcal L` or global gradient norm
:math:`\|g\|_2 = (\sum_p \|\nabla_p \mathcal L\|_2^2)^{1/2}` is NaN/inf is not applied; the
parameters go back to the last good ones, ``history.stopped`` says what happened, and a
:class:`NonFiniteLossError` carrying the history is raised. A single NaN in any gradient makes
:math:`\|g\|_2` non-finite, so one ``isfinite`` on the norm (computed anyway to clip) checks them
all.

>>> history = type("History", (), {"stopped": "running"})()
>>> error = stop_non_finite(lambda: None, history, "non-finite loss", "NaN loss at step 3")
>>> isinstance(error, FloatingPointError), history.stopped, error.history is history
(True, 'non-finite loss', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN/inf loss, gradient or validation score; the model holds the last good
    parameters (``history.stopped`` says which it was).

    :ivar history: the :class:`~pyro_flows.infer.fit.FitHistory` (or the history of the loop
        that raised it) up to the failure.
    """

    # its public home (``pyro_flows.infer.fit``, which re-exports it) is the name tracebacks,
    # pickles and the documentation use
    __module__ = "pyro_flows.infer.fit"

    def __init__(self, message: str, history: Any) -> None:
        super().__init__(message)
        self.history = history


def stop_non_finite(
    restore: Callable[[], None], history: Any, stopped: str, message: str
) -> NonFiniteLossError:
    """The finiteness guard's stop: ``restore()`` (back to the last good parameters),
    ``history.stopped = stopped``, and the :class:`NonFiniteLossError` to raise."""
    restore()
    history.stopped = stopped
    return NonFiniteLossError(message, history)


def trainable_parameters(module: nn.Module, what: str) -> list[Tensor]:
    """The parameters of ``module`` that require gradients; a ``ValueError`` ("the ``what`` has
    no trainable parameters") when there are none."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"the {what} has no trainable parameters")
    return params


def resuming(resume: bool, checkpoint: str | Path | None) -> bool:
    """Whether a loop continues from ``checkpoint``: asked to (``resume``) and the file exists
    (a first run with ``resume=True`` starts afresh and writes it)."""
    return bool(resume) and checkpoint is not None and Path(checkpoint).exists()


@contextmanager
def interruptible(
    bar: Any, save: Callable[[], None], before_close: Callable[[], None] | None = None
) -> Iterator[Any]:
    """The frame of a training loop: on ``KeyboardInterrupt``, ``save()`` (the checkpoint at
    the exact position, so that a resume loses nothing) and re-raise; however the loop ends,
    ``before_close()`` (a last refresh of the bar) and close the progress ``bar``."""
    try:
        yield bar
    except KeyboardInterrupt:
        save()
        raise
    finally:
        if before_close is not None:
            before_close()
        bar.close()
