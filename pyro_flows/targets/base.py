r"""The :class:`Target` interface: an unnormalised log density with the facts known about it.

A target is a density :math:`p(z) = \tilde p(z) / Z` on a support :math:`S \subseteq
\mathbb{R}^D` known through its unnormalised log density :math:`\log \tilde p(z)`
(:meth:`Target.log_prob`) and, where known, its log normaliser

.. math::

    \log Z = \log \int_S \tilde p(z)\, dz,

its marginal means and standard deviations, and an exact sampler. Reverse-KL training uses
:math:`\log Z` as the ceiling of the ELBO, :math:`\mathrm{ELBO} = \mathbb{E}_q[\log \tilde p(z)
- \log q(z)] \le \log Z`, with gap :math:`\mathrm{KL}(q \,\|\, p) = \log Z - \mathrm{ELBO}`;
MCMC uses :meth:`Target.potential_fn` (:math:`U(z) = -\log \tilde p(z)`) in the dictionary form
that Pyro's ``HMC``/``NUTS(potential_fn=...)`` take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import biject_to, constraints

from .._validation import check_positive_int, check_sample_shape

__all__ = ["Target", "UnconstrainedTarget", "check_sample_shape"]


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` count as the same device (an index left out means 'the current')."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class Target(nn.Module):
    r"""Base class of the targets: an unnormalised log density on :math:`\mathbb{R}^D` (or a box).

    Subclasses implement ``_log_prob(z)`` (``z`` already checked, shape ``(..., D)``) and, when an
    exact sampler exists, ``_sample(n) -> (n, D)`` with ``has_exact_samples = True``. The public
    methods add the checks and the shapes:

    .. math::

        \texttt{log\_prob}(z) = \log \tilde p(z), \qquad
        \texttt{normalized\_log\_prob}(z) = \log \tilde p(z) - \log Z, \qquad
        \texttt{potential\_fn}(\{z\}) = -\log \tilde p(z).

    Attributes every target has:

    - ``name``: the short name of the registry (``"u1"``, ``"funnel"``, ...); ``dim``: :math:`D`.
    - ``log_Z``: :math:`\log \int_S \tilde p`, a float, or ``None`` where unknown.
    - ``mean``, ``std``: exact marginal means and standard deviations (buffers of shape
      ``(D,)``), or ``None``.
    - ``has_exact_samples`` and :meth:`sample` (exact, from torch's global RNG).
    - ``support``: a ``torch.distributions.constraints`` constraint on the event (``real_vector``
      unless a box), so ``torch.distributions.biject_to(target.support)`` pushes
      :math:`\mathbb{R}^D` onto it; :meth:`unconstrained` gives the target pushed back to
      :math:`\mathbb{R}^D`.
    - ``bounds``: a plotting box (one ``(low, high)`` per coordinate; the first two for targets
      with :math:`D > 2`), or ``None``.
    - ``modes``, ``true_mode_weights``: the centres and weights of well separated modes
      (:class:`~pyro_flows.targets.mixture.GaussianMixture`), ``None`` elsewhere.

    - ``device``, ``dtype``: where the target lives (its buffers; ``.to(device/dtype)`` moves
      it). Samplers, importance sampling and NeuTra create their points there.

    The target is an ``nn.Module`` without parameters: ``.to(dtype/device)`` moves its buffers,
    and :meth:`log_prob` computes in the dtype of its input (float32 or float64), so an exact check
    runs in float64 with ``target.double()``. :meth:`log_prob` also takes NumPy arrays and
    (nested) lists, converted to the target's dtype and device, as
    :meth:`pyro_flows.Flow.log_prob` does.

    Cost: :meth:`log_prob` is one vectorised pass over the batch, differentiable in ``z``.

    :param dim: the event size :math:`D`.

    Example:

    >>> from pyro_flows.targets.funnel import Funnel
    >>> target = Funnel(dim=3)
    >>> target.log_prob(torch.zeros(4, 3)).shape, target.log_Z
    (torch.Size([4]), 0.0)
    >>> target.potential_fn(target.initial_params()).shape
    torch.Size([])

    References:

    - D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015
      (the ELBO bound :math:`\mathrm{ELBO} \le \log Z`). https://arxiv.org/abs/1505.05770
    - E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019
      (``potential_fn`` for ``HMC``/``NUTS``).
    """

    name: str = "target"
    has_exact_samples: bool = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.log_Z: float | None = None
        self.bounds: tuple[tuple[float, float], ...] | None = None
        self.register_buffer("mean", None)
        self.register_buffer("std", None)
        self.register_buffer("modes", None)
        self.register_buffer("true_mode_weights", None)
        # tracks the dtype/device the target was moved to (samples come out in it)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # -- where it lives ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device the target lives on (its buffers'); ``target.to(device)`` moves it."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the target's buffers (and of its exact samples)."""
        return self._anchor.dtype

    # -- the density -------------------------------------------------------------------------
    @property
    def support(self) -> constraints.Constraint:
        """The event's support; ``constraints.real_vector`` unless a subclass says otherwise."""
        return constraints.real_vector

    def _as_points(self, z: object) -> Tensor:
        """A NumPy array or (nested) list of numbers as a tensor in the target's dtype, on its
        device; a ``TypeError`` for anything else."""
        owner = type(self).__name__
        expected = (
            f"{owner}.log_prob expected a torch.Tensor, NumPy array or list of numbers of shape "
            f"(..., {self.dim})"
        )
        if not isinstance(z, np.ndarray | list | tuple):
            raise TypeError(f"{expected}, got {type(z).__name__}")
        try:
            array = np.asarray(z)
        except ValueError:  # ragged nested lists
            raise TypeError(f"{expected}, got a ragged {type(z).__name__}") from None
        if array.dtype.kind not in "iuf":
            raise TypeError(f"{expected}, got a {type(z).__name__} of dtype {array.dtype}")
        return torch.as_tensor(array).to(device=self.device, dtype=self.dtype)

    def _check(self, z: object) -> Tensor:
        owner = type(self).__name__
        if not isinstance(z, Tensor):
            z = self._as_points(z)
        if not _same_device(z.device, self.device):
            raise TypeError(
                f"{owner} lives on {self.device}, but z is on {z.device}: move the points with "
                f"z.to({str(self.device)!r}) or the target with target.to({str(z.device)!r})"
            )
        if not z.is_floating_point():
            raise ValueError(
                f"{owner}.log_prob expected a floating-point tensor (float32 or float64), "
                f"got dtype {z.dtype}"
            )
        if z.dim() == 0 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{owner}.log_prob expected z of shape (..., {self.dim}) (dim={self.dim}), "
                f"got shape {tuple(z.shape)}"
            )
        return z

    def _log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement _log_prob")

    def log_prob(self, z: Tensor | np.ndarray | Sequence[Any]) -> Tensor:
        r"""The unnormalised log density :math:`\log \tilde p(z)`, shape ``z.shape[:-1]``.

        ``-inf`` outside the support; differentiable in ``z`` (with finite gradients inside the
        support); computed in ``z``'s dtype. A NumPy array or list is converted to the target's
        dtype and device first. A point with a NaN coordinate gets NaN, as torch's own
        arithmetic gives, and no error: a check would cost a host synchronisation in every
        HMC leapfrog step, and a leapfrog step that diverged to NaN must be scored (and
        rejected as a divergence), not raise. The trainers and samplers check what they are
        given (:func:`~pyro_flows.infer.fit_target` stops on a NaN log density and names it).

        :raises TypeError: for ``z`` of another type, a non-numeric array, or a tensor on
            another device than the target's.
        :raises ValueError: for a non-floating tensor or an event size other than ``dim``.
        """
        return self._log_prob(self._check(z))

    def forward(self, z: Tensor) -> Tensor:
        """Same as :meth:`log_prob`, so the target can be called like a module."""
        return self.log_prob(z)

    def normalized_log_prob(self, z: Tensor) -> Tensor:
        r""":math:`\log p(z) = \log \tilde p(z) - \log Z`; ``NotImplementedError`` without
        ``log_Z``."""
        if self.log_Z is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no known log_Z, so its normalised density is unknown"
            )
        return self.log_prob(z) - self.log_Z

    # -- samples -----------------------------------------------------------------------------
    def _sample(self, n: int) -> Tensor:
        raise NotImplementedError

    def sample(self, sample_shape: int | Sequence[int] | torch.Size = ()) -> Tensor:
        """Exact samples of shape ``(*sample_shape, dim)`` from torch's global RNG.

        Raises ``NotImplementedError`` for targets without an exact sampler
        (``has_exact_samples`` is ``False``).
        """
        shape = check_sample_shape(sample_shape)
        if not self.has_exact_samples:
            raise NotImplementedError(
                f"{type(self).__name__} ({self.name!r}) has no exact sampler "
                "(has_exact_samples is False); use MCMC on target.potential_fn instead"
            )
        n = math.prod(shape)
        with torch.no_grad():
            x = self._sample(n) if n > 0 else torch.zeros(0, self.dim, dtype=torch.float64)
        return x.to(self._anchor).reshape(*shape, self.dim)

    # -- MCMC --------------------------------------------------------------------------------
    def potential_fn(self, params: dict[str, Tensor]) -> Tensor:
        r"""The potential energy :math:`U(z) = -\log \tilde p(z)` of ``params["z"]``.

        This is the form ``pyro.infer.HMC``/``NUTS(potential_fn=...)`` accept, with
        ``initial_params=target.initial_params()``.
        """
        if not isinstance(params, dict) or "z" not in params:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"potential_fn expects a dict with the key 'z', got {got}")
        return -self.log_prob(params["z"])

    def _initial_point(self) -> Tensor:
        return torch.zeros(self.dim, dtype=self._anchor.dtype, device=self._anchor.device)

    def initial_params(self) -> dict[str, Tensor]:
        """A point of high density to start MCMC from, as ``{"z": tensor of shape (dim,)}``."""
        return {"z": self._initial_point()}

    def unconstrained(self) -> Target:
        r"""This target on :math:`\mathbb{R}^D` (itself if its support is already
        ``real_vector``); see :class:`~pyro_flows.targets.unconstrained.UnconstrainedTarget`."""
        if self.support is constraints.real_vector:
            return self
        return UnconstrainedTarget(self)

    def extra_repr(self) -> str:
        log_z = "None" if self.log_Z is None else f"{self.log_Z:.6f}"
        return f"name={self.name!r}, dim={self.dim}, log_Z={log_z}"


