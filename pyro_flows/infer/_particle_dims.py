r"""Whether a model really vectorises over particles: sites with dims left of the particle plate.

Pyro's vectorised ELBOs run model and guide inside a plate of :math:`S` particles at dim
:math:`-(n + 1)`, :math:`n` the model's plate nesting, so every site's batch shape has at most
:math:`n + 1` dims. A model can run there without an error and still be wrong: with a
coefficient vector ``b`` of shape ``(S, 1, D)`` (the particle dim and a broadcast plate dim),
``b @ X.T`` has shape ``(S, 1, N)``; the observation plate then broadcasts it to
``(S, S, N)``, and the ELBO sums :math:`S` copies of every particle's likelihood: the posterior
it fits is the one of :math:`S` copies of the data (sds :math:`1/\sqrt S` of the truth, with
Pyro's own ``vectorize_particles=True`` as well; its shape check ignores dims left of the
plates). A site with more than :math:`n + 1` batch dims is that sign; the one-draw-at-a-time
loop is then the correct evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pyro.poutine.messenger import Messenger

__all__ = ["extra_particle_dims", "watch_particle_dims"]


class _BatchDims(Messenger):
    """Records ``(site name, batch shape)`` of sample sites with more than ``max_dims`` batch
    dims (after the enclosing plates have broadcast them)."""

    def __init__(self, max_dims: int) -> None:
        super().__init__()
        self.max_dims = max_dims
        self.sites: list[tuple[str, tuple[int, ...]]] = []

    def _postprocess_message(self, msg: Any) -> None:
        if msg["type"] != "sample":
            return
        shape = tuple(getattr(msg["fn"], "batch_shape", ()))
        if len(shape) > self.max_dims:
            self.sites.append((msg["name"], shape))


@contextmanager
def watch_particle_dims(max_plate_nesting: int) -> Iterator[list[tuple[str, tuple[int, ...]]]]:
    """Within the block, collect the sample sites whose batch shape has more dims than a
    vectorised ELBO's plates (``max_plate_nesting + 1``); yields the list it fills."""
    watcher = _BatchDims(max_plate_nesting + 1)
    with watcher:
        yield watcher.sites


def extra_particle_dims(run: Callable[[], Any], max_plate_nesting: int) -> str | None:
    """Run ``run`` (a vectorised ELBO evaluation) and say which sites broadcast beyond the
    particle plate (``None``: none did).

    >>> import pyro, pyro.distributions as dist, torch
    >>> X = torch.randn(5, 3)
    >>> def model(X):
    ...     b = pyro.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    ...     with pyro.plate("n", 5):
    ...         pyro.sample("y", dist.Normal(b @ X.T, 1.0), obs=torch.zeros(5))
    >>> elbo = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True,
    ...                              max_plate_nesting=1)
    >>> guide = pyro.infer.autoguide.AutoNormal(model)
    >>> print(extra_particle_dims(lambda: elbo.loss(model, guide, X), 1))
    site 'y' has batch shape (4, 4, 5), more than the 2 dims of its plates and the particles'
    """
    with watch_particle_dims(max_plate_nesting) as sites:
        run()
    if not sites:
        return None
    name, shape = sites[0]
    return (f"site {name!r} has batch shape {shape}, more than the {max_plate_nesting + 1} dims "
            "of its plates and the particles'")
