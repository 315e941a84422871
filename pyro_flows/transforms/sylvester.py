r"""Sylvester flow (van den Berg et al., 2018), invertible by construction, with an inverse that
scores any point.

The maths as pure functions (:func:`householder_frame`, :func:`orthogonal_frame`,
:func:`sylvester_triangular`, :func:`sylvester_forward`, :func:`sylvester_inverse`), and the
module :class:`Sylvester` that holds (or predicts from a context) the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_context, check_hidden_dims, check_positive_int
from ..nn.mlp import MLP
from ._hypernet import HyperParametrised
from ._root_finding import implicit_root, solve_increasing

KINDS = ("householder", "orthogonal", "triangular")
_LOG_E_MINUS_1 = math.log(math.e - 1.0)  # softplus of it is 1: a zero diagonal product


def _log_slope(z: Tensor, softplus_p: Tensor) -> Tensor:
    r"""``log(1 + d sech^2 z)`` with ``d = softplus_p - 1 > -1``, as ``log(tanh^2 z + sech^2(z)
    softplus_p)``: a sum of non-negative terms (no cancellation as ``d`` nears ``-1``);
    ``sech^2 z`` as ``4t/(1+t)^2`` with ``t = exp(-2|z|)`` (no overflow)."""
    t = torch.exp(-2 * z.abs())
    tanh = torch.tanh(z)
    slope = tanh * tanh + 4 * t / (1 + t) ** 2 * softplus_p
    return torch.log(slope.clamp_min(torch.finfo(slope.dtype).tiny))


def householder_frame(vectors: Tensor, num_vectors: int) -> Tensor:
    r""":math:`Q = H_1 \cdots H_K E`: the first ``num_vectors`` columns of a product of Householder
    reflections :math:`H_k = I - 2 u_k u_k^\top / \|u_k\|^2` (``vectors``: ``(..., K, D)``, the
    :math:`u_k`; a zero :math:`u_k` is the identity). Returns ``(..., D, M)`` with orthonormal
    columns, :math:`O(KDM)`."""
    d = vectors.shape[-1]
    norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    u = vectors / norm.clamp_min(torch.finfo(vectors.dtype).tiny)
    q = torch.eye(d, num_vectors, dtype=vectors.dtype, device=vectors.device)
    q = q.expand(*vectors.shape[:-2], d, num_vectors)
    for k in reversed(range(vectors.shape[-2])):
        uk = u[..., k, :].unsqueeze(-1)
        q = q - 2 * uk * (uk.transpose(-1, -2) @ q)
    return q


def orthogonal_frame(raw: Tensor) -> Tensor:
    r"""The Gram-Schmidt orthonormalisation of the columns of ``raw`` (``(..., D, M)``, full
    column rank): the ``Q`` factor of its reduced QR decomposition with the signs fixed so that
    the ``R`` factor has a non-negative diagonal (a smooth function of ``raw``)."""
    q, r = torch.linalg.qr(raw)
    sign = torch.where(r.diagonal(dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(raw.dtype)
    return q * sign.unsqueeze(-2)


def _unpack_upper(packed: Tensor, m: int) -> Tensor:
    """``(..., M(M+1)/2)`` row-major upper-triangular entries (diagonal included) -> ``(..., M, M)``
    with zeros below the diagonal (by indexing, so autograd-friendly)."""
    index = torch.full((m, m), m * (m + 1) // 2, dtype=torch.long)
    rows, cols = torch.triu_indices(m, m)
    index[rows, cols] = torch.arange(rows.numel())
    padded = torch.cat([packed, packed.new_zeros(*packed.shape[:-1], 1)], -1)
    return padded[..., index.to(packed.device).flatten()].unflatten(-1, (m, m))


def sylvester_triangular(packed_r: Tensor, packed_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The triangular factors :math:`R, \tilde R` from raw packed entries, and the diagonal
    products' :math:`1 + R_{ii}\tilde R_{ii}`.

    Off-diagonal entries are used as they are. The raw diagonal entries :math:`p_i` (of
    ``packed_r``) and :math:`q_i` (of ``packed_t``) give

    .. math::

        \tilde R_{ii} = e^{q_i}, \qquad R_{ii} = (\mathrm{softplus}(p_i) - 1)\, e^{-q_i},
        \qquad 1 + R_{ii}\tilde R_{ii} = \mathrm{softplus}(p_i) > 0,

    so :math:`R_{ii}\tilde R_{ii} > -1` for any raw values, without bounding it above
    (:math:`e^{\pm q_i}` overflows only for :math:`|q_i| > 709` in float64, :math:`88` in
    float32, far beyond any useful scale).

    :param packed_r: ``(..., M(M+1)/2)``, the upper triangle of :math:`R` row by row.
    :param packed_t: the same for :math:`\tilde R`.
    :return: ``(R, R_tilde, softplus_p)``, shapes ``(..., M, M)``, ``(..., M, M)``, ``(..., M)``.
    """
    m = (math.isqrt(8 * int(packed_r.shape[-1]) + 1) - 1) // 2  # int(): a size, also traced
    r_raw, t_raw = _unpack_upper(packed_r, m), _unpack_upper(packed_t, m)
    p, q = r_raw.diagonal(dim1=-2, dim2=-1), t_raw.diagonal(dim1=-2, dim2=-1)
    softplus_p = F.softplus(p)
    r = r_raw.triu(1) + torch.diag_embed((softplus_p - 1) * torch.exp(-q))
    t = t_raw.triu(1) + torch.diag_embed(torch.exp(q))
    return r, t, softplus_p


