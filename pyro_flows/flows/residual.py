r"""Invertible residual flow builders: i-ResNet (Behrmann et al., 2019) and Residual Flows (Chen
et al., 2019), stacks of :class:`~pyro_flows.transforms.residual.InvertibleResidual` blocks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .._validation import check_positive_int
from ..flow import Flow
from ..transforms.residual import EXACT_MAX_DIM, InvertibleResidual
from ._stack import stack

__all__ = ["iresnet", "residual_flow"]


def _seeds(seed: int | None, num_transforms: int) -> Iterator[int | None]:
    """Per-block seeds ``seed, seed + 1, ...`` (distinct probes in each block), or ``None``s."""
    if seed is None:
        return iter([None] * num_transforms)
    check_positive_int(seed, "seed", minimum=0)
    return iter(range(seed, seed + num_transforms))


def _default_logdet(input_dim: int, logdet: str | None, estimator: str) -> str | None:
    check_positive_int(input_dim, "input_dim")
    if logdet is not None:
        return logdet
    return "exact" if input_dim <= EXACT_MAX_DIM else estimator


def iresnet(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = None,
    normalization: str | None = None,
    base: Any = None,
    activation: str = "elu",
    logdet: str | None = None,
    coeff: float = 0.97,
    n_terms: int = 10,
    n_probes: int = 1,
    seed: int | None = None,
    **options: Any,
) -> Flow:
    r"""i-ResNet: ``num_transforms`` blocks :math:`x = y + g(y)` (data :math:`y` -> base
    :math:`x`), :math:`g` a spectrally normalised MLP with :math:`\mathrm{Lip}(g) \le c^L < 1`.

    Each block's log-determinant :math:`\log\det(I + J_g)` is exact (closed-form Jacobian and
    ``slogdet``) for ``input_dim <= 16``, else (``logdet=None``) the i-ResNet estimator: the power
    series :math:`\sum_{k=1}^{n}(-1)^{k+1}\operatorname{tr}(J_g^k)/k` truncated at ``n_terms``,
    traces by ``n_probes`` Hutchinson vectors (biased by the truncation); ``seed`` fixes the
    probes (block :math:`k` uses ``seed + k``) for reproducible estimates. ``activation`` is ELU
    (Behrmann et al.) or ``"lipswish"``; ``coeff`` is :math:`c`. Residual blocks mix every
    coordinate, so no permutation is needed (``permutation=None``); ``normalization``
    (``"actnorm"``, ``"batchnorm"``) puts a layer before each block. Other keywords (``options``)
    go to :class:`~pyro_flows.transforms.residual.InvertibleResidual`, e.g. ``spectral_norm``,
    ``inverse_tol``, ``max_iter``.

    Cost per block: density (``log_prob``) one MLP pass plus the log-det (exact: :math:`O(DH^2 +
    D^3)` per sample; series: ``n_terms`` vector-Jacobian products); sampling a fixed-point solve,
    typically 10-100 MLP passes (at most ``max_iter``, default 1000), to the relative tolerance
    :math:`16\varepsilon` documented on the block. ``sample`` is exact (to that tolerance) in
    every mode; ``log_prob`` is exact only with ``logdet="exact"``.

    Example::

        >>> flow = iresnet(2, num_transforms=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
        >>> flow.sample((4,)).shape
        torch.Size([4, 2])

    References:

    * J. Behrmann, W. Grathwohl, R. T. Q. Chen, D. Duvenaud, J.-H. Jacobsen, "Invertible
      Residual Networks", ICML 2019, arXiv:1811.00995.
    """
    return _residual_stack(
        input_dim,
        num_transforms,
        hidden_dims,
        context_dim,
        permutation,
        normalization,
        base,
        seed,
        activation=activation,
        logdet=_default_logdet(input_dim, logdet, "series"),
        coeff=coeff,
        n_terms=n_terms,
        n_probes=n_probes,
        **options,
    )


def residual_flow(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    permutation: str | None = None,
    normalization: str | None = None,
    base: Any = None,
    activation: str = "lipswish",
    logdet: str | None = None,
    coeff: float = 0.97,
    geom_p: float = 0.5,
    n_exact_terms: int = 2,
    n_probes: int = 1,
    neumann_gradient: bool = True,
    seed: int | None = None,
    **options: Any,
) -> Flow:
    r"""Residual Flow: ``num_transforms`` blocks :math:`x = y + g(y)` with LipSwish activations
    and an unbiased log-determinant.

    Each block's :math:`\log\det(I + J_g)` is exact for ``input_dim <= 16``, else
    (``logdet=None``) the Russian-roulette estimator: ``n_exact_terms`` power-series terms plus a
    Geometric(``geom_p``) number more, reweighted so the estimate is unbiased, with the
    Neumann-series gradient (``neumann_gradient``) whose memory does not grow with the number of
    terms. The estimate's variance is finite when :math:`\mathrm{Lip}(g)^2 < 1 - p`; lower
    ``coeff`` or ``geom_p`` if training is noisy. ``seed`` fixes the probes and the number of
    terms (block :math:`k` uses ``seed + k``; for evaluation, not training). Otherwise as
    :func:`iresnet` (``options`` go to
    :class:`~pyro_flows.transforms.residual.InvertibleResidual`).

    Cost per block: density one MLP pass plus the log-det (exact, or on average
    :math:`m + (1-p)/p` vector-Jacobian products: 3 by default); sampling a fixed-point solve
    (typically 10-100 passes). ``sample`` is exact (to the solver tolerance); ``log_prob`` is
    exact with ``logdet="exact"``, an unbiased estimate of the log density with ``"roulette"``.

    Example::

        >>> flow = residual_flow(2, num_transforms=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
        >>> big = residual_flow(20, num_transforms=2, hidden_dims=(16,), seed=0)
        >>> big.transforms[0].logdet, big.log_prob(torch.randn(3, 20)).shape
        ('roulette', torch.Size([3]))

    References:

    * R. T. Q. Chen, J. Behrmann, D. Duvenaud, J.-H. Jacobsen, "Residual Flows for Invertible
      Generative Modeling", NeurIPS 2019, arXiv:1906.02735.
    """
    return _residual_stack(
        input_dim,
        num_transforms,
        hidden_dims,
        context_dim,
        permutation,
        normalization,
        base,
        seed,
        activation=activation,
        logdet=_default_logdet(input_dim, logdet, "roulette"),
        coeff=coeff,
        geom_p=geom_p,
        n_exact_terms=n_exact_terms,
        n_probes=n_probes,
        neumann_gradient=neumann_gradient,
        **options,
    )


def _residual_stack(
    input_dim: int,
    num_transforms: int,
    hidden_dims: Sequence[int],
    context_dim: int | None,
    permutation: str | None,
    normalization: str | None,
    base: Any,
    seed: int | None,
    **layer_options: Any,
) -> Flow:
    """``num_transforms`` :class:`InvertibleResidual` blocks; block ``k`` gets seed
    ``seed + k``."""
    seeds = _seeds(seed, check_positive_int(num_transforms, "num_transforms"))
    return stack(
        input_dim,
        num_transforms,
        lambda: InvertibleResidual(
            input_dim, hidden_dims, context_dim, seed=next(seeds), **layer_options
        ),
        permutation,
        normalization=normalization,
        base=base,
        context_dim=context_dim,
    )
