r"""The maths of block neural autoregressive flow (BNAF) as pure functions.

Notation (see :class:`~pyro_flows.transforms.BlockAutoregressive`): ``D`` dimensions, hidden
factors :math:`a_0, \dots, a_{L-1}` (``a_{-1} = a_L = 1``); layer :math:`l` has a weight matrix
of shape :math:`(D a_l, D a_{l-1})` made of :math:`D \times D` blocks of shape
:math:`(a_l, a_{l-1})`, zero above the block diagonal and with positive entries on it. The
network :math:`f` applies the activation after every layer but the last. Since every diagonal
block, and the activation's slope, is positive, the Jacobian chain of dimension :math:`i` is a
product of positive matrices, evaluated here in log space:

.. math::

    \log\frac{\partial f_i}{\partial u_i} = \mathrm{LSE}\Big(\log W^{(L)}_{ii} +
    \log\sigma'(z^{(L-1)}_i) + \mathrm{LSE}\big(\log W^{(L-1)}_{ii} + \dots\big)\Big),

one log-sum-exp "log-matrix product" per layer: no product of weights is ever formed, so it
stays finite in float32 whatever the size of the weights or the saturation of the activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._root_finding import implicit_root, solve_increasing

ACTIVATIONS = ("tanh", "leaky_relu")
RESIDUALS = ("gated", "normal", None)
LEAKY_SLOPE = 0.01  # negative slope of the leaky ReLU
_LOG_2 = math.log(2.0)
_LOG_LEAKY = math.log(LEAKY_SLOPE)


def block_masks(dim: int, a_out: int, a_in: int) -> tuple[Tensor, Tensor]:
    """Boolean masks ``(diagonal blocks, strictly lower blocks)``, each of shape
    ``(dim a_out, dim a_in)``."""
    rows = torch.arange(dim * a_out) // a_out
    cols = torch.arange(dim * a_in) // a_in
    return rows[:, None] == cols[None, :], rows[:, None] > cols[None, :]


def block_weights(
    raw: Tensor, log_scale: Tensor, diag: Tensor, lower: Tensor, dim: int
) -> tuple[Tensor, Tensor]:
    r"""The weight-normalised block matrix and the logs of its diagonal blocks.

    Raw entries :math:`V` become :math:`\exp V` on the diagonal blocks and :math:`V` below them
    (zero above); each row is then rescaled to norm :math:`\exp s` (weight normalisation, with
    ``log_scale`` :math:`s`). Each row is first divided by :math:`e^m`, :math:`m` its largest
    log-magnitude (a constant, detached: the result does not depend on it), so no entry
    overflows however large :math:`V` gets, and the row norm is at least 1.

    :param raw: :math:`V`, shape ``(dim a_out, dim a_in)``.
    :param log_scale: :math:`s`, shape ``(dim a_out,)``.
    :return: ``(W, log_diag)``: ``W`` shaped like ``raw``; ``log_diag`` of shape
        ``(dim, a_out, a_in)`` holds :math:`\log W` on the diagonal blocks.
    """
    neg_inf = torch.tensor(-math.inf, dtype=raw.dtype, device=raw.device)
    log_abs = torch.where(diag, raw, torch.where(lower, raw.abs().log(), neg_inf))
    m = log_abs.amax(-1, keepdim=True).detach()
    scaled = torch.where(diag, torch.exp(raw - m), torch.where(lower, raw * torch.exp(-m), 0.0))
    norm = torch.linalg.vector_norm(scaled, dim=-1, keepdim=True)
    weight = torch.exp(log_scale).unsqueeze(-1) * scaled / norm
    log_w = log_scale.unsqueeze(-1) + raw - m - torch.log(norm)
    a_out, a_in = raw.shape[0] // dim, raw.shape[1] // dim
    log_diag = torch.diagonal(log_w.reshape(dim, a_out, dim, a_in), dim1=0, dim2=2)
    return weight, log_diag.permute(2, 0, 1)


def activate(z: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    r"""``(sigma(z), log sigma'(z))``; for tanh :math:`\log\mathrm{sech}^2 z =
    2(\log 2 - |z| - \mathrm{softplus}(-2|z|))` (finite for any finite ``z``)."""
    if kind == "tanh":
        a = z.abs()
        return torch.tanh(z), 2 * (_LOG_2 - a - F.softplus(-2 * a))
    log_slope = torch.where(z > 0, 0.0, _LOG_LEAKY).to(z)
    return F.leaky_relu(z, LEAKY_SLOPE), log_slope


def network_pass(
    u: Tensor, weights: list[Tensor], biases: list[Tensor], kind: str
) -> tuple[Tensor, list[Tensor]]:
    """``f(u)`` (shape ``(..., D)``) and the pre-activations of the hidden layers."""
    h, pre = u, []
    for l, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        z = F.linear(h, weight) + bias
        if l == len(weights) - 1:
            return z, pre
        pre.append(z)
        h = activate(z, kind)[0]
    raise ValueError("a BNAF network needs at least one layer")


def log_diag_jacobian(pre: list[Tensor], log_diags: list[Tensor], kind: str) -> Tensor:
    r""":math:`\log \partial f_i / \partial u_i` (shape ``(..., D)``) by log-matrix products."""
    dim = log_diags[0].shape[0]
    log_v = log_diags[0][..., 0]  # (D, a_0): the first layer's blocks are columns
    for l, log_w in enumerate(log_diags):
        if l > 0:  # (..., D, 1, a_{l-1}) + (D, a_l, a_{l-1}) -> (..., D, a_l)
            log_v = torch.logsumexp(log_w + log_v.unsqueeze(-2), dim=-1)
        if l < len(pre):
            log_v = log_v + activate(pre[l], kind)[1].unflatten(-1, (dim, -1))
    return log_v.squeeze(-1)


def residual_log_det(log_df: Tensor, residual: str | None, gate: Tensor | None) -> Tensor:
    r""":math:`\sum_i\log\partial F_i/\partial u_i` from :math:`\log f'_i`: gated
    :math:`\mathrm{logaddexp}(\log g, \log(1-g) + \log f'_i)`, normal
    :math:`\mathrm{softplus}(\log f'_i)`, ``None``: :math:`\log f'_i` (sums of logs, no
    cancellation)."""
    if residual == "gated":
        assert gate is not None
        log_df = torch.logaddexp(F.logsigmoid(gate), F.logsigmoid(-gate) + log_df)
    elif residual == "normal":
        log_df = F.softplus(log_df)
    return log_df.sum(-1)


def residual_output(u: Tensor, f: Tensor, residual: str | None, gate: Tensor | None) -> Tensor:
    """``F(u)``: gated ``g u + (1 - g) f``, normal ``u + f``, ``None``: ``f``."""
    if residual == "gated":
        assert gate is not None
        return torch.sigmoid(gate) * u + torch.sigmoid(-gate) * f
    return u + f if residual == "normal" else f


def _coefficients(residual: str | None, gate: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(r, q)`` with ``F_i = r u_i + q f_i``."""
    if residual == "gated":
        assert gate is not None
        return torch.sigmoid(gate), torch.sigmoid(-gate)
    one = torch.ones((), dtype=like.dtype, device=like.device)
    return (one, one) if residual == "normal" else (torch.zeros_like(one), one)


def _chain(
    alpha: Tensor, diags: list[Tensor], consts: list[Tensor], kind: str
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One dimension's block chain: ``f_i``, ``df_i/du_i`` and the hidden pre-activations at
    ``u_i = alpha`` with the earlier dimensions' contributions ``consts`` held fixed."""
    z = alpha.unsqueeze(-1) * diags[0][:, 0] + consts[0]
    dz = diags[0][:, 0].expand_as(z)
    pre = []
    for block, const in zip(diags[1:], consts[1:], strict=True):
        pre.append(z)
        h, log_dh = activate(z, kind)
        z, dz = F.linear(h, block) + const, F.linear(torch.exp(log_dh) * dz, block)
    return z[..., 0], dz[..., 0], pre


def _bracket(
    v: Tensor,
    f0: Tensor,
    diags: list[Tensor],
    const_last: Tensor,
    r: Tensor,
    q: Tensor,
    kind: str,
) -> tuple[Tensor, Tensor]:
    r"""A bracket of the root of :math:`r\alpha + q f_i(\alpha) = v` (see the class docstring).

    tanh: :math:`|f_i - c_L| \le s` with :math:`s` the sum of the last diagonal block, so the
    root lies in :math:`[(v - q(c_L + s))/r, (v - q(c_L - s))/r]`. Leaky ReLU: the slope of
    :math:`f_i` lies in :math:`[\beta^{L} P, P]`, :math:`P` the product of the diagonal blocks,
    so the root lies between :math:`d/m` and :math:`d/M`, :math:`d = v - r\cdot 0 - q f_i(0)`,
    :math:`m = r + q\beta^L P`, :math:`M = r + qP`. Widened by 1% plus rounding room, clamped
    to finite values.
    """
    info = torch.finfo(v.dtype)
    if kind == "tanh":
        s = diags[-1].sum()
        lo = (v - q * (const_last + s)) / r.clamp_min(info.tiny)
        hi = (v - q * (const_last - s)) / r.clamp_min(info.tiny)
    else:
        prod = diags[0]
        for block in diags[1:]:
            prod = block @ prod
        prod = prod.squeeze()
        d = v - q * f0
        slow = d / (r + q * LEAKY_SLOPE ** (len(diags) - 1) * prod).clamp_min(info.tiny)
        fast = d / (r + q * prod).clamp_min(info.tiny)
        lo, hi = torch.minimum(slow, fast), torch.maximum(slow, fast)
    lo, hi = torch.nan_to_num(lo), torch.nan_to_num(hi)
    pad = 0.01 * (hi - lo) + 8 * info.eps * (1 + torch.maximum(lo.abs(), hi.abs()))
    bound = info.max / 8
    return (lo - pad).clamp(-bound, bound), (hi + pad).clamp(-bound, bound)


def solve_network(
    v: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
    log_diags: list[Tensor],
    kind: str,
    residual: str | None,
    gate: Tensor | None,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    r"""Solve ``F(u) = v`` dimension by dimension; return ``u`` and ``log|det dF/du|`` at ``u``.

    Dimension :math:`i` is a scalar increasing equation in :math:`u_i` once :math:`u_{<i}` is
    known; the earlier dimensions enter only through constants (one matrix-slice product per
    layer), so each solver iteration runs dimension :math:`i`'s diagonal blocks only. Roots are
    found by :func:`solve_increasing` and re-attached by :func:`implicit_root`; the log-det
    comes from the pre-activations at the roots (no further network pass).
    """
    dim = v.shape[-1]
    sizes = [w.shape[0] // dim for w in weights]  # a_0, ..., a_{L-1}, 1
    r, q = _coefficients(residual, gate, v)
    eps = torch.finfo(v.dtype).eps
    solved: list[Tensor] = []  # u_0, ..., u_{i-1}
    hidden: list[list[Tensor]] = [[] for _ in sizes[:-1]]  # per layer, per solved dimension
    pre_all: list[list[Tensor]] = [[] for _ in sizes[:-1]]
    for i in range(dim):
        ins = [1, *sizes[:-1]]
        rows = [slice(i * a, (i + 1) * a) for a in sizes]
        diags = [w[rs, i * a : (i + 1) * a] for w, rs, a in zip(weights, rows, ins, strict=True)]
        consts = []
        for l, (w, b, rs, a) in enumerate(zip(weights, biases, rows, ins, strict=True)):
            c = b[..., rs]
            if i > 0:
                prev = torch.stack(solved, -1) if l == 0 else torch.cat(hidden[l - 1], -1)
                c = c + F.linear(prev, w[rs, : i * a])
            consts.append(c)
        v_i = v[..., i]

        def fun(alpha: Tensor, diags=diags, consts=consts, v_i=v_i) -> tuple[Tensor, Tensor]:
            f, df, _ = _chain(alpha, diags, consts, kind)
            return r * alpha + q * f - v_i, r + q * df

        with torch.no_grad():
            zero = torch.zeros_like(v_i)
            f0, df0, _ = _chain(zero, diags, consts, kind)
            lo, hi = _bracket(v_i, f0, diags, consts[-1][..., 0], r, q, kind)
            init = (v_i - q * f0) / (r + q * df0).clamp_min(torch.finfo(v.dtype).tiny)
            lo, hi, init = torch.broadcast_tensors(lo, hi, init)
            ftol = 8 * eps * (1 + v_i.abs() + q * consts[-1][..., 0].abs())
            root = solve_increasing(fun, lo, hi, init, ftol, max_iter)
        alpha = implicit_root(fun, root)
        pre = _chain(alpha, diags, consts, kind)[2]
        solved.append(alpha)
        for l, z in enumerate(pre):
            pre_all[l].append(z)
            hidden[l].append(activate(z, kind)[0])
    u = torch.stack(solved, -1)
    log_df = log_diag_jacobian([torch.cat(p, -1) for p in pre_all], log_diags, kind)
    return u, residual_log_det(log_df, residual, gate)