def _project(x: Tensor, q: Tensor | None, m: int) -> Tensor:
    r""":math:`Q^\top x` (``q is None``: the first ``m`` coordinates)."""
    return x[..., :m] if q is None else (x.unsqueeze(-2) @ q).squeeze(-2)


def _lift(v: Tensor, q: Tensor | None, d: int) -> Tensor:
    """:math:`Q v` (``q is None``: ``v`` padded with zeros to size ``d``)."""
    return F.pad(v, (0, d - v.shape[-1])) if q is None else (q @ v.unsqueeze(-1)).squeeze(-1)


def _matvec(a: Tensor, v: Tensor) -> Tensor:
    return (a @ v.unsqueeze(-1)).squeeze(-1)


def sylvester_forward(
    x: Tensor, q: Tensor | None, r: Tensor, t: Tensor, b: Tensor, softplus_p: Tensor
) -> tuple[Tensor, Tensor]:
    r"""``y = x + Q R tanh(R~ Q^T x + b)`` and ``log|det dy/dx|`` (see :class:`Sylvester`)."""
    z = _matvec(t, _project(x, q, r.shape[-1])) + b
    y = x + _lift(_matvec(r, torch.tanh(z)), q, x.shape[-1])
    return y, _log_slope(z, softplus_p).sum(-1)


