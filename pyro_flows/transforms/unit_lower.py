r"""A learnable unit lower-triangular linear map: correlations with a zero log-determinant.

:class:`UnitLowerTriangular` is :math:`y = L x` with :math:`L` lower triangular and ones on the
diagonal. Followed by an elementwise location-scale stage it gives
:math:`\mu + \sigma \odot L\,\varepsilon`, the parametrisation of Pyro's
``AutoMultivariateNormal`` (every Gaussian is of that form: a Cholesky factor is
:math:`\mathrm{diag}(\sigma) L`). That makes it the stage that lets
:class:`~pyro_flows.infer.AutoFlow` (``full_rank=True``) contain every Gaussian.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FlowTransform
from .rescale import expand_log_det

__all__ = ["UnitLowerTriangular"]


class UnitLowerTriangular(FlowTransform):
    r"""Unit lower-triangular linear map :math:`y = L x`, :math:`L_{ii} = 1`, :math:`L_{ij} = 0`
    for :math:`j > i`.

    .. math::

        y_i = x_i + \sum_{j < i} L_{ij} x_j, \qquad
        \log\left|\det\frac{\partial y}{\partial x}\right| = 0,

    with inverse :math:`x = L^{-1} y` by one triangular solve. The :math:`D(D-1)/2` entries below
    the diagonal start at 0, so a fresh layer is the identity. Compared with a dense LU map
    (:class:`~pyro_flows.transforms.InvertibleLinear`), there is no permutation, no upper factor
    and no diagonal: put an elementwise scale after it for those. On the 103-latent stochastic
    volatility model an AutoFlow with an LU stage started at the identity diverged within 5
    seconds at learning rate 0.01; with this stage it trains, as ``AutoMultivariateNormal``'s
    unit-triangular factor does.

    Cost: forward one :math:`D \times D` product per sample; inverse one triangular solve.

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms import UnitLowerTriangular
    >>> t = UnitLowerTriangular(3)
    >>> with torch.no_grad():
    ...     _ = t.lower.copy_(torch.tensor([0.5, -1.0, 2.0]))  # rows 1, 2 below the diagonal
    >>> t.matrix
    tensor([[ 1.0000,  0.0000,  0.0000],
            [ 0.5000,  1.0000,  0.0000],
            [-1.0000,  2.0000,  1.0000]], grad_fn=<IndexPutBackward0>)
    >>> x = torch.randn(4, 3)
    >>> y, log_det = t.forward_and_log_det(x)
    >>> bool(torch.allclose(t.inv(y), x, atol=1e-5)), log_det.abs().max().item()
    (True, 0.0)

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference* (full-rank ADVI). JMLR 18, 2017. https://arxiv.org/abs/1603.00788
    """

    zero_log_det = True  # det L = 1

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        dim = self.input_dim
        self.register_buffer("lower_index", torch.tril_indices(dim, dim, -1), persistent=False)
        self.lower = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))
        #: when set, the map uses ``lower.detach()``: no gradient reaches :attr:`lower`, so an
        #: optimiser leaves it where it is (e.g. a whitening fixed from a Laplace approximation),
        #: while it still lives in ``state_dict`` and Pyro's param store
        self.frozen = False

    @property
    def matrix(self) -> Tensor:
        """The matrix :math:`L` (``(input_dim, input_dim)``), rebuilt from the parameters on
        every call (two operations: the identity, then :attr:`lower` written below its
        diagonal; nothing cached, so no edit of the parameters can be missed)."""
        dim = self.input_dim
        eye = torch.eye(dim, dtype=self.lower.dtype, device=self.lower.device)
        idx = self.lower_index
        lower = self.lower.detach() if self.frozen else self.lower
        return eye.index_put((idx[0], idx[1]), lower)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = L x``; log-det 0."""
        x, context = self._prepare(x, context, "x")
        return x @ self.matrix.mT, expand_log_det(x.new_zeros(()), x)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self._prepare(x, context, "x")[0] @ self.matrix.mT

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = L^{-1} y`` by one triangular solve; log-det 0."""
        y, context = self._prepare(y, context, "y")
        flat = y.reshape(-1, self.input_dim)
        # row-vector form: x^T L^T = y^T
        x = torch.linalg.solve_triangular(
            self.matrix.mT, flat, upper=True, left=False, unitriangular=True
        )
        return x.reshape(y.shape), expand_log_det(y.new_zeros(()), y)
