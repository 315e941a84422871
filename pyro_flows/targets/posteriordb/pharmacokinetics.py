r"""``one_comp_mm_elim_abs-one_comp_mm_elim_abs``: a one-compartment pharmacokinetic model with
first-order absorption and Michaelis-Menten elimination (Stan benchmark).

.. math::

    \frac{dC}{dt} = \frac{D k_a}{V} e^{-k_a t} - \frac{V_m}{V}\,\frac{C}{K_m + C}, \qquad
    C(t_0) = 0,

    k_a, K_m, V_m, \sigma \sim \mathrm{Cauchy}^+(0, 1), \qquad
    \hat C_n \sim \log\mathcal{N}(\log C(t_n), \sigma),

with dose :math:`D = 30` mg, volume :math:`V = 2` L, :math:`t_0 = 0` and 20 measurement times
:math:`t_n = 0.5, 1, \dots, 10` days. The Stan program switches the dosing term on for
:math:`t > 0` only; that changes :math:`f` at the single instant :math:`t_0`, not the solution,
so the integrator uses the right limit at :math:`t_0`. :math:`C(t_n)` is recorded as the
deterministic site ``C``. Stan integrates with BDF; here fixed-step RK4 (:func:`~.ode.rk4`),
:math:`h = 0.05` days (200 steps): at the reference means and the 27 points of the reference's
(5 %, mean, 95 %) grid the relative error in :math:`C` is below :math:`3.1 \cdot 10^{-4}`
(against dopri5 at tolerance :math:`10^{-11}`; tested), against a noise scale :math:`\sigma
\approx 0.13` on the log scale: the error in :math:`\log C` is below :math:`0.003\sigma` (the
convergence is slower than :math:`h^4` because :math:`C / (K_m + C)` bends sharply near
:math:`C = 0` when :math:`K_m` is small). The ODE is stiff only where :math:`C
\lesssim K_m` with :math:`K_m \ll 1`, which the solution leaves within minutes of :math:`t_0`.
What makes the posterior hard: :math:`K_m` and :math:`V_m` are weakly identified (heavy right
tail of :math:`K_m`: sd 7.3 around a median 1.0, with :math:`V_m` rising along it).

Example:

>>> from pyro_flows.targets.posteriordb import load_posterior
>>> spec = load_posterior("one_comp_mm_elim_abs-one_comp_mm_elim_abs")
>>> spec.dim, spec.kind
(4, 'ode')

References:

- L. Michaelis, M. L. Menten. *Die Kinetik der Invertinwirkung.* Biochemische Zeitschrift 49,
  1913; M. Gibaldi, D. Perrier. *Pharmacokinetics.* 2nd ed., Marcel Dekker, 1982.
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from .ode import rk4

__all__ = ["STEP", "concentration", "one_comp_mm_elim_abs"]

#: The RK4 step (days).
STEP = 0.05


def concentration(
    k_a: Tensor,
    K_m: Tensor,  # noqa: N803 - Stan's name
    V_m: Tensor,  # noqa: N803 - Stan's name
    dose: float,
    volume: float,
    t0: float,
    times: list[float],
    step: float = STEP,
) -> Tensor:
    r"""The concentration :math:`C(t_n)` (shape ``(*batch, N)``) for parameters of batch shape
    ``batch``, by RK4 from :math:`C(t_0) = 0`.

    >>> c = concentration(torch.tensor(0.76), torch.tensor(1.0), torch.tensor(0.9),
    ...                   30.0, 2.0, 0.0, [0.5, 1.0])
    >>> c.shape, bool((c > 0).all())
    (torch.Size([2]), True)
    """
    k_a, K_m, V_m = k_a[..., None], K_m[..., None], V_m[..., None]  # noqa: N806

    def f(t: float, c: Tensor) -> Tensor:
        return torch.exp(-k_a * t) * (dose * k_a / volume) - (V_m / volume) * c / (K_m + c)

    batch = torch.broadcast_shapes(k_a.shape, K_m.shape, V_m.shape)
    return rk4(f, k_a.new_zeros(batch), t0, times, step)[..., 0]


def one_comp_mm_elim_abs(
    data: Mapping[str, Any], tensor: Callable[[Any], Tensor]
) -> Callable[[], None]:
    """The model of ``one_comp_mm_elim_abs-one_comp_mm_elim_abs`` for the posteriordb data
    (``t0``, ``D``, ``V``, ``N_t``, ``times``, ``C_hat``)."""
    times = [float(t) for t in data["times"]]
    dose, volume, t0 = float(data["D"]), float(data["V"]), float(data["t0"])
    c_hat = tensor(data["C_hat"])
    one = c_hat.new_ones(())

    def model() -> None:
        k_a = pyro.sample("k_a", dist.HalfCauchy(one))
        K_m = pyro.sample("K_m", dist.HalfCauchy(one))  # noqa: N806
        V_m = pyro.sample("V_m", dist.HalfCauchy(one))  # noqa: N806
        sigma = pyro.sample("sigma", dist.HalfCauchy(one))
        c = pyro.deterministic("C", concentration(k_a, K_m, V_m, dose, volume, t0, times), 1)
        # Stan rejects a draw whose solution is not positive (log of a non-positive number)
        ok = ((c > 0) & torch.isfinite(c)).all(-1)
        pyro.factor("rejected", torch.where(ok, 0.0, -torch.inf).to(c_hat))
        log_c = torch.log(torch.where(ok[..., None], c, 1.0))
        pyro.sample("C_hat", dist.LogNormal(log_c, sigma[..., None]).to_event(1), obs=c_hat)

    return model
