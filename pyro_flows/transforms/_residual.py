r"""Maths kernels of invertible residual layers (i-ResNet, Residual Flows), as pure functions.

The layer :class:`~pyro_flows.transforms.residual.InvertibleResidual` computes
:math:`x = y + g(y)` with :math:`g` an MLP whose linear maps are spectrally normalised. Here:

* activations with their derivatives (:func:`lipswish`, :func:`elu`), both 1-Lipschitz;
* spectral normalisation :math:`\tilde W = W / \max(1, \sigma(W)/c)`, with :math:`\sigma` exact
  (:func:`spectral_norm_exact`) or estimated by power iteration (:func:`power_iteration`);
* the MLP, its vector-Jacobian product and its full Jacobian, all in closed form
  (:func:`mlp_forward`, :func:`mlp_vjp`, :func:`mlp_jacobian`), so no nested autograd is needed;
* the fixed-point solver with its a-posteriori stopping rule (:func:`fixed_point`) and the
  implicit gradient of its solution (:func:`attach_implicit_gradient`);
* the log-determinant :math:`\log\det(I + J_g)`: exact (:func:`logdet_exact`), or the power
  series :math:`\sum_k (-1)^{k+1}\operatorname{tr}(J^k)/k` with Hutchinson probes, truncated
  (:func:`series_coefficients`) or with Russian-roulette weights (:func:`roulette_coefficients`),
  evaluated by :func:`hutchinson_logdet` (backpropagating through the terms) or
  :func:`neumann_logdet` (the Neumann-series gradient of Chen et al., 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: LipSwish divides Swish by this, since :math:`\max_z \frac{d}{dz} z\sigma(\beta z) \approx
#: 1.0998` for every :math:`\beta > 0`.
LIPSWISH_DIVISOR = 1.1

Activation = Callable[[int, Tensor], tuple[Tensor, Tensor]]
"""``act(layer_index, z) -> (act(z), act'(z))``, elementwise."""

VJP = Callable[[Tensor], Tensor]
"""``vjp(w) -> w^T J``, batched over the leading dims of ``w``."""


def lipswish(z: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    r"""LipSwish :math:`z\sigma(\beta z)/1.1` and its derivative
    :math:`\sigma(t)(1 + t\,\sigma(-t))/1.1`, :math:`t = \beta z`, :math:`\beta > 0`.

    The derivative lies in :math:`(-0.091, 0.9999]` for every :math:`\beta`: 1-Lipschitz.
    Written with :math:`\sigma(-t)` for :math:`1 - \sigma(t)`, so it stays finite (and exact)
    for :math:`|z|` up to the float range.
    """
    t = beta * z
    s = torch.sigmoid(t)
    return z * s / LIPSWISH_DIVISOR, s * (1 + t * torch.sigmoid(-t)) / LIPSWISH_DIVISOR


def elu(z: Tensor) -> tuple[Tensor, Tensor]:
    r"""ELU and its derivative (:math:`1` for :math:`z > 0`, :math:`e^z` otherwise)."""
    return F.elu(z), torch.where(z > 0, torch.ones_like(z), torch.exp(z.clamp_max(0)))


def spectral_norm_exact(weight: Tensor) -> Tensor:
    r"""The largest singular value :math:`\sigma(W)` (differentiable, by ``svdvals``)."""
    return torch.linalg.matrix_norm(weight, ord=2)


def power_iteration(weight: Tensor, u: Tensor, n_iter: int) -> tuple[Tensor, Tensor]:
    r"""``n_iter`` power iterations on :math:`W^\top W` from ``u``: unit vectors ``(u, v)``
    (no gradient) with :math:`u^\top W v \uparrow \sigma(W)` (a lower bound at every step)."""
    with torch.no_grad():
        v = F.normalize(weight.t() @ u, dim=0)
        for _ in range(n_iter):
            u = F.normalize(weight @ v, dim=0)
            v = F.normalize(weight.t() @ u, dim=0)
    return u, v


def spectral_normalise(weight: Tensor, sigma: Tensor, coeff: float) -> Tensor:
    r""":math:`\tilde W = W / \max(1, \sigma/c)`: spectral norm :math:`\min(\sigma, c)`."""
    return weight / torch.clamp_min(sigma / coeff, 1.0)


def mlp_forward(
    y: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], act: Activation
) -> tuple[Tensor, list[Tensor]]:
    r""":math:`g(y)` for :math:`h_0 = y`, :math:`h_l = \mathrm{act}(W_l h_{l-1} + b_l)`,
    :math:`g = W_L h_{L-1} + b_L`, and the derivatives :math:`\mathrm{act}'(W_l h_{l-1} + b_l)`
    of the hidden layers (what :func:`mlp_vjp` and :func:`mlp_jacobian` need).

    ``weights[0]`` acts on ``y`` only; a context enters through ``biases[0]`` (batch-shaped).
    """
    h = y
    derivs: list[Tensor] = []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = h @ w.t() + b
        if i == last:
            return z, derivs
        h, d = act(i, z)
        derivs.append(d)
    raise ValueError("mlp_forward needs at least one weight")


def mlp_vjp(w: Tensor, weights: Sequence[Tensor], derivs: Sequence[Tensor]) -> Tensor:
    r""":math:`w^\top J_g` with :math:`J_g = W_L\,\mathrm{diag}(d_{L-1})\,W_{L-1}\cdots
    \mathrm{diag}(d_1)\,W_1`; ``w`` may carry extra leading (probe) dims."""
    for i in range(len(weights) - 1, 0, -1):
        w = (w @ weights[i]) * derivs[i - 1]
    return w @ weights[0]


def mlp_jacobian(weights: Sequence[Tensor], derivs: Sequence[Tensor]) -> Tensor:
    r"""The Jacobian :math:`J_g` of shape ``(*batch, D, D)``, one matrix product per layer."""
    m = weights[0]
    for i in range(1, len(weights)):
        m = weights[i] @ (derivs[i - 1].unsqueeze(-1) * m)
    return m


def fixed_point(
    step: Callable[[Tensor], Tensor],
    z0: Tensor,
    lipschitz: Tensor | float,
    tol: float,
    max_iter: int,
) -> tuple[Tensor, int]:
    r"""Iterate :math:`z \leftarrow \mathrm{step}(z)` for an :math:`L`-contraction (per sample,
    over the last dim), without gradient.

    A sample stops once the a-posteriori error bound (Banach)
    :math:`\frac{L}{1-L}\|z_{k+1} - z_k\|_2 \le \mathrm{tol}\,(1 + \|z_{k+1}\|_2)` holds, once
    its step no longer shrinks (for a contraction it always does, so this is rounding level) or
    is not finite; stopped samples are frozen, so a result does not depend on the rest of the
    batch. At most ``max_iter`` steps; all of them under ``torch.jit.trace`` (an early exit would
    freeze one input's iteration count into the trace; frozen samples keep their values).
    Returns the solution and the steps taken.
    """
    with torch.no_grad():
        factor = lipschitz / (1.0 - lipschitz)
        z = z0.detach()
        done = torch.zeros(z.shape[:-1], dtype=torch.bool, device=z.device)
        prev = torch.full(z.shape[:-1], float("inf"), dtype=z.dtype, device=z.device)
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
            new = step(z)
            delta = torch.linalg.vector_norm(new - z, dim=-1)
            z = torch.where(done.unsqueeze(-1), z, new)
            small = factor * delta <= tol * (1 + torch.linalg.vector_norm(new, dim=-1))
            done = done | small | (delta >= prev) | ~torch.isfinite(delta)
            prev = delta
            if z.device.type == "meta":
                break
            if not torch.jit.is_tracing() and bool(done.all()):
                break
    return z, it


def attach_implicit_gradient(
    y: Tensor, vjp: VJP, lipschitz: Tensor | float, tol: float, max_iter: int
) -> Tensor:
    r"""Make the gradient through ``y = x - g(y*)`` (``y*`` the detached fixed point of
    :math:`y = x - g(y)`) the implicit-function gradient.

    The true derivative is :math:`\partial y/\partial\theta = -(I + J_g)^{-1}\partial
    g/\partial\theta`; autograd sees only :math:`-\partial g/\partial\theta`, so a hook maps the
    incoming gradient :math:`u` to :math:`w = (I + J_g)^{-\top}u`, solved by the contraction
    :math:`w \leftarrow u - J_g^\top w` (:func:`fixed_point`, same tolerance). First-order
    gradients only (the solve is not itself differentiated).
    """
    if y.requires_grad:

        def hook(grad: Tensor | None) -> Tensor | None:
            if grad is None:  # an undefined gradient (autograd's gradcheck passes one)
                return None
            return fixed_point(lambda w: grad - vjp(w), grad, lipschitz, tol, max_iter)[0]

        y.register_hook(hook)
    return y


def logdet_exact(jac: Tensor) -> Tensor:
    r""":math:`\log\det(I + J)`, by LU (``slogdet``); the determinant is positive when
    :math:`\|J\|_2 < 1` (never singular on the path :math:`I + tJ`, :math:`t \in [0, 1]`)."""
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    return torch.linalg.slogdet(eye + jac)[1]


def rademacher(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Independent ``+-1`` entries (Hutchinson probes: :math:`E[vv^\\top] = I`)."""
    bits = torch.randint(0, 2, tuple(shape), generator=generator, device=like.device)
    return bits.to(like.dtype) * 2 - 1


def series_coefficients(n_terms: int, like: Tensor) -> Tensor:
    r"""``(1, n_terms)`` coefficients :math:`(-1)^{k+1}/k`, :math:`k = 1..n`."""
    k = torch.arange(1, n_terms + 1, dtype=like.dtype, device=like.device)
    return (torch.where(k % 2 == 1, 1.0, -1.0) / k).unsqueeze(0)


def roulette_coefficients(
    n_probes: int,
    geom_p: float,
    n_exact_terms: int,
    max_terms: int,
    like: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    r"""``(n_probes, K)`` Russian-roulette coefficients, one draw :math:`N \sim` Geometric per
    probe.

    :math:`N \in \{0, 1, \dots\}` with :math:`P(N \ge j) = (1-p)^j`; term :math:`k` is kept if
    :math:`k \le m + N` (:math:`m` = ``n_exact_terms``, always kept) and then weighted by
    :math:`(-1)^{k+1}/k \,/\, P(N \ge k - m)`, so that the expected coefficient of every term is
    :math:`(-1)^{k+1}/k`: the estimate is unbiased for the infinite series. :math:`N` is capped at
    ``max_terms - m`` (a bias below :math:`(1-p)^{\text{max\_terms} - m}` times the tail).
    """
    draws = torch.empty(n_probes, dtype=like.dtype, device=like.device)
    draws.geometric_(geom_p, generator=generator)  # trials to the first success, >= 1
    n = (draws - 1).clamp_max(max_terms - n_exact_terms)
    k_max = n_exact_terms + int(n.max().item()) if n_probes else n_exact_terms
    k = torch.arange(1, max(k_max, 1) + 1, dtype=like.dtype, device=like.device)
    j = (k - n_exact_terms).clamp_min(0)
    keep = (k <= n_exact_terms + n.unsqueeze(-1)).to(like.dtype)
    return series_coefficients(k.numel(), like) * keep * (1 - geom_p) ** (-j)


def _series_terms(vjp: VJP, probes: Tensor, coeffs: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\sum_k c_k v^\top J^k v` per probe, and :math:`\bar w = \sum_k k c_k\,
    v^\top J^{k-1}` (the Neumann-gradient weights)."""
    shape = (coeffs.shape[0],) + (1,) * (probes.dim() - 2)
    w, total, w_bar = probes, probes.new_zeros(()), probes.new_zeros(())
    for k in range(coeffs.shape[1]):
        ck = coeffs[:, k].reshape(shape)
        w_bar = w_bar + (k + 1) * ck.unsqueeze(-1) * w
        w = vjp(w)
        total = total + ck * (w * probes).sum(-1)
    return total, w_bar


def hutchinson_logdet(vjp: VJP, probes: Tensor, coeffs: Tensor) -> Tensor:
    r"""Estimate :math:`\log\det(I + J) = \sum_k (-1)^{k+1}\operatorname{tr}(J^k)/k` by
    :math:`\frac1S\sum_s \sum_k c_{sk}\, v_s^\top J^k v_s`, backpropagating through the terms.

    :param probes: ``(S, *batch, D)`` Hutchinson vectors.
    :param coeffs: ``(S or 1, K)`` from :func:`series_coefficients` or
        :func:`roulette_coefficients`.
    """
    return _series_terms(vjp, probes, coeffs)[0].mean(0)


def neumann_logdet(vjp: VJP, probes: Tensor, coeffs: Tensor) -> Tensor:
    r"""As :func:`hutchinson_logdet` in value, with the memory-saving gradient of Chen et al.

    :math:`\partial\log\det(I+J) = \operatorname{tr}((I+J)^{-1}\partial J) = \sum_{k\ge1}
    (-1)^{k+1}\operatorname{tr}(J^{k-1}\partial J)`, estimated with the same probes and
    coefficients as the value: the terms are computed without a graph, and the surrogate
    :math:`\bar w^\top J v` (one differentiable vector-Jacobian product) carries the gradient.
    """
    with torch.no_grad():
        total, w_bar = _series_terms(vjp, probes, coeffs)
        value = total.mean(0)
    surrogate = (vjp(w_bar) * probes).sum(-1).mean(0)
    return value + (surrogate - surrogate.detach())