class UnconstrainedTarget(Target):
    r"""``target`` seen through :math:`u = T^{-1}(z)`, :math:`T = \texttt{biject\_to}
    (\text{target.support})`, on :math:`\mathbb{R}^D`.

    .. math::

        \log \tilde p_u(u) = \log \tilde p(T(u)) + \log|\det J_T(u)|, \qquad
        \log Z_u = \log Z.

    ``log_Z`` and the exact sampler carry over; ``mean``/``std`` and ``bounds`` do not (they
    change under :math:`T`) and are ``None``. The support's bijection must keep the event size
    (true of boxes and of every elementwise constraint).

    Cost: one :math:`T` and its log-determinant (elementwise for a box) on top of the
    target's ``log_prob``.

    :param target: a :class:`~pyro_flows.targets.base.Target` with a constrained ``support``.

    Example:

    >>> from pyro_flows.targets.energy import U2
    >>> box = U2()                       # e^{-U2} on [-4, 4]^2
    >>> free = box.unconstrained()       # the same mass on R^2
    >>> free.log_Z == box.log_Z, free.log_prob(torch.tensor([50.0, 0.0])).isfinite().item()
    (True, True)
    >>> free.to_support(torch.tensor([0.0, 0.0]))
    tensor([0., 0.])

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017 (densities on unconstrained spaces).
    """

    def __init__(self, target: Target) -> None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, got {type(target).__name__}")
        super().__init__(target.dim)
        self.target = target
        self.name = f"{target.name}-unconstrained"
        origin = torch.zeros(target.dim, dtype=target.dtype, device=target.device)
        shape = self._transform()(origin).shape
        if shape != (target.dim,):
            raise ValueError(
                f"biject_to(support) of {type(target).__name__} maps R^{target.dim} to shape "
                f"{tuple(shape)}; UnconstrainedTarget needs a bijection that keeps the event size"
            )
        self.log_Z = target.log_Z

    @property
    def has_exact_samples(self) -> bool:  # type: ignore[override]
        return self.target.has_exact_samples

    def _transform(self) -> torch.distributions.Transform:
        return biject_to(self.target.support)

    def to_support(self, u: Tensor) -> Tensor:
        """:math:`z = T(u)`: points of :math:`\\mathbb{R}^D` mapped onto the target's support."""
        return self._transform()(self._check(u))

    def _log_prob(self, u: Tensor) -> Tensor:
        t = self._transform()
        z = t(u)
        log_det = t.log_abs_det_jacobian(u, z)
        if log_det.dim() == u.dim():  # an elementwise transform: sum over the event
            log_det = log_det.sum(-1)
        return self.target.log_prob(z) + log_det

    def _sample(self, n: int) -> Tensor:
        with torch.no_grad():  # float64 draws: a float32 round-off could land on a box edge
            z = self.target._sample(n).to(torch.float64)
        return self._transform().inv(z)

    def _initial_point(self) -> Tensor:
        return self._transform().inv(self.target.initial_params()["z"])

    @property
    def support(self) -> constraints.Constraint:
        """``constraints.real_vector``."""
        return constraints.real_vector
