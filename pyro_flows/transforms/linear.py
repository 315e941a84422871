r"""Dense invertible linear maps :math:`y = Wx` (Glow's "invertible 1x1 convolution" on vectors).

Two parametrisations keep :math:`W` invertible with a log-determinant that costs :math:`O(D)`:

- ``"lu"`` (Kingma & Dhariwal, 2018): :math:`W = P L (U + \mathrm{diag}(s))`,
- ``"qr"`` (Hoogeboom et al., 2019): :math:`W = Q R` with :math:`Q` a product of Householder
  reflections (Tomczak & Welling, 2016).

The maths lives in the pure functions :func:`lu_weight` and :func:`householder_product`; the
module only holds the parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FlowTransform
from .permutation import permutation_sign
from .rescale import expand_log_det, log_softplus, softplus_inverse

__all__ = ["InvertibleLinear", "householder_product", "lu_weight"]

PARAMETRIZATIONS = ("lu", "qr")


def _fill_triangle(entries: Tensor | None, index: Tensor, dim: int, like: Tensor) -> Tensor:
    """A ``(dim, dim)`` matrix of zeros with ``entries`` written at ``index`` (2 x n)."""
    out = torch.zeros(dim, dim, dtype=like.dtype, device=like.device)
    if entries is None:
        return out
    return out.index_put((index[0], index[1]), entries)


def lu_weight(permutation: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    r"""``W = P L U`` with :math:`(P v)_i = v_{\pi_i}`, i.e. the rows of ``L U`` permuted.

    :param permutation: ``(D,)`` long tensor :math:`\pi`.
    :param lower: ``(D, D)`` unit lower-triangular :math:`L`.
    :param upper: ``(D, D)`` upper-triangular :math:`U` (diagonal included).
    """
    return (lower @ upper)[permutation]


def householder_product(vectors: Tensor) -> Tensor:
    r"""The orthogonal matrix :math:`Q = H_1 H_2 \cdots H_K`, :math:`H_k = I - 2 v_k v_k^\top /
    \lVert v_k\rVert^2`, from the rows :math:`v_k` of ``vectors`` (shape ``(K, D)``).

    Uses the compact "UT transform" (Joffrain et al., 2006) instead of :math:`K` sequential
    products: with :math:`V = [v_1, \dots, v_K]` and
    :math:`T = \tfrac12 \mathrm{diag}(V^\top V) + \mathrm{striu}(V^\top V)`,
    :math:`Q = I - V T^{-1} V^\top`, one triangular solve. Costs :math:`O(K D^2 + K^2 D)`;
    ``K = 0`` gives the identity.
    """
    dim = vectors.shape[-1]
    eye = torch.eye(dim, dtype=vectors.dtype, device=vectors.device)
    if vectors.shape[0] == 0:
        return eye
    gram = vectors @ vectors.mT
    half_norms = 0.5 * gram.diagonal().clamp_min(torch.finfo(vectors.dtype).tiny)
    t = gram.triu(1) + torch.diag(half_norms)
    return eye - vectors.mT @ torch.linalg.solve_triangular(t, vectors, upper=True)


class InvertibleLinear(FlowTransform):
    r"""Dense invertible linear layer :math:`y = W x\,(+\,b)` with a cheap log-determinant.

    **"lu"** (Glow; Kingma & Dhariwal, 2018):

    .. math::

        W = P\,L\,(U + \mathrm{diag}(s)), \qquad s = \mathrm{diag\_sign} \odot \mathrm{softplus}(r),
        \qquad \log\left|\det W\right| = \sum_{d} \log \mathrm{softplus}(r_d),

    with :math:`P` a fixed permutation (buffer), :math:`L` unit lower-triangular, :math:`U`
    strictly upper-triangular and ``diag_sign`` a fixed :math:`\pm 1` buffer. As in Glow,
    :math:`W` is initialised at a random orthogonal matrix (QR of a Gaussian matrix drawn from
    torch's RNG) and its LU decomposition gives :math:`P`, :math:`L`, :math:`U`, ``diag_sign`` and
    :math:`r`. The inverse is :math:`x = (U + \mathrm{diag}(s))^{-1} L^{-1} P^\top (y - b)`:
    two triangular solves.

    **"qr"** (Hoogeboom et al., 2019):

    .. math::

        W = Q R, \qquad Q = \prod_{k=1}^{D} \Big(I - 2\frac{v_k v_k^\top}{\lVert v_k\rVert^2}\Big),
        \qquad R_{dd} = \mathrm{softplus}(r_d) > 0, \qquad
        \log\left|\det W\right| = \sum_{d} \log R_{dd},

    with the reflection vectors :math:`v_k` (rows of ``reflections``) and the strictly upper part of
    :math:`R` free. The inverse is :math:`x = R^{-1} Q^\top (y - b)`: one matrix product and one
    triangular solve. Initialised with random reflections (a random orthogonal :math:`Q`) and
    :math:`R = I`. For ``input_dim == 1`` the only reflection is the constant :math:`-1`, so no
    reflection is used (:math:`Q = 1`) and the layer is a positive scaling.

    Either way the log-determinant is a sum of logs of positive numbers (never the log of a
    product), does not depend on :math:`x`, and is returned expanded to ``x.shape[:-1]``; the
    inverse's log-determinant is its negative. Nothing is cached: :math:`W` is rebuilt from the
    parameters on each call.

    Cost per call: building :math:`W` is :math:`O(D^3)` once (independent of the batch size); the
    forward pass is then one matmul, :math:`O(D^2)` per sample; the inverse is two triangular
    solves ("lu") or a matmul and a triangular solve ("qr"), also :math:`O(D^2)` per sample. No
    explicit matrix inverse is ever formed.

    :param input_dim: event size :math:`D`.
    :param parametrization: ``"lu"`` (default) or ``"qr"``.
    :param bias: add a learnable bias :math:`b` (default ``False``).

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.linear import InvertibleLinear
    >>> _ = torch.manual_seed(0)
    >>> t = InvertibleLinear(4, parametrization="lu")
    >>> x = torch.randn(10, 4)
    >>> y, log_det = t.forward_and_log_det(x)
    >>> x_back, inv_log_det = t.inverse_and_log_det(y)
    >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(log_det, torch.slogdet(t.weight)[1])
    (True, True)
    >>> torch.allclose(inv_log_det, -log_det)
    True

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    - E. Hoogeboom, R. van den Berg, M. Welling. *Emerging Convolutions for Generative
      Normalizing Flows.* ICML, 2019. https://arxiv.org/abs/1901.11137
    - J. M. Tomczak, M. Welling. *Improving Variational Auto-Encoders using Householder Flow.*
      2016. https://arxiv.org/abs/1611.09630
    - T. Joffrain, T. M. Low, E. S. Quintana-Ortí, R. van de Geijn, F. G. Van Zee. *Accumulating
      Householder transformations, revisited.* ACM TOMS 32(2), 2006.
    """

    permutation: Tensor
    inverse_permutation: Tensor
    diag_sign: Tensor
    lower_index: Tensor
    upper_index: Tensor

    def __init__(
        self,
        input_dim: int,
        parametrization: Literal["lu", "qr"] = "lu",
        bias: bool = False,
    ) -> None:
        super().__init__(input_dim)
        if not isinstance(parametrization, str) or parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
            )
        self.parametrization = parametrization
        dim = self.input_dim
        num_off = dim * (dim - 1) // 2
        self.register_buffer("lower_index", torch.tril_indices(dim, dim, -1), persistent=False)
        self.register_buffer("upper_index", torch.triu_indices(dim, dim, 1), persistent=False)

        if parametrization == "lu":
            w0 = torch.linalg.qr(torch.randn(dim, dim))[0]
            p, lower, upper = torch.linalg.lu(w0)
            diag = torch.diagonal(upper)
            perm = p.argmax(dim=1)  # (P v)_i = v[perm[i]]
            self.register_buffer("permutation", perm)
            self.register_buffer("inverse_permutation", torch.argsort(perm))
            self.register_buffer("diag_sign", torch.where(diag < 0, -1.0, 1.0))
            self.raw_diag = nn.Parameter(softplus_inverse(diag.abs()))
            idx = self.lower_index
            self.lower = nn.Parameter(lower[idx[0], idx[1]].clone()) if num_off else None
            idx = self.upper_index
            self.upper = nn.Parameter(upper[idx[0], idx[1]].clone()) if num_off else None
        else:
            # input_dim == 1: the only reflection is the constant -1; use none (Q = 1).
            self.reflections = nn.Parameter(torch.randn(dim, dim)) if dim > 1 else None
            self.raw_diag = nn.Parameter(softplus_inverse(torch.ones(dim)))
            self.upper = nn.Parameter(torch.zeros(num_off)) if num_off else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    @torch.no_grad()
    def identity_(self) -> InvertibleLinear:
        """Set :math:`W = I` (and the bias to 0) in place and return ``self``: :math:`P = L = I`,
        :math:`U = 0`, :math:`s = 1`. ``"lu"`` only (a product of Householder reflections has
        no identity point to start from). A flow whose coordinates mean something (a guide over
        a model's latents) keeps that alignment at the start, where the default random rotation
        would mix every coordinate into every other."""
        if self.parametrization != "lu":
            raise ValueError(
                f"identity_() needs parametrization='lu', not {self.parametrization!r}"
            )
        arange = torch.arange(self.input_dim, device=self.permutation.device)
        self.permutation.copy_(arange)
        self.inverse_permutation.copy_(arange)
        self.diag_sign.fill_(1.0)
        self.raw_diag.copy_(softplus_inverse(torch.ones_like(self.raw_diag)))
        for param in (self.lower, self.upper, self.bias):
            if param is not None:
                param.zero_()
        return self

    @property
    def sign(self) -> int:
        r"""The sign of :math:`\det W`: :math:`\det P \prod_i \mathrm{diag\_sign}_i` for
        ``"lu"`` (:math:`L` has a unit diagonal, :math:`|s| > 0`); :math:`(-1)^D` for ``"qr"``
        (:math:`D` Householder reflections of determinant :math:`-1` each, :math:`R` with a
        positive diagonal; :math:`Q = 1` when :math:`D = 1`)."""
        if self.parametrization == "lu":
            return permutation_sign(self.permutation) * int(self.diag_sign.prod().item())
        return -1 if self.input_dim > 1 and self.input_dim % 2 else 1

    # -- the factors --------------------------------------------------------------------------
    def _upper_triangular(self) -> Tensor:
        """``U + diag(s)`` ("lu") or ``R`` ("qr"): upper triangular, diagonal included."""
        diag = F.softplus(self.raw_diag)
        if self.parametrization == "lu":
            diag = self.diag_sign * diag
        return _fill_triangle(self.upper, self.upper_index, self.input_dim, diag) + torch.diag(diag)

    def _unit_lower(self) -> Tensor:
        eye = torch.eye(self.input_dim, dtype=self.raw_diag.dtype, device=self.raw_diag.device)
        return _fill_triangle(self.lower, self.lower_index, self.input_dim, eye) + eye

    def lu_factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(P, L, U + diag(s))`` with ``W = P @ L @ (U + diag(s))`` (``"lu"`` only)."""
        if self.parametrization != "lu":
            raise ValueError(
                f"lu_factors() needs parametrization='lu', not {self.parametrization!r}"
            )
        eye = torch.eye(self.input_dim, dtype=self.raw_diag.dtype, device=self.raw_diag.device)
        return eye[self.permutation], self._unit_lower(), self._upper_triangular()

    def qr_factors(self) -> tuple[Tensor, Tensor]:
        """``(Q, R)``: ``W = Q @ R``, ``Q`` orthogonal, ``R`` upper triangular (``"qr"`` only)."""
        if self.parametrization != "qr":
            raise ValueError(
                f"qr_factors() needs parametrization='qr', not {self.parametrization!r}"
            )
        return self._orthogonal(), self._upper_triangular()

    def _orthogonal(self) -> Tensor:
        if self.reflections is None:
            return torch.ones(1, 1, dtype=self.raw_diag.dtype, device=self.raw_diag.device)
        return householder_product(self.reflections)

    @property
    def weight(self) -> Tensor:
        """The matrix :math:`W` (``(input_dim, input_dim)``), rebuilt from the parameters."""
        if self.parametrization == "lu":
            return lu_weight(self.permutation, self._unit_lower(), self._upper_triangular())
        q, r = self.qr_factors()
        return q @ r

    def log_abs_det_weight(self) -> Tensor:
        r""":math:`\log|\det W| = \sum_d \log \mathrm{softplus}(r_d)` (a scalar)."""
        return log_softplus(self.raw_diag).sum()

    # -- the two directions -------------------------------------------------------------------
    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = W x (+ b)``, one matmul; log-det ``log|det W|`` per sample."""
        x, context = self._prepare(x, context, "x")
        y = F.linear(x, self.weight, self.bias)
        return y, expand_log_det(self.log_abs_det_weight(), x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = W^{-1}(y - b)`` by triangular solves; log-det ``-log|det W|``."""
        y, context = self._prepare(y, context, "y")
        batch_shape = y.shape[:-1]
        z = y if self.bias is None else y - self.bias
        z = z.reshape(-1, self.input_dim)
        upper = self._upper_triangular()
        # Row-vector form: x^T W^T = z^T, solved as X A = B with left=False.
        if self.parametrization == "lu":
            z = z[:, self.inverse_permutation]  # P^T z
            z = torch.linalg.solve_triangular(
                self._unit_lower().mT, z, upper=True, left=False, unitriangular=True
            )  # L^{-1}
        else:
            z = z @ self._orthogonal()  # Q^T z
        x = torch.linalg.solve_triangular(upper.mT, z, upper=False, left=False)  # R^{-1}
        x = x.reshape(*batch_shape, self.input_dim)
        return x, expand_log_det(-self.log_abs_det_weight(), y)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, parametrization={self.parametrization!r}, "
            f"bias={self.bias is not None}"
        )