def sylvester_inverse(
    y: Tensor,
    q: Tensor | None,
    r: Tensor,
    t: Tensor,
    b: Tensor,
    softplus_p: Tensor,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    r"""Invert :func:`sylvester_forward`: ``x`` and ``log|det dx/dy|`` by back substitution,
    one monotone scalar root solve per coordinate :math:`i = M, \dots, 1` (see
    :class:`Sylvester` for the equations and the tolerance)."""
    m = r.shape[-1]
    e_vec = _project(y, q, m)  # c - sum_{k > i} R_ik tanh(z_k), updated column by column
    s_vec = b + torch.zeros_like(e_vec)  # b_i + sum_{j > i} R~_ij v_j
    eps, tiny = torch.finfo(y.dtype).eps, torch.finfo(y.dtype).tiny
    zs: list[Tensor] = []
    for i in reversed(range(m)):
        e, s = e_vec[..., i], s_vec[..., i]
        ri, ti, spi = r[..., i, i], t[..., i, i], softplus_p[..., i]

        def fun(v: Tensor, e=e, s=s, ri=ri, ti=ti, spi=spi) -> tuple[Tensor, Tensor]:
            z = ti * v + s
            tanh, sech_t = torch.tanh(z), torch.exp(-2 * z.abs())
            return v + ri * tanh - e, tanh * tanh + 4 * sech_t / (1 + sech_t) ** 2 * spi

        with torch.no_grad():
            # tanh linearised at 0 for the start; the root lies within |R_ii| of e (|tanh| <= 1)
            init = (e - ri * s) / spi.clamp_min(tiny)
            init = torch.where(torch.isfinite(init), init, e)
            ftol = 8 * eps * (1 + e.abs() + ri.abs())
            root = solve_increasing(fun, e - ri.abs(), e + ri.abs(), init, ftol, max_iter)
        v = implicit_root(fun, root)
        z = ti * v + s
        zs.append(z)
        e_vec = e_vec - r[..., :, i] * torch.tanh(z).unsqueeze(-1)
        s_vec = s_vec + t[..., :, i] * v.unsqueeze(-1)
    z = torch.stack(zs[::-1], -1)
    x = y - _lift(_matvec(r, torch.tanh(z)), q, y.shape[-1])
    return x, -_log_slope(z, softplus_p).sum(-1)


class Sylvester(HyperParametrised):
    r"""Sylvester flow :math:`y = x + Q R \tanh(\tilde R Q^\top x + b)`, invertible by
    construction, with a numerical inverse that scores any point.

    :math:`Q \in \mathbb{R}^{D\times M}` has orthonormal columns (:math:`M \le D`),
    :math:`R, \tilde R \in \mathbb{R}^{M\times M}` are upper triangular and
    :math:`b \in \mathbb{R}^M`. By Sylvester's determinant identity, with
    :math:`z = \tilde R Q^\top x + b`,

    .. math::

        \log\left|\det\frac{\partial y}{\partial x}\right|
        = \sum_{i=1}^M \log\big(1 + R_{ii}\tilde R_{ii}\,\mathrm{sech}^2 z_i\big)
        = \sum_{i=1}^M \log\big(\tanh^2 z_i + \mathrm{sech}^2(z_i)\,\mathrm{softplus}(p_i)\big),

    where the diagonals are parametrised (:func:`sylvester_triangular`) as
    :math:`\tilde R_{ii} = e^{q_i}`, :math:`R_{ii} = (\mathrm{softplus}(p_i) - 1)e^{-q_i}`, so
    :math:`R_{ii}\tilde R_{ii} = \mathrm{softplus}(p_i) - 1 > -1` for *any* raw values (as
    Planar's :math:`m(a)`; unlike the :math:`\tanh` diagonals of the paper and of Pyro, the
    product is not bounded above). Fixing :math:`\tilde R_{ii} > 0` loses nothing: flipping the
    signs of row :math:`i` of :math:`\tilde R`, of :math:`b_i` and of column :math:`i` of
    :math:`R` gives the same map, :math:`\tanh` being odd.

    ``kind`` chooses :math:`Q`: ``"householder"`` (default), :math:`Q = H_1\cdots H_K E` with
    :math:`K = \min(M, D - 1)` learnt Householder reflections (:func:`householder_frame`; enough to
    reach every orthonormal frame up to column signs, which the triangular factors absorb);
    ``"orthogonal"``, the Gram-Schmidt (QR) orthonormalisation of a learnt :math:`D\times M`
    matrix (:func:`orthogonal_frame`; the paper orthogonalises iteratively instead); or
    ``"triangular"``, :math:`Q = E`, the first :math:`M` coordinates (the paper's T-SNF; in a
    stack, the permutations between layers play the role of its alternating reversals).

    **Inverse.** Coordinates orthogonal to the columns of :math:`Q` pass unchanged, so with
    :math:`v = Q^\top x` and :math:`c = Q^\top y` it suffices to solve :math:`v + R\tanh(\tilde R v
    + b) = c`. This system is upper triangular: equation :math:`i` involves only :math:`v_k`,
    :math:`k \ge i`. Back substitution for :math:`i = M, \dots, 1` solves the scalar equation

    .. math::

        f_i(v_i) = v_i + R_{ii}\tanh(\tilde R_{ii} v_i + s_i) - e_i = 0,\qquad
        s_i = b_i + \sum_{j>i}\tilde R_{ij} v_j,\quad e_i = c_i - \sum_{k>i} R_{ik}\tanh z_k,

    with :math:`f_i' = 1 + R_{ii}\tilde R_{ii}\,\mathrm{sech}^2 > 0` and the root within
    :math:`[e_i - |R_{ii}|, e_i + |R_{ii}|]`. Each is solved elementwise over the batch by
    safeguarded Newton/bisection (:func:`~pyro_flows.transforms._root_finding.solve_increasing`),
    under :func:`torch.no_grad`, until :math:`|f_i(v_i)| \le 8\varepsilon(1 + |e_i| + |R_{ii}|)`
    (:math:`\varepsilon` the dtype's machine epsilon: about :math:`1.8\times10^{-15}` in float64,
    :math:`9.5\times10^{-7}` in float32) or the bracket has shrunk to rounding level; at most 100
    iterations each. Then :math:`x = y - QR\tanh z`. Residuals carry through the substitution
    scaled by the off-diagonal entries, so round trips are exact to a few thousand
    :math:`\varepsilon` for moderate parameters and degrade only where a slope
    :math:`f_i'` is nearly zero. Any point can be scored, not only the flow's own samples (Pyro's
    ``Sylvester`` raises there).

    **Gradients of the inverse.** Each solved :math:`v_i` is re-attached with the
    implicit-function gradient (:func:`~pyro_flows.transforms._root_finding.implicit_root`),
    which chains through the earlier coordinates, so the inverse and ``log_prob`` are
    differentiable with respect to ``y``, the parameters and the context, exactly (no
    backpropagation through iterations).

    **Cost.** forward (sampling): closed form, :math:`O(DM + M^2)` per sample after forming
    :math:`Q` (:math:`O(KDM)`, once per call, or per context row for conditional layers); the
    log-determinant is exact and free. Inverse (density): :math:`M` sequential scalar solves,
    typically 3-8 Newton iterations each, vectorised over the batch, plus :math:`O(DM + M^2)`.
    Conditional layers add one MLP pass on the context in either direction.

    **Initialisation.** Off-diagonal entries and :math:`b` are :math:`\mathcal{U}(-0.01,
    0.01)`, :math:`p_i = \log(e - 1) + \mathcal{U}(-0.01, 0.01)` and :math:`q_i \sim
    \mathcal{U}(-0.01, 0.01)`, so :math:`R \approx 0`: the layer starts near the identity while
    every parameter gets a gradient; :math:`Q` starts random.

    :param input_dim: event size :math:`D`.
    :param context_dim: context size; if given, every parameter (the triangular factors,
        :math:`b` and :math:`Q`'s raw parameters) is predicted per sample by an
        :class:`~pyro_flows.nn.MLP` on the context (its output bias initialised as above), as in
        the paper's amortised flows.
    :param hidden_dims: hidden sizes of that MLP (conditional layers only).
    :param num_vectors: :math:`M`, ``1 <= M <= D`` (default :math:`D`).
    :param kind: ``"householder"``, ``"orthogonal"`` or ``"triangular"``.

    Example::

        >>> flow = Sylvester(3, num_vectors=2)
        >>> y_data = torch.randn(5, 3)  # any points, not only the flow's samples
        >>> x, inv_log_det = flow.inverse_and_log_det(y_data)
        >>> y_back, log_det = flow.forward_and_log_det(x)
        >>> bool(torch.allclose(y_back, y_data, atol=1e-5)), log_det.shape
        (True, torch.Size([5]))
        >>> cond = Sylvester(3, context_dim=2, hidden_dims=(8,), kind="triangular")
        >>> cond.forward_and_log_det(torch.randn(4, 7, 3), torch.randn(7, 2))[0].shape
        torch.Size([4, 7, 3])

    References:

    * R. van den Berg, L. Hasenclever, J. M. Tomczak, M. Welling, "Sylvester Normalizing Flows
      for Variational Inference", UAI 2018, arXiv:1803.05649.
    * D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
      arXiv:1505.05770 (the planar flow, the case :math:`M = 1`).
    """

    forward_map = staticmethod(sylvester_forward)
    inverse_map = staticmethod(sylvester_inverse)

    def __init__(
        self,
        input_dim: int,
        context_dim: int | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        num_vectors: int | None = None,
        kind: str = "householder",
    ) -> None:
        super().__init__(input_dim, context_dim)
        d = self.input_dim
        self.hidden_dims = check_hidden_dims(hidden_dims)
        m = d if num_vectors is None else check_positive_int(num_vectors, "num_vectors")
        if m > d:
            raise ValueError(f"num_vectors must be <= input_dim={d}, got {m}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.num_vectors, self.kind = m, kind
        tri, b, frame = self._initial_values(d, m, kind)
        self._sizes = (tri.numel(), m, frame.numel())
        self._frame_shape = tuple(frame.shape)
        if self.context_dim is None:
            self.triangular = nn.Parameter(tri)
            self.bias = nn.Parameter(b)
            self.register_parameter("frame", nn.Parameter(frame) if frame.numel() else None)
            self.net: MLP | None = None
        else:
            self.net = self._hypernet(torch.cat([tri.flatten(), b, frame.flatten()]))

    @torch.no_grad()
    def reset_to_identity_(self) -> None:
        r"""Make an unconditional layer the identity map: :math:`R = 0` (off-diagonal entries 0,
        raw diagonal :math:`\log(e - 1)`, so :math:`R_{ii} = 0`); :math:`R` still gets gradients.
        Used by :func:`~pyro_flows.transforms.identity_init.identity_init_`."""
        if self.net is not None:
            return
        m = self.num_vectors
        rows, cols = torch.triu_indices(m, m, device=self.triangular.device)
        self.triangular[0] = torch.where(rows == cols, _LOG_E_MINUS_1, 0.0).to(self.triangular)

    @staticmethod
    def _initial_values(d: int, m: int, kind: str) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(2, M(M+1)/2)`` triangular entries, ``b`` and ``Q``'s raw parameters."""
        tri = torch.empty(2, m * (m + 1) // 2).uniform_(-0.01, 0.01)
        rows, cols = torch.triu_indices(m, m)
        tri[0, rows == cols] += _LOG_E_MINUS_1
        b = torch.empty(m).uniform_(-0.01, 0.01)
        if kind == "householder":
            frame = torch.randn(min(m, d - 1), d)
        elif kind == "orthogonal" and d > 1:
            frame = torch.randn(d, m)
        else:
            frame = torch.empty(0)
        return tri, b, frame

    def _params(
        self, context: Tensor | None
    ) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """``(Q, R, R_tilde, b, softplus(p))``, per sample for conditional layers."""
        if self.net is None:
            tri, b, frame = self.triangular, self.bias, self.frame
        else:
            out = self.net(None, context)
            n_tri, m, n_frame = self._sizes
            tri = out[..., :n_tri].unflatten(-1, (2, n_tri // 2))
            b = out[..., n_tri : n_tri + m]
            frame = out[..., n_tri + m :].unflatten(-1, self._frame_shape) if n_frame else None
        r, t, softplus_p = sylvester_triangular(tri[..., 0, :], tri[..., 1, :])
        return self._frame_matrix(frame), r, t, b, softplus_p

    def _frame_matrix(self, frame: Tensor | None) -> Tensor | None:
        """:math:`Q` (``(..., D, M)``) from its raw parameters; ``None`` (the first ``M``
        coordinates) for ``"triangular"`` and for ``D = 1``."""
        if frame is None:
            return None
        if self.kind == "householder":
            return householder_frame(frame, self.num_vectors)
        return orthogonal_frame(frame)

    def factors(self, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(Q, R, R_tilde, b)`` as the maps use them (``Q`` as an explicit ``(D, M)`` matrix
        also for ``"triangular"``); shapes gain the context's batch dims for conditional layers."""
        context = check_context(context, self.context_dim, type(self).__name__)
        q, r, t, b, _ = self._params(context)
        if q is None:
            eye = torch.eye(self.input_dim, self.num_vectors, dtype=r.dtype, device=r.device)
            q = eye.expand(*r.shape[:-2], *eye.shape)
        return q, r, t, b

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_vectors={self.num_vectors}, kind={self.kind!r}"
